"""Torch learner of the on-policy family: critic update, then agents one after another with the HAPPO factor.

``update()`` (the one method RLlib's design leaves to us, see ``notes/rllib_new_stack.md`` §3.6):

1. run the learner connector once (costs, state, reward GAE, cost GAE, critic batch);
2. with ``critic_update="before_agents"``: train the centralized critic module (reward critic and all cost critics)
   for the configured epochs/minibatches;
3. for each agent in the permutation received from the Algorithm (identical on every Learner):
   update the agent's duals from its exact episode cost when this iteration measured one (:meth:`update_dual`;
   an iteration in which none of its episodes ended leaves the duals where they are), write the factor M of the agents
   already updated into its batch (rows are aligned by env step, written before any minibatching), run its epochs
   through :meth:`update_agent` (the narrow hook MACPO overrides), and fold its new/old probability ratio into M.

Per-minibatch losses go through :meth:`compute_loss_for_module` → :meth:`compute_policy_loss` (the hook MAFOCOPS
overrides) → :meth:`policy_advantage` (the hook MAPPO-Lagrangian overrides). With several Learners (DDP), every
rank runs the same modules in the same order with the same number of minibatches, and early-stopping decisions use
the KL averaged over ranks, so no collective is left waiting.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.learner.training_data import TrainingData

from rllib_safe.algorithms.sequential.sequential_learner import SequentialLearner
from rllib_safe.core.columns import CRITIC_ID, SafeColumns


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the rows where ``mask`` is True (the bootstrap rows are excluded)."""
    mask = mask.to(x.dtype).reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    return (x * mask).sum() / (mask.sum() * x[0].numel()).clamp(min=1.0)


def ppo_clip_surrogate(ratio: torch.Tensor, advantage: torch.Tensor, clip_param: float) -> torch.Tensor:
    """PPO's clipped surrogate ``min(r·Â, clip(r, 1 − ε, 1 + ε)·Â)`` per row."""
    return torch.min(ratio * advantage, ratio.clamp(1.0 - clip_param, 1.0 + clip_param) * advantage)


