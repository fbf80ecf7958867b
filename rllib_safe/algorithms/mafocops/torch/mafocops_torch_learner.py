"""MAFOCOPS' learner: the sequential base with the FOCOPS loss (Eq. 11), ν as the dual (Eq. 10), KL(π_θ‖π_θk).

What changes against :class:`SequentialTorchLearner` (everything else, i.e. critics, the permutation, the HAPPO factor,
the epoch/minibatch loop and the early-stop rule, is the base's):

* :meth:`make_duals`: one ν per agent (m entries) from the config's ``nu_*`` fields; the base steps it by Eq. 10
  after every minibatch step of the agent's epochs (``nu_schedule="per_minibatch"``, the default), or once before
  that agent's policy update (``"per_iteration"``, Algorithm 1 line 9 read literally).
* :meth:`compute_policy_loss`: :func:`focops_loss`, whose gradient is Eq. 11.
* :meth:`mean_kl`: the early-stop statistic of the paper is the mean of KL(π_θ‖π_θk) (Sec. 4.3:
  ``(1/N) Σ_j D_KL(π_θ‖π_θk)[s_j] > δ``), the reverse of the base's KL(π_old‖π); overridden here.
* :meth:`update_agent`: after the base's epochs, logs the mean KL at stop and the indicator's acceptance.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns

from rllib_safe.algorithms.sequential.torch.sequential_torch_learner import SequentialTorchLearner, masked_mean
from rllib_safe.core.columns import SafeColumns
from rllib_safe.duals import DualVariable


def focops_loss(
    *,
    state_kl: torch.Tensor,
    ratio: torch.Tensor,
    reward_advantage: torch.Tensor,
    happo_factor: torch.Tensor,
    cost_advantages: torch.Tensor,
    nu: torch.Tensor,
    focops_lambda: float,
    kl_threshold: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The MAFOCOPS policy loss of one agent on one minibatch; its gradient is Eq. 11 of the paper.

    Line by line::

        eta_hat        = M · Â                              Algorithm 1 line 13: η̂ is estimated by M^{i_1:h}(s, a)
        cost_penalty   = Σ_k ν_k Â_c,k                      ν_j Â_j of Eq. 11, summed over the m cost indices
        accept         = 1[KL(π_θ‖π_θk)[s] ≤ δ]             the per-state indicator I(s_j) (Sec. 4.3; no gradient)
        kl_term        = KL(π_θ‖π_θk)[s]                    Eq. 11, first term (its gradient is ∇_θ D_KL)
        advantage_term = (π_θ/π_θk)(a|s)·(η̂ − νÂ_c)/λ       Eq. 11, second term (∇_θ π_θ / (λ π_θk) · (η̂ − νÂ_c))
        loss           = (1/N) Σ_j (kl_term − advantage_term)·accept

    The indicator multiplies the whole per-state term, i.e. a rejected state contributes nothing (the paper's
    "rejecting sampled states whose D_KL is too large", FOCOPS Eq. 13 and its reference code); N counts every valid
    row, accepted or not. The HAPPO factor multiplies the joint reward advantage only; the cost advantage is the
    agent's own and is not multiplied (Algorithm 1 lines 13 and 19).

    Args:
        state_kl: ``(N,)`` per-state KL(π_θ(·|s) ‖ π_θk(·|s)), differentiable in θ.
        ratio: ``(N,)`` π_θ(a|s) / π_θk(a|s), differentiable in θ.
        reward_advantage: ``(N,)`` joint reward advantage Â.
        happo_factor: ``(N,)`` the factor M^{i_1:h} of the agents updated before this one (1 for the first).
        cost_advantages: ``(N, m)`` (or ``(N,)`` for m = 1) the agent's cost advantages Â_c.
        nu: ``(m,)`` the agent's multipliers ν.
        focops_lambda: Temperature λ > 0.
        kl_threshold: δ of the indicator.
        mask: ``(N,)`` valid rows (None: all).

    Returns:
        The scalar loss, and the detached minibatch means of its terms (``kl_term``, ``advantage_term``,
        ``accept_fraction``).
    """
    if mask is None:
        mask = torch.ones_like(ratio, dtype=torch.bool)
    cost_advantages = cost_advantages.reshape(len(ratio), -1)
    eta_hat = happo_factor * reward_advantage  # η̂ = M^{i_1:h}·Â (Algorithm 1 line 13)
    cost_penalty = (cost_advantages * nu.to(cost_advantages.dtype)).sum(-1)  # Σ_k ν_k Â_c,k (Eq. 11)
    accept = (state_kl.detach() <= kl_threshold).to(state_kl.dtype)  # I(s_j) (Sec. 4.3)
    kl_term = state_kl  # D_KL(π_θ‖π_θk)[s_j] (Eq. 11, first term)
    advantage_term = ratio * (eta_hat - cost_penalty) / focops_lambda  # (π_θ/π_θk)(η̂ − νÂ_c)/λ (Eq. 11)
    loss = masked_mean((kl_term - advantage_term) * accept, mask)  # (1/N) Σ_j [...]·I(s_j) (Eq. 11)
    terms = {
        "kl_term": masked_mean(kl_term.detach(), mask),
        "advantage_term": masked_mean(advantage_term.detach(), mask),
        "accept_fraction": masked_mean(accept, mask),
    }
    return loss, terms


