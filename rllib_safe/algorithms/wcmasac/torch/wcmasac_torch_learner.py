"""WCMASAC's learner: the quantile Huber loss (Eq. 16), CVaR_ω from quantiles (Definition 1), λ from CVaR vs budget.

Everything else (critics, sequential actor updates with Eq. 17's penalty, α, targets) is the HASAC base with
Constrained-HASAC's cost hooks; see ``wcmasac.py`` for the algorithm and the budget rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rllib_safe.algorithms.constrained_hasac.torch.constrained_hasac_torch_learner import (
    ConstrainedHASACTorchLearner,
)
from rllib_safe.algorithms.hasac.torch.hasac_torch_learner import all_reduce_mean_
from rllib_safe.algorithms.sequential.sequential import probe_env
from rllib_safe.core.columns import CRITIC_ID


def quantile_levels(num_quantiles: int, device: Any = None) -> torch.Tensor:
    """The quantile midpoints τ̂_i = (2i − 1) / 2N, i = 1..N (QR-DQN)."""
    return (2 * torch.arange(num_quantiles, device=device, dtype=torch.float32) + 1) / (2 * num_quantiles)


def quantile_huber_loss(quantiles: torch.Tensor, target: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """Quantile Huber loss of Eq. 16 (QR-DQN, Dabney et al. 2018b, Eq. 10 and Algorithm 1).

    With the pairwise TD errors ``u_ij = T_j − θ_i`` between target samples T_j and predicted quantiles θ_i at the
    levels τ̂_i::

        L_κ(u) = ½u²                if |u| ≤ κ,   κ(|u| − ½κ) otherwise          (κ = 0: |u|)
        ρ_τ(u) = |τ − 1{u < 0}| · L_κ(u)
        loss   = mean over rows of Σ_i mean_j ρ_τ̂i(u_ij)

    Args:
        quantiles: Predicted quantiles θ, ``(B, N)``.
        target: Target samples T (the target critic's quantiles, shifted and discounted), ``(B, N')``, no gradient.
        kappa: Huber threshold κ ≥ 0.

    Returns:
        The scalar loss.
    """
    taus = quantile_levels(quantiles.shape[-1], quantiles.device)
    u = target.unsqueeze(-2) - quantiles.unsqueeze(-1)  # (B, N, N'): u_ij = T_j − θ_i
    abs_u = u.abs()
    huber = abs_u if kappa == 0 else torch.where(abs_u <= kappa, 0.5 * u**2, kappa * (abs_u - 0.5 * kappa))
    weight = (taus.unsqueeze(-1) - (u.detach() < 0).float()).abs()
    return (weight * huber).mean(-1).sum(-1).mean()


def cvar_from_quantiles(quantiles: torch.Tensor, risk_level: float) -> torch.Tensor:
    """CVaR_ω (Definition 1) of the distribution whose quantile function is θ_i on [(i − 1)/N, i/N].

    ``CVaR_ω = (1/ω) ∫_{1−ω}^1 F⁻¹(u) du = (1/ω) Σ_i θ_i · |[(i−1)/N, i/N] ∩ [1 − ω, 1]|``: the mean of the upper
    ω-tail (the quantiles at levels ≥ 1 − ω; a bin cut by 1 − ω counts with its overlap). ω = 1 gives the mean.

    Args:
        quantiles: ``(..., N)``, in the order of their levels.
        risk_level: ω in (0, 1].

    Returns:
        ``(...)``.
    """
    n = quantiles.shape[-1]
    edges = torch.arange(n + 1, device=quantiles.device, dtype=quantiles.dtype) / n
    overlap = (edges[1:] - torch.clamp(edges[:-1], min=1.0 - risk_level)).clamp(min=0.0)
    return (quantiles * overlap).sum(-1) / risk_level


def cost_budget(cost_limit: np.ndarray, cost_gamma: float, episode_steps: int) -> np.ndarray:
    """The episode cost limit d on the critic's scale: ``d (1 − γ_c^T) / ((1 − γ_c) T)`` (WCSAC; see wcmasac.py)."""
    horizon = episode_steps if cost_gamma == 1.0 else (1.0 - cost_gamma**episode_steps) / (1.0 - cost_gamma)
    return np.asarray(cost_limit, dtype=np.float64) * horizon / episode_steps


class WCMASACTorchLearner(ConstrainedHASACTorchLearner):
    """The distributional cost critic and the CVaR constraint; λ moves after every gradient update."""

    def build(self) -> None:
        """The base's build plus the per-agent budgets b_i (length m each)."""
        super().build()
        steps = probe_env(self.config).max_episode_steps
        self.cost_budgets = {
            aid: cost_budget(self.cost_limits[aid], self.config.cost_gamma, steps) for aid in self.agent_ids
        }

    def cost_critic_td_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. 16: the quantile Huber loss between predicted quantiles and the distributional Bellman target."""
        return quantile_huber_loss(pred, target, self.config.quantile_huber_kappa)

    def cost_risk(self, values: torch.Tensor) -> torch.Tensor:
        """CVaR_ω of each cost index's quantiles, ``(B, m, N) → (B, m)`` (Definition 1)."""
        return cvar_from_quantiles(values, self.config.risk_level)

    def risk_stat_name(self) -> str:
        """CVaR_ω is logged as ``cvar``."""
        return "cvar"

    def update_duals_for_iteration(self, episode_costs: dict[str, Any]) -> dict[str, bool]:
        """No per-iteration move: WCMASAC's multipliers follow CVaR_ω after every gradient update."""
        return {aid: False for aid in self.agent_ids}

    def after_actor_updates(self, critics: Any, batch: dict, actions: dict, stats: dict) -> None:
        """Logs CVaR_ω at the updated policies' actions and moves every λ_i from it (averaged over Learners)."""
        super().after_actor_updates(critics, batch, actions, stats)
        cvar = self.last_risk.clone()
        all_reduce_mean_([cvar])  # every Learner moves its multipliers identically
        measured = cvar.double().cpu().numpy()
        for aid in self.agent_ids:
            self.duals[aid].update(measured, self.cost_budgets[aid])

    def _log_update(
        self, stats: dict, num_updates: int, elapsed: float, episode_costs: dict, dual_updated: dict[str, bool]
    ) -> None:
        super()._log_update(stats, num_updates, elapsed, episode_costs, dual_updated)
        budget = self.cost_budgets[self.agent_ids[0]]
        names = ["cvar_budget"] if len(budget) == 1 else [f"cvar_budget_{j}" for j in range(len(budget))]
        self.metrics.log_dict(dict(zip(names, map(float, budget))), key=CRITIC_ID, window=1)
