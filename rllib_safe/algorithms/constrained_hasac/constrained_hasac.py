"""Constrained-HASAC: the expected-cost baseline of the WCMASAC paper.

Source: seed paper ``003`` (Liu et al.), Sec. 4.1: "Constrained-HASAC is developed to ensure fair comparisons. Unlike
WCMASAC, it does not constrain the CVaR. Instead, it directly constrains the joint expectation of all agents." No code
of it is public; it is built here as WCMASAC with the expected cost in place of CVaR_ω:

* HASAC (joint replay, twin soft Q, sequential actor updates with re-sampling, per-agent α) plus, per cost index j,
  a centralized expected-cost critic Q_c^j(s, a_1..a_n), trained on the n-step target
  ``c_n + γ_c^k (1 − terminated) Q̄_c^j(s', a')`` with the reward critic's loss (Huber or ½ MSE);
* agent i_k's actor loss adds ``Σ_j λ_{i_k}^j Q_c^j(s, a)`` at the joint action of Eq. 17 (the penalty form of
  OmniSafe's SAC-Lag ``_loss_pi`` without its 1/(1+λ) rescaling, as WCMASAC's Eq. 17 has none);
* λ_i ≥ 0 (one per cost index) moves once per iteration, before the updates, by the config's dual rule
  (:mod:`rllib_safe.duals`, default Adam, lr 0.035, λ_0 0.001: OmniSafe ``Lagrange``) from agent i's exact mean
  episode cost of the iteration against its limit — the same rule and measurement as MAPPO-Lagrangian here.
  (OmniSafe's SAC-Lag uses lr 0.0035 once per 6000-step epoch: ``training(dual_lr=...)`` sets it.)
"""

from __future__ import annotations

from typing import Any

from rllib_safe.algorithms.hasac.hasac import HASAC, HASACConfig


class ConstrainedHASACConfig(HASACConfig):
    """Constrained-HASAC's config: HASAC's fields (see :class:`HASACConfig`; the cost and ``dual_*`` fields apply)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or ConstrainedHASAC)

    def cost_critic_model_config(self) -> dict[str, Any]:
        """An expected-cost critic per cost index."""
        return {"cost_critic": "expected"}

    def get_default_learner_class(self) -> type:
        """The Constrained-HASAC learner."""
        from rllib_safe.algorithms.constrained_hasac.torch.constrained_hasac_torch_learner import (
            ConstrainedHASACTorchLearner,
        )

        return ConstrainedHASACTorchLearner


class ConstrainedHASAC(HASAC):
    """Constrained-HASAC as an RLlib Algorithm (registered as ``"ConstrainedHASAC"``)."""

    @classmethod
    def get_default_config(cls) -> ConstrainedHASACConfig:
        """The default config."""
        return ConstrainedHASACConfig()


__all__ = ["ConstrainedHASAC", "ConstrainedHASACConfig"]
