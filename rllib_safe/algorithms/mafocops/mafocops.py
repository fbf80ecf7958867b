"""MAFOCOPS (Zhao et al., "Multi-Agent First Order Constrained Optimization in Policy Space", seed paper ``000``).

Sequential (HAPPO-style) per-agent FOCOPS updates, Algorithm 1 (Appendix E) of the paper. Every iteration:

1. sample with the joint policy π_θk; the exact mean episode cost J_c of each agent is the Monte-Carlo estimate of
   the C-return (Algorithm 1 line 4); reward GAE Â from the centralized critic, cost GAE Â_c from each agent's cost
   critic (line 5); value and cost critics are fitted by MSE (Sec. 4.3, line 12);
2. draw a random agent permutation i_1..i_n (line 6);
3. for each agent i_h in turn (lines 8-20):

   * ν ← proj_[0, ν_max][ν − α(b − J_c)] from the agent's J_c (Eq. 10, line 9); by default after every minibatch
     step of the agent's epochs (``nu_schedule="per_minibatch"``), literally once before them with
     ``nu_schedule="per_iteration"`` (see :class:`MAFOCOPSConfig` for why);
   * K epochs of minibatch steps on the loss whose gradient is Eq. 11 (line 13), with η̂ = M^{i_1:h}·Â
     (the HAPPO factor of the agents already updated times the joint reward advantage) and the agent's own Â_c;
   * stop the agent's epochs once the mean KL(π_θ‖π_θk) over its batch exceeds δ (Sec. 4.3 "early stopping
     criterion", lines 15-16);
   * fold the agent's new/old probability ratio into M (line 19).

Mapping onto the sequential base: ν is the base's dual variable (``dual_rule="projected_gradient"`` is Eq. 10;
``nu_lr``/``nu_init``/``nu_max`` are the same fields as the base's ``dual_lr``/``dual_init``/``dual_max``), and δ is the
base's KL early-stop threshold (``kl_threshold`` is the same field as ``target_kl``). The loss lives in
:func:`rllib_safe.algorithms.mafocops.torch.mafocops_torch_learner.focops_loss`.
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.algorithms.algorithm_config import NotProvided

from rllib_safe.algorithms.sequential.sequential import (
    DUAL_SCHEDULES,
    SAFEPO_INIT_LOG_STD,
    SequentialAlgorithm,
    SequentialConfig,
    check_choice,
)

#: Table 5 of the paper (Appendix J), one column per benchmark. "update numbers" is the number of epochs K
#: (Algorithm 1 "number of updates K"), "minibatch size" is B (Algorithm 1 "minibatch size B").
PRESETS: dict[str, dict[str, Any]] = {
    # Table 5, "Safe MAMuJoCo" rows, MAFOCOPS column (λ 2.2 and ν_max 1.3 also in Appendix J's text, Tables 3-4).
    "safe_mamujoco": {
        "kl_threshold": 0.0125,
        "focops_lambda": 2.2,
        "nu_max": 1.3,
        "nu_lr": 0.00005,
        "minibatch_size": 256,
        "num_epochs": 5,
    },
    # Table 5, "Safe MAIG" rows, MAFOCOPS column.
    "safe_maig": {
        "kl_threshold": 0.01,
        "focops_lambda": 2.0,
        "nu_max": 1.4,
        "nu_lr": 0.001,
        "minibatch_size": 8192,
        "num_epochs": 3,
    },
    # Not Table 5: the MACPO code base's values that Appendix J says the paper kept (MACPO/MAPPO-L
    # ``scripts/train_mujoco.sh``: ``--lr 9e-5 --critic_lr 5e-3 --std_x_coef 1 --std_y_coef 5e-1``). Its Gaussian
    # has σ = std_y_coef·sigmoid(log_std / std_x_coef) with log_std initialised to std_x_coef, so σ_0 =
    # 0.5·sigmoid(1) ≈ 0.366; here σ = exp(log_std), started at the same σ_0 (the parametrisation differs).
    "macpo_code_base": {
        "lr": 9e-5,
        "critic_lr": 5e-3,
        "init_log_std": SAFEPO_INIT_LOG_STD,
    },
}


def _alias(field: str, doc: str) -> property:
    """A config attribute that reads and writes another one (one value, two names)."""

    def get(self: Any) -> Any:
        return getattr(self, field)

    def set_(self: Any, value: Any) -> None:
        setattr(self, field, value)

    return property(get, set_, doc=doc)


class MAFOCOPSConfig(SequentialConfig):
    """MAFOCOPS' config: the sequential base plus the FOCOPS fields, set through :meth:`training`.

    * ``focops_lambda`` (2.2): the temperature λ of Eq. 4 / Eq. 11 (fixed, Sec. 4.3).
    * ``kl_threshold`` (0.0125): δ, both the per-state acceptance bound of the indicator I(s) = 1[KL(s) ≤ δ] in Eq. 11
      and the early-stop bound on the mean KL(π_θ‖π_θk) (Sec. 4.3). Same field as the base's ``target_kl``.
    * ``nu_init`` (0.0), ``nu_max`` (1.3, ``float("inf")`` allowed), ``nu_lr`` (5e-5): initial value, upper bound
      ν_max and step size α of the cost multiplier ν (Eq. 10). Same fields as the base's ``dual_init``,
      ``dual_max``, ``dual_lr``; ``dual_rule`` stays selectable and defaults to ``"projected_gradient"`` (Eq. 10).
      One ν per agent and per cost index (Algorithm 1 line 9), updated from the agent's exact mean episode cost.
    * ``nu_schedule`` ("per_minibatch"; same field as the base's ``dual_schedule``): when Eq. 10 steps. J_c is in
      the units of Algorithm 1 line 4, the undiscounted mean episode cost of the iteration. "per_minibatch": after
      every minibatch step of the agent's K epochs, each step with the iteration's J_c, so ν moves by up to
      ``nu_lr``·K·⌈N/B⌉·(J_c − b) per iteration (N the agent's rows, B ``minibatch_size``). "per_iteration": once,
      before the agent's epochs, the literal reading of Algorithm 1 line 9.
    * ``cost_limit``: the safety bound b (per agent and per cost index; a scalar is broadcast), from the base.

    Why ν steps per minibatch by default. Table 5's ν lr 5e-5 is a step size whose schedule the paper does not
    give. Read literally (one step per iteration, J_c in episode-cost units), ν cannot enforce the bound: it moves
    by 5e-5 per unit of cost overshoot per iteration. On SafeAnt2x4-v0 (limit 50) the cost ran at 2–6× the limit
    from 280k steps on while ν had reached only 0.036 at 400k (issue 13); to reach 0.5 it would need a summed
    overshoot of 10,000 cost units. The paper's implementation is the MACPO code base (Appendix J: "most
    hyperparameters remain consistent"). That code steps its Lagrange multiplier (MAPPO-L's λ) after every
    minibatch of the policy's epochs, with rates of 1e-5 to 1e-7; a rate of that size only makes sense per
    minibatch. With Table 5's B = 256 and K = 5 and our 10,000-step iteration, the per-minibatch schedule gives
    at most 5e-5·5·40 = 0.01 per unit of overshoot per iteration: FOCOPS' own once-per-iteration ν lr (0.01,
    Zhang et al. 2020, reference notes B6). KL early stopping cuts it when the agent's epochs stop early.

    Defaults and their sources:

    * Table 5 (Appendix J), Safe MAMuJoCo column of MAFOCOPS: ``kl_threshold`` 0.0125, ``focops_lambda`` 2.2,
      ``nu_max`` 1.3, ``nu_lr`` 0.00005, ``minibatch_size`` 256, ``num_epochs`` 5 ("update numbers").
      ``preset("safe_maig")`` switches to the Safe MAIG column (0.01, 2, 1.4, 0.001, 8192, 3); ``PRESETS`` has both.
    * ``nu_init`` 0.0: Table 5 gives none; the FOCOPS reference code starts ν at 0 (reference notes §B6).
    * ``critic_loss`` "mse": Sec. 4.3 and Algorithm 1 line 12 fit the value networks by MSE.
    * ``critic_update`` "with_each_agent": Algorithm 1 line 12 updates the value networks inside each agent's epochs,
      on every minibatch (as the MACPO and FOCOPS code); "before_agents" trains them once before the agent loop.
      Measured on SafeMAToy-v0 (``benchmarks/critic_update.py``: 3 seeds × 20 iterations of 1,000 steps, the toy
      settings of the learning tests, deterministic evaluation of 20 episodes): return 17.57 vs 17.47 per agent and
      cost 4.23 vs 4.00 (limit 5) for "with_each_agent" vs "before_agents", well within the spread over seeds
      (16.7–18.7 and 2.8–6.1), so the default follows the paper.
    * ``entropy_coeff`` 0.0: Eq. 11 has no entropy term (a positive value adds ``−c·H[π]`` to the loss).
    * ``lr`` 5e-4 and ``critic_lr`` 5e-4 are the sequential base's defaults, from HARL ``happo.yaml`` and SafePO's
      MAMuJoCo block (``actor_lr`` = ``critic_lr`` = 5e-4, reference notes B4/B5), and the initial σ = e^−0.5 ≈ 0.61
      (``init_log_std`` −0.5) is the FOCOPS reference code's log-std init (reference notes B6). They are **not** the
      MACPO code base's values, which the paper says it kept (Appendix J: "most hyperparameters remain consistent
      with their original values"): lr 9e-5, critic_lr 5e-3 and σ_0 = 0.5·sigmoid(1) ≈ 0.37 (MACPO/MAPPO-L
      ``train_mujoco.sh``); ``preset("macpo_code_base")`` sets those three. ``gamma``, GAE, ``grad_clip`` (10),
      the network sizes ([128, 128]) and the rollout are the base's (see :class:`SequentialConfig`).
      ``clip_param`` is unused (FOCOPS has no ratio clipping).
    """

    target_kl = _alias("kl_threshold", "The base's name of δ (early-stop KL bound): the same field as kl_threshold.")
    dual_lr = _alias("nu_lr", "The base's name of α (ν's step size): the same field as nu_lr.")
    dual_init = _alias("nu_init", "The base's name of ν's initial value: the same field as nu_init.")
    dual_max = _alias("nu_max", "The base's name of ν_max: the same field as nu_max.")
    nu_schedule = _alias("dual_schedule", "When Eq. 10 steps: the same field as the base's dual_schedule.")

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MAFOCOPS)
        self.sequential = True
        self.critic_loss = "mse"
        self.critic_update = "with_each_agent"
        self.entropy_coeff = 0.0
        self.dual_rule = "projected_gradient"
        self.dual_schedule = "per_minibatch"
        self.nu_init = 0.0
        self.focops_lambda = 2.2
        for key, value in PRESETS["safe_mamujoco"].items():
            setattr(self, key, value)

    def training(
        self,
        *,
        focops_lambda: float = NotProvided,
        kl_threshold: float = NotProvided,
        nu_init: float = NotProvided,
        nu_max: float = NotProvided,
        nu_lr: float = NotProvided,
        nu_schedule: str = NotProvided,
        **kwargs: Any,
    ) -> MAFOCOPSConfig:
        """Sets the MAFOCOPS fields (class docstring); the base's and PPO's options pass through ``kwargs``.

        Args:
            focops_lambda: Temperature λ > 0.
            kl_threshold: δ > 0 (indicator bound and early-stop bound).
            nu_init: Initial ν in [0, nu_max].
            nu_max: Upper bound ν_max >= nu_init (``float("inf")`` for none).
            nu_lr: Step size α >= 0 of Eq. 10.
            nu_schedule: "per_minibatch" (default) or "per_iteration" (the literal reading of Algorithm 1 line 9).
            **kwargs: Options of :meth:`SequentialConfig.training` (``cost_limit``, ``num_epochs``,
                ``minibatch_size``, ``lr``, ...).

        Returns:
            This config.
        """
        super().training(**kwargs)
        for key, value in dict(
            focops_lambda=focops_lambda,
            kl_threshold=kl_threshold,
            nu_init=nu_init,
            nu_max=nu_max,
            nu_lr=nu_lr,
            nu_schedule=nu_schedule,
        ).items():
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def preset(self, name: str) -> MAFOCOPSConfig:
        """Applies a column of the paper's Table 5, or the MACPO code base's learning rates and initial σ.

        Names: ``"safe_mamujoco"`` (the default), ``"safe_maig"``, ``"macpo_code_base"`` (see :data:`PRESETS`;
        combinable with either column).

        Example: ``MAFOCOPSConfig().preset("safe_maig").environment("SafeShadowHandOver-v0")``.

        Args:
            name: A key of :data:`PRESETS`.

        Returns:
            This config, with ``kl_threshold``, ``focops_lambda``, ``nu_max``, ``nu_lr``, ``minibatch_size`` and
            ``num_epochs`` set from the table (``"macpo_code_base"``: ``lr``, ``critic_lr``, ``init_log_std``).

        Raises:
            ValueError: For an unknown name (the message lists the known ones).
        """
        if name not in PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {name!r}.")
        return self.training(**PRESETS[name])

    def _validate_safe_fields(self) -> None:
        """Checks the MAFOCOPS fields (messages name them), then the base's fields."""

        def number(name: str, minimum: float, *, strict: bool = False, allow_inf: bool = False) -> float:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
            ok = ok and (allow_inf or math.isfinite(value)) and (value > minimum if strict else value >= minimum)
            if not ok:
                bound = f"{'>' if strict else '>='} {minimum}"
                kind = "a number" if allow_inf else "a finite number"
                raise ValueError(f"`{name}` must be {kind} {bound}, got {value!r}.")
            return float(value)

        number("focops_lambda", 0.0, strict=True)
        number("kl_threshold", 0.0, strict=True)
        number("nu_lr", 0.0)
        nu_init = number("nu_init", 0.0)
        number("nu_max", nu_init, allow_inf=True)
        check_choice(self, "nu_schedule", DUAL_SCHEDULES)  # the base checks it again as `dual_schedule`
        super()._validate_safe_fields()

    def get_default_learner_class(self) -> type:
        """The MAFOCOPS learner."""
        from rllib_safe.algorithms.mafocops.torch.mafocops_torch_learner import MAFOCOPSTorchLearner

        return MAFOCOPSTorchLearner


class MAFOCOPS(SequentialAlgorithm):
    """MAFOCOPS as an RLlib Algorithm (to be registered as ``"MAFOCOPS"``)."""

    @classmethod
    def get_default_config(cls) -> MAFOCOPSConfig:
        """The default config."""
        return MAFOCOPSConfig()


__all__ = ["MAFOCOPS", "MAFOCOPSConfig", "PRESETS"]
