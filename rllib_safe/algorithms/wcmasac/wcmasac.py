"""WCMASAC: Worst-Case Multi-Agent Soft Actor-Critic (seed paper ``003``, Liu et al., AAAI 2026).

Built from the paper (no code of it is public): Sec. 3.3 (Eq. 5, 16, 17), Definitions 1-2, on the HASAC base.

* **Reward side**: HASAC's centralized twin soft Q (Eq. 5) and sequential actor updates with re-sampling.
* **Distributional cost critic** per cost index j: N quantiles θ_1..θ_N (levels τ̂_i = (2i − 1)/2N) of the joint
  discounted cost return Z_c^j(s, a_1..a_n), from a multi-head attention block over the agents' (observation,
  action) embeddings and the state (:class:`~rllib_safe.core.sac_modules.QuantileAttentionCostCritic`), trained with
  the quantile Huber loss of Eq. 16 against the distributional Bellman target ``c_n + γ_c^k (1 − terminated) θ̄_j(s',
  a')``, a' ~ π(·|o') (QR-DQN, Dabney et al. 2018b; n-step as the reward critic).
* **CVaR_ω** (Definition 1) read out of the quantiles: the mean of the upper ω-tail of the quantile function,
  ``(1/ω) ∫_{1−ω}^1 F⁻¹(u) du`` with F⁻¹ = θ_i on [(i−1)/N, i/N] — the mean of the quantiles at levels ≥ 1 − ω
  (exactly that when ωN is an integer). ``risk_level`` is ω: ω → 1 is risk-neutral (the mean), small ω looks
  at the worst cases only.
* **Actor loss, Eq. 17**: agent i_k minimises ``E[α_{i_k} log π_{i_k} − min_j Q_j(s, a) + Σ_j λ_{i_k}^j
  CVaR_ω(Z_c^j(s, a))]`` at the joint action of HASAC's sequential scheme (the sign convention of a loss to be
  minimised; the printed Eq. 17 is the objective to maximise with its terms grouped differently).
* **Multipliers**: λ_i^j ≥ 0 per agent and cost index, moved after every gradient update by the config's dual rule
  from the minibatch mean of CVaR_ω(Z_c^j(s, a)) at the updated joint policy's actions against the budget b_i^j
  (WCSAC updates its β the same way, every step, from CVaR against the budget).

**From an episode limit to the budget** (WCSAC's rule, Yang et al. 2021, ``wc_sac/sac/wcsac.py``:
``cost_constraint = cost_lim * (1 - gamma**max_ep_len) / (1 - gamma) / max_ep_len``)::

    b = d · (1 − γ_c^T) / ((1 − γ_c) · T)          d: episode cost limit, T: episode length (the task's)

Why: the critic does not predict the undiscounted episode cost that ``d`` limits; it predicts the *discounted* cost
return from a state onward, ``Σ_t γ_c^t c_t``. Spreading the episode budget evenly over the episode, d/T per step,
gives a discounted return of exactly b from the episode's first state, so b is the episode limit on the critic's
scale (WCSAC: "we should be approximately correct here", since every replayed state is treated as the start of a
discounted infinite horizon). It is exact at the start of an episode and approximate elsewhere; it fits tasks whose
episodes are much longer than the discount horizon 1/(1 − γ_c) (MaMuJoCo: T = 1000, 1/(1 − 0.99) = 100).

m > 1 costs: one critic and one λ per cost index. Defaults beyond HASAC's: ``risk_level`` ω = 0.5 (WCSAC's default
``--rl 0.5``; the paper studies 1 − ω ∈ {0.01, 0.5, 0.99}), ``num_quantiles`` 20 (WCSAC's quantile version,
``--nq 20``), ``quantile_huber_kappa`` 1 (QR-DQN), ``attention_dim`` 64 and ``attention_heads`` 4 (ours: the
paper's Appendix F.1 with its network sizes is not in the published text), ``dual_lr`` 0.002 per gradient update
(ours, with the package's Adam rule; WCSAC moves a softplus-parameterised β with Adam at lr 1e-3 · 20 per step,
with a damping term we do not use).
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import NotProvided

from rllib_safe.algorithms.constrained_hasac.constrained_hasac import ConstrainedHASAC, ConstrainedHASACConfig
from rllib_safe.algorithms.hasac.hasac import HASACConfig


class WCMASACConfig(ConstrainedHASACConfig):
    """WCMASAC's config: HASAC's fields plus the following, set through :meth:`training`.

    * ``risk_level`` (ω, 0.5, WCSAC ``--rl``): the CVaR level, in (0, 1]; 1 is the mean.
    * ``num_quantiles`` (N, 20, WCSAC's quantile critic ``--nq``).
    * ``quantile_huber_kappa`` (κ, 1.0, QR-DQN; 0 gives the plain quantile loss).
    * ``attention_dim`` (64) and ``attention_heads`` (4): token size and heads of the cost critic's attention.
    * ``dual_lr`` defaults to 0.002: the multipliers move after every gradient update (see the module docstring).
    """

    TRAINING_FIELDS = HASACConfig.TRAINING_FIELDS + (
        "risk_level",
        "num_quantiles",
        "quantile_huber_kappa",
        "attention_dim",
        "attention_heads",
    )

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or WCMASAC)
        self.risk_level = 0.5
        self.num_quantiles = 20
        self.quantile_huber_kappa = 1.0
        self.attention_dim = 64
        self.attention_heads = 4
        self.dual_lr = 0.002

    def training(
        self,
        *,
        risk_level: float = NotProvided,
        num_quantiles: int = NotProvided,
        quantile_huber_kappa: float = NotProvided,
        attention_dim: int = NotProvided,
        attention_heads: int = NotProvided,
        **kwargs: Any,
    ) -> WCMASACConfig:
        """Sets WCMASAC's options and HASAC's (see the class docstrings)."""
        ours = dict(
            risk_level=risk_level,
            num_quantiles=num_quantiles,
            quantile_huber_kappa=quantile_huber_kappa,
            attention_dim=attention_dim,
            attention_heads=attention_heads,
        )
        return super().training(**{k: v for k, v in ours.items() if v is not NotProvided}, **kwargs)

    def _validate_safe_fields(self) -> None:
        super()._validate_safe_fields()
        omega = self.risk_level
        if isinstance(omega, bool) or not isinstance(omega, (int, float)) or not 0 < omega <= 1:
            raise ValueError(f"`risk_level` (ω) must be in (0, 1], got {omega!r}.")
        for name in ("num_quantiles", "attention_dim", "attention_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if self.attention_dim % self.attention_heads:
            raise ValueError(
                f"`attention_dim` ({self.attention_dim}) must be divisible by "
                f"`attention_heads` ({self.attention_heads})."
            )
        kappa = self.quantile_huber_kappa
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not kappa >= 0:
            raise ValueError(f"`quantile_huber_kappa` must be a number >= 0, got {kappa!r}.")

    def cost_critic_model_config(self) -> dict[str, Any]:
        """A quantile cost critic with attention per cost index."""
        return {
            "cost_critic": "quantile",
            "num_quantiles": self.num_quantiles,
            "attention_dim": self.attention_dim,
            "attention_heads": self.attention_heads,
        }

    def get_default_learner_class(self) -> type:
        """The WCMASAC learner."""
        from rllib_safe.algorithms.wcmasac.torch.wcmasac_torch_learner import WCMASACTorchLearner

        return WCMASACTorchLearner


class WCMASAC(ConstrainedHASAC):
    """WCMASAC as an RLlib Algorithm (registered as ``"WCMASAC"``)."""

    @classmethod
    def get_default_config(cls) -> WCMASACConfig:
        """The default config."""
        return WCMASACConfig()


__all__ = ["WCMASAC", "WCMASACConfig"]
