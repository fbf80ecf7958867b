"""Constrained-HASAC's learner: HASAC plus expected-cost critics and the penalty ``Σ_j λ_i^j Q_c^j(s, a)``."""

from __future__ import annotations

from typing import Any

import torch

from rllib_safe.algorithms.hasac.torch.hasac_torch_learner import HASACTorchLearner, td_loss
from rllib_safe.core.columns import CRITIC_ID
from rllib_safe.duals import DualVariable


class ConstrainedHASACTorchLearner(HASACTorchLearner):
    """Per-agent multipliers λ_i (one per cost index) on a joint cost critic; see ``constrained_hasac.py``.

    The two cost hooks are written in terms of :meth:`cost_target` / :meth:`cost_critic_td_loss` (the critic's
    Bellman target and loss) and :meth:`cost_risk` (the number the penalty and the multipliers see); WCMASAC
    replaces those three with their distributional versions.
    """

    def make_duals(self) -> dict[str, DualVariable]:
        """One dual variable per agent, from the config's ``dual_*`` fields."""
        return self._make_config_duals()

    # -- the cost critic -------------------------------------------------------------------------------------------
    def cost_target(self, batch: dict, next_values: torch.Tensor) -> torch.Tensor:
        """n-step Bellman target ``c_n + γ_c^k (1 − terminated) · next`` (``next``: ``(B, m)`` or ``(B, m, N)``)."""
        bootstrap = batch["cost_discount"] * (1.0 - batch["terminated"])
        shape = (-1,) + (1,) * (next_values.dim() - 1)
        costs = batch["costs"].reshape(batch["costs"].shape + (1,) * (next_values.dim() - 2))
        return costs + bootstrap.reshape(shape) * next_values

    def cost_critic_td_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of one cost index's critic: the reward critic's TD loss on the expected cost."""
        return td_loss(pred, target, self.config.critic_loss, self.config.huber_delta)

    def cost_risk(self, values: torch.Tensor) -> torch.Tensor:
        """The cost measure the constraint uses, ``(B, m)``: here the expected cost Q_c itself."""
        return values

    def cost_critic_loss(self, critics: Any, batch: dict, next_actions: dict, stats: dict) -> torch.Tensor:
        """Σ_j of the cost critics' losses against their n-step targets (next actions from the current policies)."""
        obs = {aid: batch[f"obs/{aid}"] for aid in self.agent_ids}
        next_obs = {aid: batch[f"next_obs/{aid}"] for aid in self.agent_ids}
        with torch.no_grad():
            next_values = critics.cost_values(batch["next_state"], next_obs, next_actions, target=True)
            target = self.cost_target(batch, next_values)
        buffer_actions = {aid: batch[f"actions/{aid}"] for aid in self.agent_ids}
        pred = critics.cost_values(batch["state"], obs, buffer_actions)
        losses = [self.cost_critic_td_loss(pred[:, j], target[:, j]) for j in range(pred.shape[1])]
        loss = torch.stack(losses).sum()
        stats[(CRITIC_ID, "cost_critic_loss")] += loss.detach()
        return loss

    def cost_penalty(self, module_id: str, critics: Any, batch: dict, joint_actions: dict) -> torch.Tensor:
        """``Σ_j λ_i^j · risk_j(s, a)`` per row, at the joint action of agent i's loss (critics frozen)."""
        obs = {aid: batch[f"obs/{aid}"] for aid in self.agent_ids}
        risk = self.cost_risk(critics.cost_values(batch["state"], obs, joint_actions))
        lam = torch.as_tensor(self.dual_value(module_id), dtype=risk.dtype, device=risk.device)
        return (risk * lam).sum(-1)

    def after_actor_updates(self, critics: Any, batch: dict, actions: dict, stats: dict) -> None:
        """Logs the constraint's measure at the updated joint policy's actions (mean over rows, per cost index)."""
        stats_key = self.risk_stat_name()
        with torch.no_grad():
            obs = {aid: batch[f"obs/{aid}"] for aid in self.agent_ids}
            risk = self.cost_risk(critics.cost_values(batch["state"], obs, actions)).mean(0)
        for j, value in enumerate(risk):
            stats[(CRITIC_ID, stats_key if risk.numel() == 1 else f"{stats_key}_{j}")] += value
        self.last_risk = risk

    def risk_stat_name(self) -> str:
        """Name under which the cost measure is logged."""
        return "cost_value"
