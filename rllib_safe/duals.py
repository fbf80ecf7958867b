"""Dual variables (Lagrange multipliers) of constrained RL, behind one small interface.

Every constrained algorithm of rllib_safe keeps one multiplier per cost index ``j`` (λ of MAPPO-Lagrangian, ν of
MAFOCOPS, the λ of Constrained-HASAC / WCMASAC) and moves it once per fresh measurement of the cost ``J_c`` (the
exact, undiscounted mean episode cost of the iteration for the on-policy algorithms; none when no episode ended)
and the cost limit ``d`` (the ``"macpo"`` rule instead steps after every minibatch, as the MACPO code)::

    dual = make_dual("projected_gradient", lr=0.01, upper=2.0)      # ν of FOCOPS / MAFOCOPS
    nu = dual.update(episode_cost=31.2, cost_limit=25.0)             # moves up: the cost is above the limit
    learner_state["nu"] = dual.state_dict()                          # exact, goes into every checkpoint

All rules share the sign convention of the dual ascent on ``min_π max_{λ≥0} −J_r(π) + λ·(J_c(π) − d)``: the
multiplier moves **up** when ``J_c > d`` (the constraint is violated) and **down** otherwise, and it is kept in
``[lower, upper]`` (``lower = 0``, ``upper = +inf`` by default; ``upper = ν_max`` for MAFOCOPS).

Rules (``make_dual(rule, **kwargs)``):

* ``"projected_gradient"`` (:class:`ProjectedGradientDual`): ``λ ← clip(λ + lr·(J_c − d), lower, upper)``. This is
  MAFOCOPS Eq. 10 (Zhao et al., seed paper ``000``: ``ν_j ← proj_[0, ν_max][ν_j − α(b_j − J_j)]``, with
  ``b_j = d`` the safety bound and ``α = lr``) and the FOCOPS original (Zhang et al. 2020, ``ν_lr = 0.01``,
  ``ν_max = 2``, once per iteration). The MACPO code's MAPPO-Lagrangian rule is a different one: ``"macpo"``.
* ``"adam"`` (:class:`AdamDual`): one Adam step on the loss ``−λ·(J_c − d)`` (gradient ``−(J_c − d)``), then the
  projection; the OmniSafe / SafePO ``Lagrange`` module (``lambda_lr = 0.035``, ``lagrangian_multiplier_init =
  0.001``, Adam, clamped to ``[0, lagrangian_upper_bound]``). SafePO issue #69 discusses how it differs from the
  direct rule above.
* ``"pid"`` (:class:`PIDDual`): the PID Lagrangian of Stooke, Achiam and Abbeel, "Responsive Safety in
  Reinforcement Learning by PID Lagrangian Methods" (ICML 2020), Algorithm 2, with the optional exponential
  moving averages of OmniSafe's ``PIDLagrangian`` (CPPO-PID).
* ``"macpo"`` (:class:`MACPOLagrangeDual`): the MAPPO-Lagrangian rule of the MACPO code (and SafePO's
  ``mappolag.py``), stepped after **every minibatch** with that minibatch's cost surrogate:
  ``λ ← max(0, λ + lr·[(J_c − d)·(1 − γ) + mean(r·Â_c)])``. Its :meth:`~MACPOLagrangeDual.update` takes the
  surrogate; :attr:`DualVariable.per_minibatch` tells the learners to call it per minibatch.

Costs and limits are scalars (one constraint) or length-``m`` vectors; a scalar limit is broadcast over the ``m``
multipliers. Everything is numpy ``float64``; :meth:`DualVariable.state_dict` holds plain Python numbers and
round-trips exactly (multipliers, optimiser moments, PID integral and memories, the step counter).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "AdamDual",
    "DualVariable",
    "MACPOLagrangeDual",
    "PIDDual",
    "ProjectedGradientDual",
    "RULES",
    "dual_from_state_dict",
    "make_dual",
]

ArrayLike = float | int | np.ndarray | list[float] | tuple[float, ...]


def _check_real(name: str, value: Any, *, minimum: float | None = None, allow_inf: bool = False) -> float:
    """Returns ``value`` as a float, or raises ``ValueError`` naming ``name`` and what is allowed."""
    allowed = "a finite number" if not allow_inf else "a number (not NaN)"
    if minimum is not None:
        allowed += f" >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")
    x = float(value)
    if math.isnan(x) or (math.isinf(x) and not allow_inf) or (minimum is not None and x < minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")
    return x


def _check_fraction(name: str, value: Any) -> float:
    """Returns ``value`` as a float in ``[0, 1)``, or raises ``ValueError`` naming ``name``."""
    x = _check_real(name, value, minimum=0.0)
    if x >= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return x


def _as_vector(name: str, value: Any, num_costs: int, *, scalar_ok: bool) -> np.ndarray:
    """Converts a scalar or a length-``num_costs`` vector into a finite ``float64`` vector of that length."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number or a length-{num_costs} vector of numbers, got {value!r}.") from e
    if arr.ndim == 0 or (arr.ndim == 1 and arr.shape[0] == 1 and num_costs == 1):
        if arr.ndim == 0 and not scalar_ok and num_costs > 1:
            raise ValueError(
                f"{name} must be a length-{num_costs} vector (one entry per cost index), got the scalar {value!r}."
            )
        arr = np.full(num_costs, float(arr.reshape(())), dtype=np.float64)
    elif arr.shape != (num_costs,):
        raise ValueError(f"{name} must be a number or a length-{num_costs} vector, got shape {arr.shape}: {value!r}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or infinity), got {value!r}.")
    return arr


