"""MACPO: Multi-Agent Constrained Policy Optimisation.

Source: Gu et al. 2023, "Safe multi-agent reinforcement learning for multi-robot control" (Artificial Intelligence),
code ``chauncygu/Multi-Agent-Constrained-Policy-Optimisation`` (``MACPO/macpo/algorithms/r_mappo/r_macpo.py``).

Sequential HAPPO-style updates (the shared base draws the agent permutation and maintains the factor M); each agent
takes one CPO step (Achiam et al. 2017) on its own parameters instead of minibatch SGD:

1. reward surrogate gradient ``g = ∇ E[M · r · Â]`` and cost surrogate gradient ``b = ∇ E[M · r · Â_c]`` on the
   agent's whole batch (valid rows only);
2. ``H⁻¹g`` and ``H⁻¹b`` by conjugate gradient with Fisher-vector products of the agent's policy (damped);
3. the constraint value ``c = (J_c − d) · constraint_scale`` from the agent's exact mean episode cost ``J_c``;
4. the CPO dual solution (cases 0–4, see :mod:`rllib_safe.algorithms.macpo.torch.cpo`), a recovery step when
   infeasible;
5. a backtracking line search accepting only a KL within ``kl_threshold``, an improved reward surrogate (feasible
   cases) and a cost surrogate within the slack; otherwise the parameters are restored.

The math lives in :mod:`rllib_safe.algorithms.macpo.torch.cpo`, the hook in
:class:`~rllib_safe.algorithms.macpo.torch.macpo_torch_learner.MACPOTorchLearner`.
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.algorithms.algorithm_config import NotProvided

from rllib_safe.algorithms.sequential.sequential import SequentialAlgorithm, SequentialConfig, probe_env


class MACPOConfig(SequentialConfig):
    """MACPO's config: the sequential base plus the second-order step's options (set through :meth:`training`).

    * ``kl_threshold`` (0.008): the trust-region radius δ on the mean ``KL(π_k ‖ π)`` of an agent's step
      (MAFOCOPS paper Table 5, MACPO column, Safe MAMuJoCo; the MACPO Ant script uses 0.0065, Safe MAIG 0.009).
    * ``fraction_coef`` (0.3): the first step of the line search as a fraction of the CPO step; trial i takes
      ``fraction_coef · line_search_fraction^i`` of it (MAFOCOPS Table 5: 0.3; MACPO ``config.py`` help "the coef of
      line search step size", used in ``r_macpo.py`` as ``new_params = params − fraction_coef·fraction^i·x``).
    * ``line_search_fraction`` (0.5): the backtracking factor (MACPO ``config.py`` / ``train_mujoco.sh``).
    * ``line_search_steps`` (10): number of line-search trials (MACPO ``config.py`` ``ls_step``; SafePO 10).
    * ``cg_iters`` (10): conjugate-gradient iterations (MACPO ``r_macpo.py`` ``nsteps=10``; SafePO 10).
    * ``cg_damping`` (0.1): damping of the Fisher-vector products, ``(H + 0.1 I)v`` (MACPO
      ``fisher_vector_product``: ``kl_hessian_p + 0.1 * p``; OmniSafe CPO ``cg_damping`` 0.1).
    * ``max_step_norm`` (0.5): the CPO direction is rescaled to this Euclidean norm when longer, before the line
      search (MACPO ``r_macpo.py``: ``if x_norm > 0.5: x = x * 0.5 / x_norm``); None disables it.
    * ``constraint_scale`` (None → ``1 − gamma``): ``c = (J_c − d) · constraint_scale`` (MACPO ``r_macpo.py``:
      ``rescale_constraint_val = (aver_episode_costs − safety_bound) · (1 − gamma)``). It converts the episode-cost
      gap into the per-step units of the cost surrogate; ``1 / episode_length`` is the undiscounted alternative.
    * ``cost_surrogate_factor`` (True): multiply the cost surrogate by the HAPPO factor M as the MACPO code does
      (``ratio * factor_batch * cost_adv_targ``); False uses ``E[r · Â_c]``, the per-agent cost surrogate of the
      MACPO paper's constraint (the cost of agent i depends on its own action only).
    * ``cpo_eps`` (1e-8): numerical floor of the dual solve (MACPO ``config.py`` ``EPS``).

    Other defaults: ``critic_lr`` 5e-3 (MACPO ``train_mujoco.sh``); the rest as the sequential base. ``lr``,
    ``num_epochs``/``minibatch_size`` (for the actors), ``clip_param``, ``entropy_coeff`` and ``target_kl`` do not
    act on MACPO's actors (the critic still uses ``num_epochs``/``minibatch_size``). MACPO supports one cost index
    (m = 1); tasks with several costs are rejected at validation.

    Units of the constraint: ``c = (J_c − d)(1 − γ)`` is in cost units, while the cost advantages behind b are
    standardised by default (``cost_advantage_normalization="standardize"``, as the MACPO code does), i.e. in units of
    their standard deviation; CPO's linearised constraint ``c + bᵀx ≤ 0`` (Achiam et al. 2017) assumes both in the
    same units. ``training(cost_advantage_normalization="center")`` keeps Â_c in cost units: a CPO-faithful run.

    Deliberate difference from the MACPO code: there ``trpo_update`` runs once per minibatch (``num_mini_batch`` 40
    in ``train_mujoco.sh``), i.e. up to 40 CPO steps per agent and iteration, each with the critic steps interleaved;
    here every agent takes one CPO step on its whole batch per iteration (CPO/TRPO as published, and the same step on
    every Learner). The critics train before the agent loop by default; ``critic_update="with_each_agent"`` trains the
    reward critic and the agent's cost critic in the agent's turn, as the MACPO code does.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MACPO)
        self.sequential = True
        self.critic_lr = 5e-3
        self.kl_threshold = 0.008
        self.fraction_coef = 0.3
        self.line_search_fraction = 0.5
        self.line_search_steps = 10
        self.cg_iters = 10
        self.cg_damping = 0.1
        self.max_step_norm = 0.5
        self.constraint_scale = None
        self.cost_surrogate_factor = True
        self.cpo_eps = 1e-8

    def training(
        self,
        *,
        kl_threshold: float = NotProvided,
        fraction_coef: float = NotProvided,
        line_search_fraction: float = NotProvided,
        line_search_steps: int = NotProvided,
        cg_iters: int = NotProvided,
        cg_damping: float = NotProvided,
        max_step_norm: float | None = NotProvided,
        constraint_scale: float | None = NotProvided,
        cost_surrogate_factor: bool = NotProvided,
        cpo_eps: float = NotProvided,
        **kwargs: Any,
    ) -> MACPOConfig:
        """Sets MACPO's options (see the class docstring); the base's options pass through ``kwargs``."""
        super().training(**kwargs)
        for key, value in dict(
            kl_threshold=kl_threshold,
            fraction_coef=fraction_coef,
            line_search_fraction=line_search_fraction,
            line_search_steps=line_search_steps,
            cg_iters=cg_iters,
            cg_damping=cg_damping,
            max_step_norm=max_step_norm,
            constraint_scale=constraint_scale,
            cost_surrogate_factor=cost_surrogate_factor,
            cpo_eps=cpo_eps,
        ).items():
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def effective_constraint_scale(self) -> float:
        """The factor of ``c = (J_c − d) · scale``: ``constraint_scale`` or, when None, ``1 − gamma``."""
        return float(self.constraint_scale) if self.constraint_scale is not None else 1.0 - float(self.gamma)

    def validate(self) -> None:
        """MACPO's single-cost requirement, then the base's checks."""
        num_costs = probe_env(self).num_costs
        if num_costs != 1:
            raise ValueError(
                f"MACPO supports one cost index: the task has m = {num_costs} costs "
                "(use MAPPO-Lagrangian or MAFOCOPS for several constraints)."
            )
        super().validate()

    def _validate_safe_fields(self) -> None:
        super()._validate_safe_fields()

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
            return float(value)

        def integer(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")

        if number("kl_threshold") <= 0:
            raise ValueError(f"`kl_threshold` must be > 0, got {self.kl_threshold!r}.")
        if not 0 < number("fraction_coef") <= 1:
            raise ValueError(f"`fraction_coef` must be in (0, 1], got {self.fraction_coef!r}.")
        if not 0 < number("line_search_fraction") < 1:
            raise ValueError(f"`line_search_fraction` must be in (0, 1), got {self.line_search_fraction!r}.")
        integer("line_search_steps")
        integer("cg_iters")
        if number("cg_damping") < 0:
            raise ValueError(f"`cg_damping` must be >= 0, got {self.cg_damping!r}.")
        if self.max_step_norm is not None and number("max_step_norm") <= 0:
            raise ValueError(f"`max_step_norm` must be None or > 0, got {self.max_step_norm!r}.")
        if self.constraint_scale is not None and number("constraint_scale") <= 0:
            raise ValueError(f"`constraint_scale` must be None or > 0, got {self.constraint_scale!r}.")
        if self.constraint_scale is None and self.gamma >= 1:
            raise ValueError("`constraint_scale` must be set when `gamma` is 1 (the default scale is 1 − gamma).")
        if not isinstance(self.cost_surrogate_factor, bool):
            raise ValueError(f"`cost_surrogate_factor` must be True or False, got {self.cost_surrogate_factor!r}.")
        if not 0 < number("cpo_eps") < 1e-2:
            raise ValueError(f"`cpo_eps` must be in (0, 0.01), got {self.cpo_eps!r}.")

    def get_default_learner_class(self) -> type:
        """MACPO's learner."""
        from rllib_safe.algorithms.macpo.torch.macpo_torch_learner import MACPOTorchLearner

        return MACPOTorchLearner


class MACPO(SequentialAlgorithm):
    """MACPO as an RLlib Algorithm (registered as ``"MACPO"``)."""

    @classmethod
    def get_default_config(cls) -> MACPOConfig:
        """The default config."""
        return MACPOConfig()


__all__ = ["MACPO", "MACPOConfig"]
