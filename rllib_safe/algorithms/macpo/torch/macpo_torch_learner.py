"""MACPO's learner: the sequential base with its one step hook replaced by a CPO step per agent.

The base (:class:`~rllib_safe.algorithms.sequential.torch.sequential_torch_learner.SequentialTorchLearner`) trains the
critics, then, for each agent of the permutation, writes the HAPPO factor M into the agent's batch, calls
:meth:`update_agent` (here: one full-batch CPO step with the agent's last known exact mean episode cost J_c; MACPO has
no dual variables) and folds the agent's probability ratio into M.

With several Learners (DDP) every rank holds a shard of the batch. All means are written as this rank's sum divided by
the *global* number of valid rows, and every gradient, Fisher-vector product and line-search statistic is summed over
ranks with ``torch.distributed.all_reduce``, so every rank computes the same g, b, H⁻¹g, H⁻¹b, case and accepted
step, and the agents' parameters stay identical. Everything runs on the unwrapped module (no DDP hooks are armed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rllib_safe.algorithms.macpo.torch.cpo import (
    CASE_SKIPPED,
    accept_step,
    backtracking_line_search,
    conjugate_gradient,
    cpo_step_direction,
    fisher_vector_product,
    flat_grad,
)
from rllib_safe.algorithms.sequential.torch.sequential_torch_learner import SequentialTorchLearner
from rllib_safe.core.columns import CRITIC_ID, SafeColumns


class MACPOTorchLearner(SequentialTorchLearner):
    """One CPO step per agent (conjugate gradient, CPO cases 0–4, recovery, backtracking line search).

    Logged per agent (``(agent, key)``, window 1): ``cpo_case`` (code, see below), ``line_search_accepted`` (1/0),
    ``line_search_backtracks`` (rejected trials before the accepted one; ``line_search_steps`` when none),
    ``step_size`` (accepted multiple of the CPO direction; 0 when rejected), ``kl_after_step`` (mean
    ``KL(π_k ‖ π_{k+1})`` of the parameters kept; 0 when rejected), ``surrogate_improvement`` and
    ``cost_surrogate_change`` (after minus before, of the kept parameters), ``constraint_value`` (c),
    ``cpo_lambda``, ``cpo_nu``, ``direction_norm`` (of the CPO direction before ``max_step_norm``).

    Case codes (MACPO/CPO ``optim_case``): −1 no episode cost known yet, policy left unchanged; 0 infeasible and no
    safe point in the trust region: pure cost-reducing recovery step; 1 infeasible, safe boundary cuts the trust
    region: CPO step; 2 feasible, boundary cuts the trust region: CPO step; 3 feasible, whole trust region safe:
    TRPO step; 4 feasible, no cost gradient: TRPO step.
    """

    # ------------------------------------------------------------------------------------------------------------
    def _distributed(self) -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over Learners (identity with one Learner)."""
        if not self._distributed():
            return t
        t = t.detach().clone()
        torch.distributed.all_reduce(t)
        return t

    def constraint_value(self, module_id: str, episode_cost: Any) -> float:
        """``c = (J_c − d) · scale`` (MACPO ``rescale_constraint_val``; scale ``1 − γ`` unless configured)."""
        j_c = float(np.asarray(episode_cost, dtype=np.float64).reshape(-1)[0])
        return (j_c - float(self.cost_limits[module_id][0])) * self.config.effective_constraint_scale()

    def update_agent(
        self, module_id: str, batch: dict, *, num_steps: int, num_epochs: int, minibatch_size: int, generator
    ) -> None:
        """One full-batch CPO step of agent ``module_id`` (the schedule is used only by the critics, see below).

        With ``critic_update="with_each_agent"`` the reward critic and this agent's cost critic first train for the
        schedule's epochs and minibatches (the MACPO code trains the critics inside each agent's update).

        Steps (equations in :mod:`rllib_safe.algorithms.macpo.torch.cpo`):

        1. ``R(θ) = E[M · r_θ · Â]``, ``C(θ) = E[M_c · r_θ · Â_c]`` over the valid rows, ``r_θ = π_θ(a|o)/π_old(a|o)``
           and ``M_c = M`` (``cost_surrogate_factor``) or 1; ``g = ∇R``, ``b = ∇C`` (summed over Learners);
        2. ``H⁻¹g``, ``H⁻¹b`` by conjugate gradient with ``(H + damping·I)v``, H the Hessian of the mean
           ``KL(π_θk ‖ π_θ)``;
        3. ``c = (J_c − d) · scale``; the CPO case and direction x;
        4. x rescaled to ``max_step_norm``; line search over ``θ_k + fraction_coef · line_search_fraction^i · x``.
        """
        config = self.config
        critic_batch = self.critic_batch_with(module_id)
        if critic_batch is not None:  # critic_update="with_each_agent": the critics train in the agent's turn
            self.train_minibatches(
                CRITIC_ID,
                critic_batch,
                num_steps=num_steps,
                num_epochs=num_epochs,
                minibatch_size=minibatch_size,
                generator=generator,
            )
        module = self.module[module_id].unwrapped()
        params = [p for p in module.parameters() if p.requires_grad]
        episode_cost = self.known_episode_costs.get(module_id)  # the last known J_c, as the MACPO code
        if episode_cost is None:
            self._log_step(module_id, {"cpo_case": CASE_SKIPPED, "line_search_accepted": 0})
            return

        # Valid rows only (bootstrap rows dropped); weights 1/N_valid over all Learners turn sums into global means.
        valid = batch[Columns.LOSS_MASK].bool()
        rows = {k: v[valid] for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 0 and len(v) == len(valid)}
        count = self._all_reduce_sum(valid.sum().to(torch.float32)).clamp(min=1.0)
        weight = 1.0 / count
        obs, actions, logp_old = rows[Columns.OBS], rows[Columns.ACTIONS], rows[Columns.ACTION_LOGP]
        advantages = rows[Columns.ADVANTAGES]
        cost_advantages = rows[SafeColumns.COST_ADVANTAGES].reshape(len(advantages), -1)[:, 0]
        factor = rows[SafeColumns.HAPPO_FACTOR]
        cost_factor = factor if config.cost_surrogate_factor else torch.ones_like(factor)
        dist_cls = module.get_train_action_dist_cls()

        def forward() -> torch.Tensor:
            return module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]

        def surrogates(dist_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ratio = torch.exp(dist_cls.from_logits(dist_inputs).logp(actions) - logp_old)  # r_θ
            reward = weight * (factor * ratio * advantages).sum()  # this rank's share of E[M r Â]
            cost = weight * (cost_factor * ratio * cost_advantages).sum()  # this rank's share of E[M_c r Â_c]
            return reward, cost

        # 1. Surrogate gradients g, b at θ_k.
        dist_inputs = forward()
        reward, cost = surrogates(dist_inputs)
        g = self._all_reduce_sum(flat_grad(reward, params, retain_graph=True))
        b = self._all_reduce_sum(flat_grad(cost, params, retain_graph=True))
        reward0, cost0 = self._all_reduce_sum(torch.stack([reward.detach(), cost.detach()])).tolist()

        # 2. H⁻¹g and H⁻¹b with Fisher-vector products of the mean KL(π_θk ‖ π_θ) (π_θk detached).
        old_inputs = dist_inputs.detach()
        old_dist = dist_cls.from_logits(old_inputs)
        mean_kl = weight * old_dist.kl(dist_cls.from_logits(dist_inputs)).sum()
        reduce = self._all_reduce_sum if self._distributed() else None
        fvp = fisher_vector_product(mean_kl, params, config.cg_damping, reduce=reduce)
        hinv_g = conjugate_gradient(fvp, g, config.cg_iters)
        hinv_b = conjugate_gradient(fvp, b, config.cg_iters)
        del fvp, mean_kl, dist_inputs, reward, cost

        # 3. The CPO case and direction.
        c = self.constraint_value(module_id, episode_cost)
        step = cpo_step_direction(g, b, c, hinv_g, hinv_b, config.kl_threshold, config.cpo_eps)
        direction = step.direction.detach()
        direction_norm = float(direction.norm())
        if config.max_step_norm is not None and direction_norm > config.max_step_norm:
            direction = direction * (config.max_step_norm / direction_norm)

        # 4. Backtracking line search (parameters restored when no trial is accepted).
        def evaluate() -> tuple[bool, dict]:
            with torch.no_grad():
                new_inputs = forward()
                new_reward, new_cost = surrogates(new_inputs)
                kl = weight * old_dist.kl(dist_cls.from_logits(new_inputs)).sum()
                new_reward, new_cost, kl = self._all_reduce_sum(torch.stack([new_reward, new_cost, kl])).tolist()
            stats = {
                "kl_after_step": kl,
                "surrogate_improvement": new_reward - reward0,
                "cost_surrogate_change": new_cost - cost0,
            }
            ok = accept_step(
                step.case, kl, config.kl_threshold, stats["surrogate_improvement"], stats["cost_surrogate_change"], c
            )
            return ok, stats

        result = backtracking_line_search(
            params,
            direction,
            evaluate,
            first_step=config.fraction_coef,
            shrink=config.line_search_fraction,
            steps=config.line_search_steps,
        )
        kept = result.stats if result.accepted else dict.fromkeys(result.stats, 0.0)
        self._log_step(
            module_id,
            {
                "cpo_case": step.case,
                "line_search_accepted": int(result.accepted),
                "line_search_backtracks": result.backtracks,
                "step_size": result.step_size,
                **kept,
                "constraint_value": c,
                "cpo_lambda": step.lam,
                "cpo_nu": step.nu,
                "direction_norm": direction_norm,
            },
        )

    def _log_step(self, module_id: str, stats: dict) -> None:
        for key, value in stats.items():
            self.metrics.log_value((module_id, key), value, window=1)