class MAFOCOPSTorchLearner(SequentialTorchLearner):
    """Per-agent ν (Eq. 10), the FOCOPS loss (Eq. 11) with the HAPPO factor, early stop on KL(π_θ‖π_θk) > δ.

    Logged per agent (``learners/<agent>/...``): ``nu`` (``nu_<k>`` for m > 1), ``epochs_trained`` (the epoch
    at which the agent stopped), ``kl_at_stop`` (mean KL(π_θ‖π_θk) over its batch after its epochs),
    ``accept_fraction`` (share of states the indicator accepted, averaged over the agent's minibatch steps),
    ``accept_fraction_at_stop`` (the same share with the final policy on the whole batch), ``policy_loss``,
    ``kl_term``, ``advantage_term``, ``entropy``.
    """

    dual_name = "nu"

    def build(self) -> None:
        """The base's build, plus the per-agent record of the indicator's acceptance."""
        super().build()
        self._accepted: dict[str, list[float]] = {}

    def make_duals(self) -> dict[str, DualVariable]:
        """One ν per agent from ``nu_init``/``nu_max``/``nu_lr`` and ``dual_rule`` ("projected_gradient": Eq. 10)."""
        return self._make_config_duals()

    def compute_policy_loss(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        """:func:`focops_loss` on this minibatch, minus ``entropy_coeff`` times the entropy (0 by default)."""
        mask = batch[Columns.LOSS_MASK]
        dist_cls = self.module[module_id].unwrapped().get_train_action_dist_cls()
        curr = dist_cls.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        prev = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
        nu = torch.as_tensor(self.dual_value(module_id), dtype=torch.float32, device=mask.device)
        focops, terms = focops_loss(
            state_kl=curr.kl(prev),
            ratio=torch.exp(curr.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP]),
            reward_advantage=batch[Columns.ADVANTAGES],
            happo_factor=batch[SafeColumns.HAPPO_FACTOR],
            cost_advantages=batch[SafeColumns.COST_ADVANTAGES],
            nu=nu,
            focops_lambda=config.focops_lambda,
            kl_threshold=config.kl_threshold,
            mask=mask,
        )
        entropy = masked_mean(curr.entropy(), mask)
        total_loss = focops - config.entropy_coeff * entropy
        self._accepted.setdefault(module_id, []).append(float(terms["accept_fraction"]))
        self.metrics.log_dict(
            {
                "policy_loss": focops.detach(),
                "entropy": entropy.detach(),
                "kl_term": terms["kl_term"],
                "advantage_term": terms["advantage_term"],
            },
            key=module_id,
            window=1,
        )
        return total_loss

    @torch.no_grad()
    def state_kl(self, module_id: str, batch: dict) -> torch.Tensor:
        """Per-row KL(π_θ(·|o) ‖ π_θk(·|o)) of the current policy against the sampling policy."""
        old, new = self._dists(module_id, batch)
        return new.kl(old)

    @torch.no_grad()
    def mean_kl(self, module_id: str, batch: dict) -> torch.Tensor:
        """Mean over valid rows of KL(π_θ‖π_θk): the paper's early-stop statistic (Sec. 4.3, Algorithm 1 line 15)."""
        return masked_mean(self.state_kl(module_id, batch), batch[Columns.LOSS_MASK])

    def update_agent(self, module_id: str, batch: dict, **schedule: Any) -> None:
        """The base's epochs (with the early stop), then the KL and acceptance of the final policy are logged."""
        self._accepted[module_id] = []
        super().update_agent(module_id, batch, **schedule)
        mask = batch[Columns.LOSS_MASK]
        kl = self.state_kl(module_id, batch)
        accepted = self._accepted.pop(module_id, [])
        stats = {
            "kl_at_stop": self._mean_across_learners(float(masked_mean(kl, mask))),
            "accept_fraction_at_stop": self._mean_across_learners(
                float(masked_mean((kl <= self.config.kl_threshold).to(kl.dtype), mask))
            ),
            "accept_fraction": sum(accepted) / max(len(accepted), 1),
        }
        self.metrics.log_dict(stats, key=module_id, window=1)