class SequentialTorchLearner(SequentialLearner, TorchLearner):
    """HAPPO's learner (PPO-clip objective with the factor); the base every on-policy algorithm extends."""

    # ------------------------------------------------------------------------------------------------------------
    # Optimisers: the critic module gets its own learning rate.
    # ------------------------------------------------------------------------------------------------------------
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        """One Adam per module; the critic module's learning rate is ``critic_lr``."""
        module = self._module[module_id]
        params = self.get_parameters(module)
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.Adam(params),
            params=params,
            lr_or_lr_schedule=config.critic_lr if module_id == CRITIC_ID else config.lr,
        )

    # ------------------------------------------------------------------------------------------------------------
    # The update.
    # ------------------------------------------------------------------------------------------------------------
    def update(
        self,
        *,
        training_data: TrainingData | None = None,
        episodes: list | None = None,
        timesteps: dict | None = None,
        agent_order: list[str] | None = None,
        episode_costs: dict[str, Any] | None = None,
        last_episode_costs: dict[str, Any] | None = None,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        num_total_minibatches: int = 0,
        _no_metrics_reduce: bool = False,
        **kwargs: Any,
    ) -> dict:
        """Critic update, then the sequential (or simultaneous) agent updates; see the module docstring.

        ``episode_costs`` holds the agents' exact mean episode costs J_c measured in this iteration (agents whose
        episodes did not end are absent): only these move the duals. ``last_episode_costs`` holds the last known
        J_c of every agent measured so far (default: ``episode_costs``); it is logged and available to the hooks as
        :attr:`known_episode_costs`.
        """
        self._check_is_built()
        self.before_gradient_based_update(timesteps=timesteps or {})
        if training_data is None:
            training_data = TrainingData(episodes=episodes)
        training_data.validate()
        training_data.solve_refs()
        self._weights_seq_no += 1
        batches = self._make_batch_if_necessary(training_data=training_data).policy_batches

        n = len(batches[CRITIC_ID][Columns.LOSS_MASK])
        minibatch_size = min(minibatch_size or n, n)
        num_steps = num_total_minibatches or num_epochs * math.ceil(n / minibatch_size)
        schedule = {"num_steps": num_steps, "num_epochs": num_epochs, "minibatch_size": minibatch_size}
        generator = torch.Generator().manual_seed(int(self.config.seed or 0) * 1_000_003 + self._weights_seq_no)

        self._critic_batch = batches[CRITIC_ID]
        if self.config.critic_update == "before_agents":
            self.train_minibatches(CRITIC_ID, self._critic_batch, generator=generator, **schedule)

        agent_order = list(agent_order or self.agent_ids)
        if sorted(agent_order) != sorted(self.agent_ids):
            raise ValueError(f"agent_order {agent_order} is not a permutation of the agents {self.agent_ids}.")
        self.last_agent_order = agent_order
        fresh = episode_costs or {}
        self._fresh_episode_costs = fresh
        self.remember_episode_costs(fresh, last_episode_costs)
        factor = torch.ones(n, device=self._device)
        self._minibatch_dual_steps: dict[str, int] = {}
        for module_id in agent_order:
            batch = batches[module_id]
            dual_updated = self.update_dual(module_id, fresh.get(module_id))
            batch[SafeColumns.HAPPO_FACTOR] = self._clip_factor(factor)
            self.update_agent(module_id, batch, generator=generator, **schedule)
            dual_updated = dual_updated or self._minibatch_dual_steps.get(module_id, 0) > 0
            if self.config.sequential:
                factor = factor * self.probability_ratio(module_id, batch)
            self._log_agent(module_id, batch, self.known_episode_costs.get(module_id), dual_updated)

        self.after_gradient_based_update(timesteps=timesteps or {})
        return None if _no_metrics_reduce else self.metrics.reduce()

    def _clip_factor(self, factor: torch.Tensor) -> torch.Tensor:
        if not self.config.sequential:
            return torch.ones_like(factor)
        c = self.config.happo_factor_clip
        return factor.clamp(1.0 - c, 1.0 + c) if c is not None else factor

    def update_agent(
        self, module_id: str, batch: dict, *, num_steps: int, num_epochs: int, minibatch_size: int, generator
    ) -> None:
        """One agent's policy update: its epochs of minibatch gradient steps (the hook MACPO overrides).

        With ``critic_update="with_each_agent"`` every minibatch step also steps the reward critic and this agent's
        cost critics on the same rows (:meth:`critic_batch_with`).
        """
        self.train_minibatches(
            module_id,
            batch,
            num_steps=num_steps,
            num_epochs=num_epochs,
            minibatch_size=minibatch_size,
            generator=generator,
            critic_batch=self.critic_batch_with(module_id),
        )

    def critic_batch_with(self, module_id: str) -> dict | None:
        """The critic rows trained during agent ``module_id``'s turn, or None (``critic_update="before_agents"``).

        With ``critic_update="with_each_agent"`` (MAFOCOPS Algorithm 1 line 12; the MACPO and FOCOPS code): the
        reward critic's and this agent's cost critics' targets, aligned row by row with the agent's batch.
        """
        if self.config.critic_update != "with_each_agent":
            return None
        own = f"{SafeColumns.COST_VALUE_TARGETS}/{module_id}"
        return {
            k: v
            for k, v in self._critic_batch.items()
            if not k.startswith(f"{SafeColumns.COST_VALUE_TARGETS}/") or k == own
        }

    def train_minibatches(
        self,
        module_id: str,
        batch: dict,
        *,
        num_steps: int,
        num_epochs: int,
        minibatch_size: int,
        generator: torch.Generator,
        critic_batch: dict | None = None,
    ) -> None:
        """``num_steps`` shuffled minibatch steps of one module; with ``target_kl``, agents stop early per epoch.

        ``critic_batch`` (rows aligned with ``batch``): the critic module takes a step on the same rows in every
        minibatch step (one forward/backward for both; the modules have separate optimisers).

        The KL rule: after each epoch, the mean KL(π_old‖π) over the agent's whole batch (averaged over Learners) is
        compared with ``target_kl``; once above, the agent's remaining epochs are skipped on every Learner.
        """
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        critic_tensors = {k: v for k, v in (critic_batch or {}).items() if torch.is_tensor(v)}
        n = len(tensors[Columns.LOSS_MASK])
        steps_per_epoch = max(1, math.ceil(num_steps / num_epochs))
        steps_per_pass = math.ceil(n / minibatch_size)
        epochs_done, perm = 0, None
        minibatch_dual = self._minibatch_dual(module_id)
        surrogate_dual = minibatch_dual and self.duals[module_id].per_minibatch  # "macpo": needs mean(r·Â_c)
        for step in range(num_steps):
            pass_position = step % steps_per_pass
            if pass_position == 0:
                perm = torch.randperm(n, generator=generator).to(self._device)
            index = perm[pass_position * minibatch_size : (pass_position + 1) * minibatch_size]
            minibatch = {k: v[index] for k, v in tensors.items()}
            cost_surrogate = self.cost_surrogate(module_id, minibatch) if surrogate_dual else None
            update = {module_id: minibatch}
            if critic_tensors:
                update[CRITIC_ID] = {k: v[index] for k, v in critic_tensors.items()}
            self._update(update)
            if minibatch_dual:  # after the actor's step, as the MACPO code
                self._step_minibatch_dual(module_id, cost_surrogate)
            if (step + 1) % steps_per_epoch == 0:
                epochs_done += 1
                if module_id != CRITIC_ID and self.config.target_kl is not None:
                    kl = self._mean_across_learners(float(self.mean_kl(module_id, tensors)))
                    if kl > self.config.target_kl:
                        break
        if module_id != CRITIC_ID:
            self.metrics.log_value((module_id, "epochs_trained"), epochs_done, window=1)

    # ------------------------------------------------------------------------------------------------------------
    # Quantities on a whole agent batch (no grad, unwrapped module: no DDP collective is armed).
    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _dists(self, module_id: str, batch: dict):
        module = self.module[module_id].unwrapped()
        dist_cls = module.get_train_action_dist_cls()
        new = dist_cls.from_logits(module.forward_train({Columns.OBS: batch[Columns.OBS]})[Columns.ACTION_DIST_INPUTS])
        old = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
        return old, new

    @torch.no_grad()
    def probability_ratio(self, module_id: str, batch: dict) -> torch.Tensor:
        """``π_new(a|o) / π_old(a|o)`` per row (1 on bootstrap rows): the agent's contribution to the factor M."""
        _, new = self._dists(module_id, batch)
        ratio = torch.exp(new.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        return torch.where(batch[Columns.LOSS_MASK].bool(), ratio, torch.ones_like(ratio))

    @torch.no_grad()
    def mean_kl(self, module_id: str, batch: dict) -> torch.Tensor:
        """Mean over valid rows of KL(π_old(·|o) ‖ π_new(·|o))."""
        old, new = self._dists(module_id, batch)
        return masked_mean(old.kl(new), batch[Columns.LOSS_MASK])

    def _mean_across_learners(self, value: float | np.ndarray) -> float | np.ndarray:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # On the learner's device: NCCL (GPU learners) refuses CPU tensors; gloo takes either.
            t = torch.as_tensor(np.atleast_1d(value), dtype=torch.float64, device=self._device).clone()
            torch.distributed.all_reduce(t)
            mean = t.cpu().numpy() / torch.distributed.get_world_size()
            return float(mean[0]) if np.ndim(value) == 0 else mean
        return value

    # ------------------------------------------------------------------------------------------------------------
    # Per-minibatch dual rules (the MACPO code's MAPPO-Lagrangian λ, rllib_safe.duals.MACPOLagrangeDual).
    # ------------------------------------------------------------------------------------------------------------
    def _minibatch_dual(self, module_id: str) -> bool:
        """Whether agent ``module_id``'s dual steps after each minibatch in this iteration.

        The "macpo" rule steps with the last known J_c; ``dual_schedule="per_minibatch"`` needs a fresh one (a
        dual moves only on a fresh measurement).
        """
        if module_id == CRITIC_ID or not self.steps_dual_per_minibatch(module_id):
            return False
        if self.duals[module_id].per_minibatch:
            return self.known_episode_costs.get(module_id) is not None
        return self._fresh_episode_costs.get(module_id) is not None

    def _step_minibatch_dual(self, module_id: str, cost_surrogate: np.ndarray | None) -> None:
        """One per-minibatch step of agent ``module_id``'s dual (after the actor's step) and its count."""
        dual, limit = self.duals[module_id], self.cost_limits[module_id]
        if dual.per_minibatch:  # "macpo": the last known J_c and this minibatch's mean(r·Â_c)
            dual.update(self.known_episode_costs[module_id], limit, cost_surrogate=cost_surrogate)
        else:  # dual_schedule="per_minibatch": the rule's own step with the iteration's fresh J_c
            dual.update(np.asarray(self._fresh_episode_costs[module_id], dtype=np.float64), limit)
        self._minibatch_dual_steps[module_id] = self._minibatch_dual_steps.get(module_id, 0) + 1

    @torch.no_grad()
    def cost_surrogate(self, module_id: str, minibatch: dict) -> np.ndarray:
        """``mean(r·Â_c)`` per cost index over the minibatch's valid rows (r of the policy before the step).

        The ratio is the agent's own (no HAPPO factor, no clipping), as in the MACPO code's λ update; the mean is
        averaged over Learners so that every rank takes the same step.
        """
        ratio = self.probability_ratio(module_id, minibatch)
        mask = minibatch[Columns.LOSS_MASK].bool()
        cost_advantages = minibatch[SafeColumns.COST_ADVANTAGES].reshape(len(ratio), -1)
        surrogate = (ratio[mask].unsqueeze(-1) * cost_advantages[mask]).mean(0)
        return self._mean_across_learners(surrogate.double().cpu().numpy())

    # ------------------------------------------------------------------------------------------------------------
    # Losses.
    # ------------------------------------------------------------------------------------------------------------
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        """Critic loss for the critic module, else the algorithm's policy loss hook."""
        if module_id == CRITIC_ID:
            return self.compute_critic_loss(config=config, batch=batch, fwd_out=fwd_out)
        return self.compute_policy_loss(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)

    def compute_critic_loss(self, *, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        """Reward critic + the cost critics whose targets are in the batch, Huber (δ = ``huber_delta``) or MSE.

        The targets are normalised (value normalisers); the critic batch holds every agent's cost targets, or only
        one agent's when the critics train during that agent's turn (``critic_update="with_each_agent"``).
        """
        mask = batch[Columns.LOSS_MASK]

        def value_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if config.critic_loss == "huber":
                err = F.huber_loss(pred, target, reduction="none", delta=config.huber_delta)
            else:
                err = 0.5 * (pred - target) ** 2
            return masked_mean(err, mask)

        vf_loss = value_loss(fwd_out[Columns.VF_PREDS], batch[Columns.VALUE_TARGETS])
        cost_vf_loss = sum(
            value_loss(fwd_out[f"cost_vf_preds/{aid}"], batch[f"{SafeColumns.COST_VALUE_TARGETS}/{aid}"])
            for aid in self.agent_ids
            if f"{SafeColumns.COST_VALUE_TARGETS}/{aid}" in batch
        )
        self.metrics.log_dict({"vf_loss": vf_loss, "cost_vf_loss": cost_vf_loss}, key=CRITIC_ID, window=1)
        return vf_loss + cost_vf_loss

    def policy_advantage(self, module_id: str, batch: dict) -> torch.Tensor:
        """The advantage the PPO-clip surrogate maximises (HAPPO/MAPPO: the joint reward advantage Â)."""
        return batch[Columns.ADVANTAGES]

    def compute_policy_loss(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        """HAPPO's objective: ``−E[M · min(r Â, clip(r) Â)] − c_ent · H[π]`` (M = 1 for MAPPO)."""
        mask = batch[Columns.LOSS_MASK]
        dist_cls = self.module[module_id].unwrapped().get_train_action_dist_cls()
        curr = dist_cls.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        prev = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
        ratio = torch.exp(curr.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        surrogate = ppo_clip_surrogate(ratio, self.policy_advantage(module_id, batch), config.clip_param)
        policy_loss = -masked_mean(batch[SafeColumns.HAPPO_FACTOR] * surrogate, mask)
        entropy = masked_mean(curr.entropy(), mask)
        total_loss = policy_loss - config.entropy_coeff * entropy
        self.metrics.log_dict(
            {"policy_loss": policy_loss, "entropy": entropy, "mean_kl": masked_mean(prev.kl(curr), mask)},
            key=module_id,
            window=1,
        )
        return total_loss

    # ------------------------------------------------------------------------------------------------------------
    def _log_agent(self, module_id: str, batch: dict, episode_cost: Any, dual_updated: bool) -> None:
        factor = batch[SafeColumns.HAPPO_FACTOR][batch[Columns.LOSS_MASK].bool()]
        stats = {"happo_factor_mean": factor.mean().item(), "happo_factor_max": factor.max().item()}
        stats["happo_factor_min"] = factor.min().item()
        if self.duals:
            stats["dual_updated"] = int(dual_updated)  # 1: this iteration measured a fresh J_c and the duals moved
            for k, v in enumerate(self.dual_value(module_id)):
                stats[self.dual_name if self.num_costs == 1 else f"{self.dual_name}_{k}"] = float(v)
        if episode_cost is not None:  # the last known J_c (m > 1: the sum, and episode_cost_<k> per cost index)
            stats["episode_cost"] = float(np.sum(episode_cost))
            if self.num_costs > 1:
                stats.update({f"episode_cost_{k}": float(c) for k, c in enumerate(np.ravel(episode_cost))})
        self.metrics.log_dict(stats, key=module_id, window=1)
