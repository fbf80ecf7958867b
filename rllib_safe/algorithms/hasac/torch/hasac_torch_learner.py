"""Torch learner of HASAC, the off-policy base: critics, sequential actor updates with re-sampling, α, targets.

``update()`` receives ``num_updates`` minibatches of aligned joint rows (stacked along the rows) and one agent
permutation per minibatch, all drawn by the Algorithm (so every Learner uses the same permutations). For each
minibatch (one gradient update; HARL ``OffPolicyHARunner.train``):

1. **Critics.** With a' ~ π(·|o') for every agent (current policies) and the n-step quantities of the buffer, the
   target of the centralized twin soft Q is (seed paper Eq. 5 with HARL's twin critics and n-step returns)::

       y = r_n + γ^k · (1 − terminated) · (min_j Q̄_j(s', a') − Σ_i α_i log π_i(a'_i | o'_i))

   and the loss is ``ℓ(Q_1(s, a), y) + ℓ(Q_2(s, a), y)`` with ℓ the Huber loss (δ = ``huber_delta``, HARL) or
   ``½(·)²``, plus the cost critics' loss (hook :meth:`cost_critic_loss`; none in HASAC).
2. **Actors, one after another** in the permutation i_1..i_n. All agents first draw actions from their current
   policies (no gradient). Agent i_k then draws a reparameterised a_{i_k} ~ π_{i_k}(·|o_{i_k}) and minimises::

       L(θ_{i_k}) = E[ α_{i_k} log π_{i_k}(a_{i_k} | o_{i_k}) − min_j Q_j(s, a_{i_1..i_{k−1}}, a_{i_k}, a_rest)
                       + cost_penalty_{i_k}(s, a) ]                                            (seed paper Eq. 17)

   where a_{i_1..i_{k−1}} were **re-sampled from the already-updated policies** of the agents before it (HASAC) and
   a_rest come from the not-yet-updated policies; the critics are frozen (no gradient reaches them). With
   ``sequential=False`` nobody's action is re-sampled (simultaneous updates).
   The penalty is the hook :meth:`cost_penalty` (none in HASAC; λ · Q_c for Constrained-HASAC; λ · CVaR_ω for
   WCMASAC). After its step, the agent's temperature follows ``L(log α_i) = −E[log α_i (log π_i + H̄_i)]`` when
   ``auto_alpha`` (HARL / SAC), and its action is re-sampled from its new policy for the agents after it.
3. :meth:`after_actor_updates` (WCMASAC moves its multipliers there), then the targets are Polyak-averaged.

Several Learners (DDP): every forward pass runs on the unwrapped modules and the gradients of each step are averaged
across Learners explicitly (one all-reduce per optimiser step), so the actor, critic, cost-critic and α losses never
share a backward pass with DDP's hooks; every rank runs the same steps in the same order. The random draws of an
update come from a generator seeded by (seed, Learner rank, update count): no RNG state to checkpoint, and a restored
run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.learner.training_data import TrainingData

from rllib_safe.algorithms.sequential.sequential import probe_env
from rllib_safe.algorithms.sequential.sequential_learner import SafeLearner
from rllib_safe.core.columns import CRITIC_ID


def td_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Mean TD loss: Huber with threshold ``delta`` (HARL ``use_huber_loss``) or ``½(pred − target)²``."""
    if kind == "huber":
        return F.huber_loss(pred, target, delta=delta)
    return 0.5 * F.mse_loss(pred, target)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Averages ``tensors`` in place across the Learners (no-op with a single Learner)."""
    if not _distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


@torch.no_grad()
def polyak_update_(main: torch.nn.Module, target: torch.nn.Module, tau: float) -> None:
    """``θ̄ ← τ θ + (1 − τ) θ̄`` for every parameter (RLlib's ``update_target_network``, in one fused op)."""
    torch._foreach_lerp_(list(target.parameters()), list(main.parameters()), tau)


@contextlib.contextmanager
def frozen(modules: list[torch.nn.Module]):
    """Turns off gradients into the modules' parameters inside the block (SAC's "straight-through" actor loss)."""
    flags = [(p, p.requires_grad) for module in modules for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class HASACTorchLearner(SafeLearner, TorchLearner):
    """HASAC's learner; Constrained-HASAC and WCMASAC override the cost hooks (see the module docstring)."""

    def build(self) -> None:
        """Builds modules, optimisers and duals; reads the target entropies."""
        super().build()
        self.target_entropy = self.config.target_entropies(probe_env(self.config))
        self.last_agent_orders: list[list[str]] = []

    # ------------------------------------------------------------------------------------------------------------
    # Optimisers: one per actor; the critic module has "q", "cost" (constrained variants) and "alpha".
    # ------------------------------------------------------------------------------------------------------------
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        """Adam per actor (``actor_lr``); Adam on the twin Q, the cost critics and the temperatures.

        Their learning rates are ``critic_lr``, ``cost_critic_lr`` and ``alpha_lr``.
        """
        module = self._module[module_id]
        if module_id != CRITIC_ID:
            params = self.get_parameters(module)
            self.register_optimizer(
                module_id=module_id,
                optimizer_name="policy",
                optimizer=torch.optim.Adam(params, foreach=True),
                params=params,
                lr_or_lr_schedule=config.actor_lr,
            )
            return
        groups = {"q": (module.q, config.critic_lr), "alpha": (None, config.alpha_lr)}
        if module.cost_critic is not None:
            groups["cost"] = (module.cost_q, config.cost_critic_lr)
        for name, (net, lr) in groups.items():
            params = list(module.log_alpha.values()) if name == "alpha" else list(net.parameters())
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.Adam(params, foreach=True),
                params=params,
                lr_or_lr_schedule=lr,
            )

    def _step(self, module_id: str, optimizer_names: tuple[str, ...], loss: torch.Tensor, name: str) -> None:
        """One gradient step of ``loss`` with the named optimisers (gradients averaged across Learners).

        Raises:
            FloatingPointError: If the loss is NaN or infinite (before any weight changes), naming it.
        """
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Non-finite loss {module_id}/{name} = {loss.item()} (gradient update {self._weights_seq_no}); "
                "check the rewards, costs and observations fed to the replay buffer, and the learning rates."
            )
        optimizers = [self.get_optimizer(module_id, name) for name in optimizer_names]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"] if p.grad is not None]
        all_reduce_mean_([p.grad for p in params])
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        for optimizer in optimizers:
            optimizer.step()

    # ------------------------------------------------------------------------------------------------------------
    # The update.
    # ------------------------------------------------------------------------------------------------------------
    def update(
        self,
        *,
        training_data: TrainingData | None = None,
        batch: Any = None,
        batches: list | None = None,
        timesteps: dict | None = None,
        num_updates: int = 1,
        agent_orders: list[list[str]] | None = None,
        episode_costs: dict[str, Any] | None = None,
        last_episode_costs: dict[str, Any] | None = None,
        _no_metrics_reduce: bool = False,
        **kwargs: Any,
    ) -> dict:
        """``num_updates`` gradient updates, one per minibatch (see the module docstring)."""
        self._check_is_built()
        if training_data is None:
            training_data = TrainingData(batch=batch, batches=batches)
        training_data.validate()
        training_data.solve_refs()
        data = training_data.batch if training_data.batch is not None else training_data.batches[0]
        tensors = {k: torch.tensor(np.asarray(v)).to(self._device) for k, v in data.items()}
        rows = len(tensors["reward"])
        if num_updates < 1 or rows % num_updates:
            raise ValueError(f"{rows} rows cannot be split into {num_updates} equal minibatches.")
        agent_orders = agent_orders or [list(self.agent_ids)] * num_updates
        for order in agent_orders:
            if sorted(order) != sorted(self.agent_ids):
                raise ValueError(f"agent order {order} is not a permutation of the agents {self.agent_ids}.")
        self.last_agent_orders = agent_orders

        self.before_gradient_based_update(timesteps=timesteps or {})
        self._weights_seq_no += 1
        episode_costs = episode_costs or {}  # fresh J_c, measured since the last call: the duals step on these
        self.remember_episode_costs(episode_costs, last_episode_costs)
        dual_updated = self.update_duals_for_iteration(episode_costs)
        size = rows // num_updates
        stats: dict[tuple[str, str], torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self._device))
        start = time.perf_counter()
        rank = torch.distributed.get_rank() if _distributed() else 0
        seed = int(self.config.seed or 0) * 1_000_003 + 7_919 * rank + self._weights_seq_no
        with torch.random.fork_rng(devices=[self._device] if self._device.type == "cuda" else []):
            torch.manual_seed(seed)
            for k in range(num_updates):
                minibatch = {key: value[k * size : (k + 1) * size] for key, value in tensors.items()}
                self.gradient_update(minibatch, agent_orders[k], stats)
        elapsed = time.perf_counter() - start
        self._log_update(stats, num_updates, elapsed, self.known_episode_costs, dual_updated)
        self.after_gradient_based_update(timesteps=timesteps or {})
        return None if _no_metrics_reduce else self.metrics.reduce()

    def gradient_update(self, batch: dict[str, torch.Tensor], agent_order: list[str], stats: dict) -> None:
        """One gradient update on one minibatch: critics, actors in sequence, α, hook, targets."""
        critics = self.module[CRITIC_ID].unwrapped()
        actors = {aid: self.module[aid].unwrapped() for aid in self.agent_ids}
        obs = {aid: batch[f"obs/{aid}"] for aid in self.agent_ids}

        # 1. Critics (Eq. 5; cost critics through the hook).
        with torch.no_grad():
            next_actions, next_logp = {}, {}
            for aid, actor in actors.items():
                next_actions[aid], next_logp[aid] = actor.sample(batch[f"next_obs/{aid}"])
        q_loss = self.q_loss(critics, batch, next_actions, next_logp, stats)
        cost_loss = self.cost_critic_loss(critics, batch, next_actions, stats)
        if cost_loss is None:
            self._step(CRITIC_ID, ("q",), q_loss, "q_loss")
        else:
            self._step(CRITIC_ID, ("q", "cost"), q_loss + cost_loss, "q_loss+cost_critic_loss")

        # 2. Actors one after another (Eq. 17), each followed by its temperature.
        alphas = critics.alphas()
        with frozen([main for main, _ in critics.get_target_network_pairs()]):
            with torch.no_grad():
                actions = {aid: actor.sample(obs[aid])[0] for aid, actor in actors.items()}
            for aid in agent_order:
                own_action, logp = actors[aid].sample(obs[aid])  # reparameterised: gradients reach θ_i
                joint = {**actions, aid: own_action}
                soft_q = critics.twin_q(batch["state"], joint).min(dim=0).values
                penalty = self.cost_penalty(aid, critics, batch, joint)
                entropy_term = alphas[aid] * logp
                policy_loss = (entropy_term - soft_q + penalty).mean()
                self._step(aid, ("policy",), policy_loss, "policy_loss")
                stats[(aid, "policy_loss")] += policy_loss.detach()
                stats[(aid, "entropy")] += -logp.detach().mean()
                if self.config.auto_alpha:
                    self._alpha_step(critics, aid, logp.detach())
                if self.config.sequential:
                    with torch.no_grad():  # HASAC: the agents after this one see its new policy's action
                        actions[aid] = actors[aid].sample(obs[aid])[0]

        # 3. Hook (multipliers of WCMASAC), 4. targets.
        self.after_actor_updates(critics, batch, actions, stats)
        for main, target in critics.get_target_network_pairs():
            polyak_update_(main, target, self.config.tau)

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        """Not used: the losses of one update depend on each other's steps (see :meth:`gradient_update`)."""
        raise NotImplementedError("HASAC learners compute their losses in gradient_update(), not per module.")

    def q_loss(self, critics: Any, batch: dict, next_actions: dict, next_logp: dict, stats: dict) -> torch.Tensor:
        """The twin soft-Q loss against the n-step target of Eq. 5."""
        alphas = critics.alphas()
        with torch.no_grad():
            next_q = critics.twin_q(batch["next_state"], next_actions, target=True).min(dim=0).values
            next_entropy_term = sum(alphas[aid] * next_logp[aid] for aid in self.agent_ids)
            bootstrap = batch["discount"] * (1.0 - batch["terminated"])
            target = batch["reward"] + bootstrap * (next_q - next_entropy_term)
        buffer_actions = {aid: batch[f"actions/{aid}"] for aid in self.agent_ids}
        q1, q2 = critics.twin_q(batch["state"], buffer_actions)
        kind, delta = self.config.critic_loss, self.config.huber_delta
        loss = td_loss(q1, target, kind, delta) + td_loss(q2, target, kind, delta)
        stats[(CRITIC_ID, "q_loss")] += loss.detach()
        stats[(CRITIC_ID, "q_mean")] += torch.min(q1, q2).detach().mean()
        return loss

    def _alpha_step(self, critics: Any, module_id: str, logp: torch.Tensor) -> None:
        """Temperature step of one agent: ``L(log α_i) = −E[log α_i (log π_i + H̄_i)]`` (HARL / SAC)."""
        log_alpha = critics.log_alpha[module_id]
        alpha_loss = -(log_alpha * (logp + self.target_entropy[module_id])).mean()
        self._step(CRITIC_ID, ("alpha",), alpha_loss, f"alpha_loss/{module_id}")

    # ------------------------------------------------------------------------------------------------------------
    # Hooks of the constrained variants (HASAC: no cost critic, no penalty, no multipliers).
    # ------------------------------------------------------------------------------------------------------------
    def cost_critic_loss(self, critics: Any, batch: dict, next_actions: dict, stats: dict) -> torch.Tensor | None:
        """The cost critics' loss (None: the algorithm has no cost critic)."""
        return None

    def cost_penalty(self, module_id: str, critics: Any, batch: dict, joint_actions: dict) -> torch.Tensor:
        """The cost term of agent ``module_id``'s actor loss per row (0 in HASAC)."""
        return torch.zeros((), device=self._device)

    def update_duals_for_iteration(self, episode_costs: dict[str, Any]) -> dict[str, bool]:
        """Moves every agent's multipliers once from its fresh exact mean episode cost, before the updates.

        An agent without a fresh measurement (no episode of it ended since the last updates) keeps its multipliers.

        Returns:
            ``{agent: whether its multipliers moved}``.
        """
        return {aid: self.update_dual(aid, episode_costs.get(aid)) for aid in self.agent_ids}

    def after_actor_updates(self, critics: Any, batch: dict, actions: dict, stats: dict) -> None:
        """Called after the actor steps of every gradient update with the joint actions of the updated policies."""

    # ------------------------------------------------------------------------------------------------------------
    def _log_update(
        self, stats: dict, num_updates: int, elapsed: float, episode_costs: dict, dual_updated: dict[str, bool]
    ) -> None:
        """Means over the iteration's updates; non-finite losses raise naming the loss."""
        means = {key: float(value) / num_updates for key, value in stats.items()}
        bad = [f"{module}/{name}" for (module, name), value in means.items() if not np.isfinite(value)]
        if bad:
            raise FloatingPointError(f"Non-finite value in {', '.join(bad)} (HASAC learner, update {num_updates}).")
        alphas = self.module[CRITIC_ID].unwrapped().alphas()
        per_module: dict[str, dict[str, float]] = defaultdict(dict)
        for (module, name), value in means.items():
            per_module[module][name] = value
        for aid in self.agent_ids:
            per_module[aid]["alpha"] = float(alphas[aid])
            if self.duals:
                per_module[aid]["dual_updated"] = float(dual_updated.get(aid, False))
                for k, v in enumerate(self.dual_value(aid)):
                    per_module[aid][self.dual_name if self.num_costs == 1 else f"{self.dual_name}_{k}"] = float(v)
            if episode_costs.get(aid) is not None:
                per_module[aid]["episode_cost"] = float(np.sum(episode_costs[aid]))
        per_module[CRITIC_ID]["num_gradient_updates"] = num_updates
        per_module[CRITIC_ID]["gradient_updates_per_s"] = num_updates / max(elapsed, 1e-9)
        for module, values in per_module.items():
            self.metrics.log_dict(values, key=module, window=1)