def _floats(x: np.ndarray) -> list[float]:
    """A ``float64`` vector as a list of Python floats (exact)."""
    return [float(v) for v in x]


class DualVariable:
    """A vector of ``m`` Lagrange multipliers kept in ``[lower, upper]``, updated from costs and limits.

    Subclasses implement :meth:`_step` (the unprojected new multipliers) and, when they keep state beyond the
    multipliers, :meth:`_extra_state` / :meth:`_load_extra_state` and :meth:`config`.

    Args:
        init: Initial multipliers: a number, or a length-``num_costs`` vector, inside ``[lower, upper]``.
        lower: Lower bound of every multiplier (``>= 0``, finite).
        upper: Upper bound of every multiplier (``>= lower``; ``math.inf`` for none), e.g. ν_max of MAFOCOPS.
        num_costs: Number of constraints ``m`` (one multiplier each).

    Raises:
        ValueError: If an argument is invalid; the message names the argument and the allowed values.
    """

    #: The rule name under which :func:`make_dual` builds this class.
    rule: ClassVar[str] = ""
    #: False: one :meth:`update` per measured J_c (per iteration). True: one per minibatch (see MACPOLagrangeDual).
    per_minibatch: ClassVar[bool] = False

    def __init__(self, *, init: ArrayLike = 0.0, lower: float = 0.0, upper: float = math.inf, num_costs: int = 1):
        if isinstance(num_costs, bool) or not isinstance(num_costs, (int, np.integer)) or num_costs < 1:
            raise ValueError(f"num_costs must be an integer >= 1, got {num_costs!r}.")
        self.num_costs = int(num_costs)
        self.lower = _check_real("lower", lower, minimum=0.0)
        self.upper = _check_real("upper", upper, allow_inf=True)
        if self.upper < self.lower:
            raise ValueError(f"upper must be >= lower, got lower={lower!r} and upper={upper!r}.")
        init_vec = _as_vector("init", init, self.num_costs, scalar_ok=True)
        if np.any(init_vec < self.lower) or np.any(init_vec > self.upper):
            raise ValueError(f"init must lie in [lower, upper] = [{self.lower}, {self.upper}], got {init!r}.")
        self._init = init_vec.copy()
        self._value = init_vec
        #: Number of :meth:`update` calls so far (Adam's ``t``).
        self.num_steps = 0

    # ----------------------------------------------------------------------------------------------------------
    # Public API.
    # ----------------------------------------------------------------------------------------------------------
    @property
    def value(self) -> float | np.ndarray:
        """The current multipliers: a ``float`` when ``num_costs == 1``, else a ``float64`` vector (a copy)."""
        if self.num_costs == 1:
            return float(self._value[0])
        return self._value.copy()

    @property
    def values(self) -> np.ndarray:
        """The current multipliers as a length-``num_costs`` ``float64`` vector (a copy), whatever ``num_costs``."""
        return self._value.copy()

    def update(self, episode_cost: ArrayLike, cost_limit: ArrayLike) -> float | np.ndarray:
        """Moves the multipliers from one cost measurement and returns the new :attr:`value`.

        Args:
            episode_cost: The measured cost ``J_c``: a number when ``num_costs == 1``, else a length-``num_costs``
                vector (for the on-policy algorithms, the mean episode cost of the iteration).
            cost_limit: The limit ``d``: a number (broadcast over all cost indices) or a length-``num_costs``
                vector.

        Returns:
            The new multipliers, as :attr:`value`.

        Raises:
            ValueError: If the cost or the limit is not finite or has the wrong length.
        """
        cost = _as_vector("episode_cost", episode_cost, self.num_costs, scalar_ok=False)
        limit = _as_vector("cost_limit", cost_limit, self.num_costs, scalar_ok=True)
        self.num_steps += 1
        raw = self._step(cost, cost - limit)
        self._value = np.clip(raw, self.lower, self.upper)
        return self.value

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this dual with :func:`make_dual` (``init`` as a list)."""
        return {"init": _floats(self._init), "lower": self.lower, "upper": self.upper, "num_costs": self.num_costs}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: rule, config, multipliers, step counter, optimiser state.

        Returns:
            A dict of plain Python values (str, int, float, lists of floats, a nested config dict).
        """
        return {
            "rule": self.rule,
            "config": self.config(),
            "num_costs": self.num_costs,
            "num_steps": self.num_steps,
            "value": _floats(self._value),
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` saved (the hyperparameters of this object are kept).

        Args:
            state: A dict from :meth:`state_dict` of a dual with the same rule and ``num_costs``.

        Raises:
            ValueError: If the rule or ``num_costs`` differ, or an entry is missing or malformed.
        """
        if state.get("rule") != self.rule:
            raise ValueError(
                f"state_dict rule must be {self.rule!r} to load into {type(self).__name__}, got {state.get('rule')!r}."
            )
        if state.get("num_costs") != self.num_costs:
            raise ValueError(f"state_dict num_costs must be {self.num_costs}, got {state.get('num_costs')!r}.")
        try:
            value = _as_vector("state_dict value", state["value"], self.num_costs, scalar_ok=False)
            num_steps = int(state["num_steps"])
        except KeyError as e:
            raise ValueError(f"state_dict lacks the entry {e.args[0]!r}.") from e
        if num_steps < 0:
            raise ValueError(f"state_dict num_steps must be an integer >= 0, got {state['num_steps']!r}.")
        self._load_extra_state(state)
        self._value = value
        self.num_steps = num_steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value!r}, num_steps={self.num_steps}, config={self.config()!r})"

    # ----------------------------------------------------------------------------------------------------------
    # Hooks.
    # ----------------------------------------------------------------------------------------------------------
    def _step(self, cost: np.ndarray, violation: np.ndarray) -> np.ndarray:
        """Returns the unprojected new multipliers (``num_steps`` already counts this update).

        Args:
            cost: ``J_c``, a ``float64`` vector of length ``num_costs``.
            violation: ``J_c − d``, same shape.
        """
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        """Rule-specific state entries (plain Python values)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restores the entries of :meth:`_extra_state`; raises ``ValueError`` if one is missing or malformed."""

    def _state_vector(self, state: dict[str, Any], key: str) -> np.ndarray:
        """Reads a length-``num_costs`` vector entry of a state dict."""
        if key not in state:
            raise ValueError(f"state_dict lacks the entry {key!r} of rule {self.rule!r}.")
        return _as_vector(f"state_dict {key}", state[key], self.num_costs, scalar_ok=False)


class ProjectedGradientDual(DualVariable):
    """Projected (sub)gradient ascent: ``λ ← clip(λ + lr·(J_c − d), lower, upper)``.

    MAFOCOPS Eq. 10 writes it as ``ν_j ← proj_[0, ν_max][ν_j − α(b_j − J_j(π_k))]`` (the same rule with
    ``α = lr``, ``b_j = d``, ``upper = ν_max``); FOCOPS (Zhang et al. 2020) uses it too, once per iteration.

    Args:
        lr: Step size ``α >= 0`` (default 0.01: FOCOPS ``ν_lr``, reference notes §B6).
        init: Initial multipliers (default 0: FOCOPS ``ν`` init).
        lower: Lower bound (default 0).
        upper: Upper bound (default ``+inf``; MAFOCOPS / FOCOPS use ``ν_max``, FOCOPS default 2.0).
        num_costs: Number of constraints.
    """

    rule = "projected_gradient"

    def __init__(
        self,
        lr: float = 0.01,
        *,
        init: ArrayLike = 0.0,
        lower: float = 0.0,
        upper: float = math.inf,
        num_costs: int = 1,
    ):
        super().__init__(init=init, lower=lower, upper=upper, num_costs=num_costs)
        self.lr = _check_real("lr", lr, minimum=0.0)

    def config(self) -> dict[str, Any]:
        """See :meth:`DualVariable.config`."""
        return {"lr": self.lr, **super().config()}

    def _step(self, cost: np.ndarray, violation: np.ndarray) -> np.ndarray:
        return self._value + self.lr * violation


class AdamDual(DualVariable):
    """Adam on the multiplier loss ``−λ·(J_c − d)``, then the projection onto ``[lower, upper]``.

    The OmniSafe / SafePO ``Lagrange`` module: a torch parameter with ``torch.optim.Adam`` on that loss, clamped
    after each step. Here the same arithmetic as ``torch.optim.Adam`` (no weight decay, no amsgrad) runs in numpy
    ``float64``: with ``g = −(J_c − d)`` and step ``t``::

        m ← β1·m + (1 − β1)·g            v ← β2·v + (1 − β2)·g²
        λ ← clip(λ − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps), lower, upper)

    The moments keep running while the multiplier sits on a bound (as in OmniSafe).

    Args:
        lr: Adam step size ``>= 0`` (default 0.035: OmniSafe ``lambda_lr``, SafePO FOCOPS ``lr``).
        betas: Adam's ``(β1, β2)``, each in ``[0, 1)`` (default torch's ``(0.9, 0.999)``).
        eps: Adam's ``eps > 0`` (default torch's ``1e-8``).
        init: Initial multipliers (default 0.001: OmniSafe ``lagrangian_multiplier_init``).
        lower: Lower bound (default 0).
        upper: Upper bound (default ``+inf``; OmniSafe ``lagrangian_upper_bound``, SafePO FOCOPS ν_max 2.0).
        num_costs: Number of constraints.
    """

    rule = "adam"

    def __init__(
        self,
        lr: float = 0.035,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        init: ArrayLike = 0.001,
        lower: float = 0.0,
        upper: float = math.inf,
        num_costs: int = 1,
    ):
        super().__init__(init=init, lower=lower, upper=upper, num_costs=num_costs)
        self.lr = _check_real("lr", lr, minimum=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1), got {betas!r}.")
        self.betas = (_check_fraction("betas[0]", betas[0]), _check_fraction("betas[1]", betas[1]))
        self.eps = _check_real("eps", eps, minimum=0.0)
        if self.eps <= 0.0:
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}.")
        self._m = np.zeros(self.num_costs)
        self._v = np.zeros(self.num_costs)

    def config(self) -> dict[str, Any]:
        """See :meth:`DualVariable.config`."""
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, **super().config()}

    def _step(self, cost: np.ndarray, violation: np.ndarray) -> np.ndarray:
        beta1, beta2 = self.betas
        grad = -violation
        self._m = beta1 * self._m + (1.0 - beta1) * grad
        self._v = beta2 * self._v + (1.0 - beta2) * grad * grad
        step_size = self.lr / (1.0 - beta1**self.num_steps)
        denom = np.sqrt(self._v) / math.sqrt(1.0 - beta2**self.num_steps) + self.eps
        return self._value - step_size * self._m / denom

    def _extra_state(self) -> dict[str, Any]:
        return {"exp_avg": _floats(self._m), "exp_avg_sq": _floats(self._v)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        m = self._state_vector(state, "exp_avg")
        v = self._state_vector(state, "exp_avg_sq")
        if np.any(v < 0):
            raise ValueError(f"state_dict exp_avg_sq must be >= 0, got {state['exp_avg_sq']!r}.")
        self._m, self._v = m, v


class PIDDual(DualVariable):
    """PID Lagrangian (Stooke, Achiam and Abbeel, ICML 2020, Algorithm 2).

    With the error ``e = J_c − d`` of each update::

        I  ← max(0, I + K_i·e)                         (integral; starts at ``init``)
        ê  ← α_p·ê + (1 − α_p)·e                       (proportional error; ``α_p = 0``: ê = e)
        Ĵ  ← α_d·Ĵ + (1 − α_d)·J_c                     (cost for the derivative; ``α_d = 0``: Ĵ = J_c)
        Δ  ← max(0, Ĵ − Ĵ_prev)                        (only cost increases push; ``Ĵ_prev`` starts at 0)
        λ  = clip(K_p·ê + I + K_d·Δ, lower, upper)

    With ``α_p = α_d = 0`` and ``init = 0`` this is exactly Stooke et al.'s Algorithm 2 (``J_C,prev ← 0`` and
    ``I ← 0`` at the start, ``K_i`` folded into the integral as in OmniSafe's ``PIDLagrangian``, which starts its
    integral at ``lagrangian_multiplier_init`` and smooths with ``α_p = α_d = 0.95``). The derivative term uses
    the previous update only (OmniSafe's ``pid_d_delay = 1``).

    Args:
        kp: Proportional gain ``K_p >= 0`` (default 0.1: OmniSafe CPPO-PID ``pid_kp``).
        ki: Integral gain ``K_i >= 0`` (default 0.01: OmniSafe ``pid_ki``).
        kd: Derivative gain ``K_d >= 0`` (default 0.01: OmniSafe ``pid_kd``).
        p_ema_alpha: EMA factor ``α_p`` in ``[0, 1)`` of the proportional error (default 0: none, as Stooke).
        d_ema_alpha: EMA factor ``α_d`` in ``[0, 1)`` of the derivative's cost (default 0: none, as Stooke).
        init: Initial multipliers and integral (default 0).
        lower: Lower bound (default 0).
        upper: Upper bound (default ``+inf``).
        num_costs: Number of constraints.
    """

    rule = "pid"

    def __init__(
        self,
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.01,
        p_ema_alpha: float = 0.0,
        d_ema_alpha: float = 0.0,
        *,
        init: ArrayLike = 0.0,
        lower: float = 0.0,
        upper: float = math.inf,
        num_costs: int = 1,
    ):
        super().__init__(init=init, lower=lower, upper=upper, num_costs=num_costs)
        self.kp = _check_real("kp", kp, minimum=0.0)
        self.ki = _check_real("ki", ki, minimum=0.0)
        self.kd = _check_real("kd", kd, minimum=0.0)
        self.p_ema_alpha = _check_fraction("p_ema_alpha", p_ema_alpha)
        self.d_ema_alpha = _check_fraction("d_ema_alpha", d_ema_alpha)
        self._integral = self._init.copy()
        self._p_err = np.zeros(self.num_costs)
        self._d_cost = np.zeros(self.num_costs)

    def config(self) -> dict[str, Any]:
        """See :meth:`DualVariable.config`."""
        return {
            "kp": self.kp,
            "ki": self.ki,
            "kd": self.kd,
            "p_ema_alpha": self.p_ema_alpha,
            "d_ema_alpha": self.d_ema_alpha,
            **super().config(),
        }

    def _step(self, cost: np.ndarray, violation: np.ndarray) -> np.ndarray:
        self._integral = np.maximum(0.0, self._integral + self.ki * violation)
        self._p_err = self.p_ema_alpha * self._p_err + (1.0 - self.p_ema_alpha) * violation
        d_cost = self.d_ema_alpha * self._d_cost + (1.0 - self.d_ema_alpha) * cost
        derivative = np.maximum(0.0, d_cost - self._d_cost)
        self._d_cost = d_cost
        return self.kp * self._p_err + self._integral + self.kd * derivative

    def _extra_state(self) -> dict[str, Any]:
        return {
            "integral": _floats(self._integral),
            "p_error": _floats(self._p_err),
            "d_cost": _floats(self._d_cost),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        integral = self._state_vector(state, "integral")
        p_err = self._state_vector(state, "p_error")
        d_cost = self._state_vector(state, "d_cost")
        if np.any(integral < 0):
            raise ValueError(f"state_dict integral must be >= 0, got {state['integral']!r}.")
        self._integral, self._p_err, self._d_cost = integral, p_err, d_cost


class MACPOLagrangeDual(DualVariable):
    """The MACPO code's MAPPO-Lagrangian multiplier rule, one step per minibatch.

    The MACPO code (``MAPPO-Lagrangian/mappo_lagrangian/algorithms/r_mappo/r_mappo_lagr.py``, ``ppo_update``) and
    SafePO (``safepo/multi_agent/mappolag.py``) move λ after each minibatch's actor step by
    ``λ ← ReLU(λ − lagrangian_coef_rate · Δ)`` with ``Δ = −mean((J_c − d)(1 − γ) + r·Â_c)``, i.e.::

        λ ← max(0, λ + lr·[(J_c − d)·constraint_scale + mean_B(r·Â_c)])

    where J_c is the last known mean episode cost (``aver_episode_costs``), ``constraint_scale = 1 − γ``, and
    ``mean_B(r·Â_c)`` is the minibatch mean of the probability ratio (of the policy before that minibatch's step,
    no HAPPO factor, no clipping) times the (standardised) cost advantage. Defaults: ``lr`` 1e-7 and ``init`` 0.78,
    the MACPO code's ``lagrangian_coef_rate`` and ``lamda_lagr`` (``scripts/train_mujoco.sh``; later versions of the
    script use 1e-6, SafePO 1e-5).

    Args:
        lr: Step size ``>= 0`` (``lagrangian_coef_rate``).
        constraint_scale: Factor ``> 0`` of ``J_c − d`` (default 0.01 = 1 − γ for γ = 0.99).
        init: Initial multipliers (default 0.78).
        lower: Lower bound (default 0: the ReLU).
        upper: Upper bound (default ``+inf``).
        num_costs: Number of constraints.
    """

    rule = "macpo"
    per_minibatch = True

    def __init__(
        self,
        lr: float = 1e-7,
        constraint_scale: float = 0.01,
        *,
        init: ArrayLike = 0.78,
        lower: float = 0.0,
        upper: float = math.inf,
        num_costs: int = 1,
    ):
        super().__init__(init=init, lower=lower, upper=upper, num_costs=num_costs)
        self.lr = _check_real("lr", lr, minimum=0.0)
        self.constraint_scale = _check_real("constraint_scale", constraint_scale, minimum=0.0)
        if self.constraint_scale <= 0.0:
            raise ValueError(f"constraint_scale must be a finite number > 0, got {constraint_scale!r}.")
        self._surrogate = np.zeros(self.num_costs)

    def update(  # type: ignore[override]
        self, episode_cost: ArrayLike, cost_limit: ArrayLike, *, cost_surrogate: ArrayLike
    ) -> float | np.ndarray:
        """One minibatch step; see the class docstring.

        Args:
            episode_cost: The last known mean episode cost J_c (a number, or one per cost index).
            cost_limit: The limit d (broadcast like :meth:`DualVariable.update`).
            cost_surrogate: ``mean_B(r·Â_c)`` of the minibatch (a number, or one per cost index).

        Returns:
            The new multipliers, as :attr:`value`.
        """
        self._surrogate = _as_vector("cost_surrogate", cost_surrogate, self.num_costs, scalar_ok=False)
        return super().update(episode_cost, cost_limit)

    def config(self) -> dict[str, Any]:
        """See :meth:`DualVariable.config`."""
        return {"lr": self.lr, "constraint_scale": self.constraint_scale, **super().config()}

    def _step(self, cost: np.ndarray, violation: np.ndarray) -> np.ndarray:
        return self._value + self.lr * (violation * self.constraint_scale + self._surrogate)


#: Rule name -> class, for :func:`make_dual`.
RULES: dict[str, type[DualVariable]] = {
    cls.rule: cls for cls in (ProjectedGradientDual, AdamDual, PIDDual, MACPOLagrangeDual)
}


def make_dual(rule: str, **kwargs: Any) -> DualVariable:
    """Builds a dual variable by rule name.

    Args:
        rule: ``"projected_gradient"``, ``"adam"``, ``"pid"`` or ``"macpo"`` (see the module docstring).
        **kwargs: The rule's constructor arguments (see :class:`ProjectedGradientDual`, :class:`AdamDual`,
            :class:`PIDDual`, :class:`MACPOLagrangeDual`); all take ``init``, ``lower``, ``upper`` and ``num_costs``.

    Returns:
        The dual variable.

    Raises:
        ValueError: For an unknown rule or argument, or an invalid value; the message names the argument and the
            allowed values.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}.")
    cls = RULES[rule]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown argument(s) {unknown} for dual rule {rule!r}; allowed: {allowed}.")
    return cls(**kwargs)


def dual_from_state_dict(state: dict[str, Any]) -> DualVariable:
    """Rebuilds a dual variable, hyperparameters included, from :meth:`DualVariable.state_dict`.

    Args:
        state: A dict returned by :meth:`DualVariable.state_dict`.

    Returns:
        A dual that continues exactly where the saved one stopped.

    Raises:
        ValueError: If the state is malformed.
    """
    if "rule" not in state or "config" not in state:
        raise ValueError("state_dict must have the entries 'rule' and 'config' (from DualVariable.state_dict()).")
    config = dict(state["config"])
    if "betas" in config:
        config["betas"] = tuple(config["betas"])
    dual = make_dual(state["rule"], **config)
    dual.load_state_dict(state)
    return dual
