"""``SafeMAToy-v0``: a tiny constrained multi-agent task for fast learning tests (pure numpy, no simulator).

Rule (defaults in brackets): ``N`` agents [2] act for ``T`` steps [25]. Agent ``i``'s action ``a_i ∈ [-1, 1]``
(a one-dimensional ``float32`` Box; values outside are clipped) sets its speed ``s_i = (clip(a_i, -1, 1) + 1) / 2``
in ``[0, 1]``. With the team's mean speed ``m = mean_i s_i`` and the speed threshold ``τ`` [0.5], every step gives
every agent the same team reward and team cost::

    reward = m                                   cost = (max(0, m − τ) / (1 − τ))²   ∈ [0, 1]

The cost limit on the expected episode cost is ``d`` [5.0]. Going faster always pays, but above the threshold
the cost grows quadratically (zero slope at ``τ``, ``1`` at full speed), so

* the **unconstrained optimum** (all ``a_i = 1``, ``m = 1``) earns reward ``T`` and costs ``T``
  (defaults: reward 25, cost 25, five times the limit);
* the **best safe policy** runs at ``m* = τ + (1 − τ)·sqrt(min(1, d / T))`` every step, earns ``T·m*`` and costs
  exactly ``d`` (defaults: ``m* = 0.5 + 0.5·sqrt(0.2) = 0.7236068``, **reward 18.0901699**, cost 5). Because the
  cost is convex in ``m``, Jensen's inequality makes this the optimum over *all* policies (stochastic,
  time-dependent, or asymmetric among agents: only the mean speed matters), so a learning test can compare the
  expected episode reward of any learned safe policy with it;
* the policy ``a_i = 0`` (``m = 0.5``, the mean of a freshly initialised Gaussian policy) earns ``T/2`` and costs 0
  (defaults: 12.5 and 0); ``a_i = -1`` earns and costs 0.

The smooth, convex cost gives a Lagrangian method a unique interior optimum (``m = τ + (1 − τ)²/(2λ)`` for
a multiplier ``λ``) instead of the bang-bang switching of a 0/1 indicator cost, and a non-zero cost gradient as
soon as the policy's speeds exceed ``τ`` (:func:`analytic_optimum` gives the numbers for any settings).

Observations (``float32`` Box in ``[0, 1]^4``) of agent ``i`` after step ``t``:
``[t/T, s_i, mean_{j≠i} s_j, C_t/T]``, the previous speeds (own, and the mean of the others; ``0`` for a single
agent) and the cumulative episode cost ``C_t``; at reset the previous speeds are drawn uniformly from ``[0, 1)``
with the env's seeded generator and ``t = C_0 = 0``. Global state (``float32`` Box in ``[0, 1]^{N+2}``):
``[t/T, s_1, …, s_N, C_t/T]``. Episodes never terminate; they are truncated after ``T`` steps. Infos carry the
team ``"cost"`` (a float), the ``"state"`` and the team's ``"mean_speed"``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from rllib_safe.envs.base import SafeMultiAgentEnv, check_int, check_number

#: The registered task name.
TOY_TASK = "SafeMAToy-v0"
#: Default limit on the expected episode cost (this task's own choice: a fifth of the unconstrained optimum's cost).
TOY_COST_LIMIT = 5.0
#: Default episode length.
TOY_EPISODE_STEPS = 25
#: Default speed threshold ``τ`` above which steps cost.
TOY_SPEED_THRESHOLD = 0.5


def step_cost(mean_speed: float, speed_threshold: float = TOY_SPEED_THRESHOLD) -> float:
    """The per-step team cost ``(max(0, m − τ) / (1 − τ))²`` of a mean speed ``m``.

    Args:
        mean_speed: The team's mean speed ``m`` in ``[0, 1]``.
        speed_threshold: The threshold ``τ`` in ``[0, 1)``.

    Returns:
        The cost, in ``[0, 1]``.
    """
    excess = max(0.0, mean_speed - speed_threshold) / (1.0 - speed_threshold)
    return excess * excess


def analytic_optimum(
    max_episode_steps: int = TOY_EPISODE_STEPS,
    cost_limit: float = TOY_COST_LIMIT,
    speed_threshold: float = TOY_SPEED_THRESHOLD,
) -> dict[str, float]:
    """The task's optimal episode numbers (see the module docstring).

    Args:
        max_episode_steps: Episode length ``T``.
        cost_limit: The cost limit ``d``.
        speed_threshold: The threshold ``τ``.

    Returns:
        ``safe_speed`` (``m*``), ``safe_reward`` (``T·m*``, the best expected episode reward with expected episode
        cost ``<= d``), ``safe_cost`` (its episode cost), ``unconstrained_reward`` and ``unconstrained_cost``.
    """
    budget = min(1.0, cost_limit / max_episode_steps)
    speed = speed_threshold + (1.0 - speed_threshold) * math.sqrt(budget)
    return {
        "safe_speed": speed,
        "safe_reward": max_episode_steps * speed,
        "safe_cost": max_episode_steps * step_cost(speed, speed_threshold),
        "unconstrained_reward": float(max_episode_steps),
        "unconstrained_cost": float(max_episode_steps),
    }


class SafeMAToy(SafeMultiAgentEnv):
    """The ``SafeMAToy-v0`` task (rule, spaces and optimum in the module docstring).

    Args:
        num_agents: Number of agents ``N >= 1`` (ids ``"agent_0"`` … ``"agent_{N-1}"``).
        max_episode_steps: Episode length ``T >= 1``; the episode is truncated after it.
        cost_limit: Limit ``d >= 0`` on the expected episode cost that algorithms use when their config gives
            none (default :data:`TOY_COST_LIMIT`).
        speed_threshold: The threshold ``τ`` in ``[0, 1)`` (default :data:`TOY_SPEED_THRESHOLD`).

    Attributes:
        team_size: ``N`` (``num_agents`` is RLlib's count of the agents still acting in the episode).

    Raises:
        ValueError: If an option is invalid; the message names it and the allowed values.
    """

    task_name = TOY_TASK

    def __init__(
        self,
        num_agents: int = 2,
        max_episode_steps: int = TOY_EPISODE_STEPS,
        cost_limit: float | None = None,
        speed_threshold: float = TOY_SPEED_THRESHOLD,
    ) -> None:
        super().__init__()
        self.team_size = check_int("num_agents", num_agents, 1)
        self._set_episode_options("SafeMAToy-v0", max_episode_steps, cost_limit, TOY_COST_LIMIT)
        self.speed_threshold = check_number("speed_threshold", speed_threshold, 0.0, 1.0)

        self.possible_agents = [f"agent_{i}" for i in range(self.team_size)]
        self.agents = list(self.possible_agents)
        self.observation_spaces = {aid: gym.spaces.Box(0.0, 1.0, (4,), np.float32) for aid in self.possible_agents}
        self.action_spaces = {aid: gym.spaces.Box(-1.0, 1.0, (1,), np.float32) for aid in self.possible_agents}
        self.state_space = gym.spaces.Box(0.0, 1.0, (self.team_size + 2,), np.float32)
        self._speeds: list[float] | None = None
        self._cum_cost = 0.0

    def analytic_optimum(self) -> dict[str, float]:
        """:func:`analytic_optimum` for this env's settings."""
        return analytic_optimum(self.max_episode_steps, self.cost_limit, self.speed_threshold)

    # ----------------------------------------------------------------------------------------------------------
    def _observe(self, t: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        # Plain Python floats: for a handful of agents they are several times faster than tiny numpy arrays.
        speeds = self._speeds
        n = self.team_size
        time = t / self.max_episode_steps
        cum = min(1.0, self._cum_cost / self.max_episode_steps)
        total = sum(speeds)
        obs = {
            aid: np.array([time, s, (total - s) / (n - 1) if n > 1 else 0.0, cum], dtype=np.float32)
            for aid, s in zip(self.possible_agents, speeds)
        }
        return obs, np.array([time, *speeds, cum], dtype=np.float32)

    def _reset(self, seed: int | None, options: dict | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        self._speeds = [float(v) for v in self.np_random.uniform(0.0, 1.0, self.team_size)]
        self._cum_cost = 0.0
        return self._observe(0)

    def _step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, float, float, bool, dict[str, Any]]:
        if self._speeds is None or self._t >= self.max_episode_steps:
            raise RuntimeError(f"{self.task_name}: call reset() before step() (the episode has ended or not begun).")
        speeds = []
        for aid in self.possible_agents:
            a = actions[aid]
            if isinstance(a, np.ndarray) and a.shape == (1,):
                a = float(a[0])
            else:
                a = np.asarray(a, dtype=np.float64)
                if a.size != 1:
                    raise ValueError(f"{self.task_name}: the action of {aid} must hold one number, got {a!r}.")
                a = float(a.reshape(()))
            speeds.append((min(1.0, max(-1.0, a)) + 1.0) * 0.5)
        self._speeds = speeds
        mean_speed = sum(speeds) / self.team_size
        cost = step_cost(mean_speed, self.speed_threshold)
        self._cum_cost += cost
        obs, state = self._observe(self._t + 1)
        return obs, state, mean_speed, cost, False, {"mean_speed": mean_speed}


def task_factories() -> dict[str, Any]:
    """The registry entries of this module: task name -> constructor taking the task's keyword options."""
    return {TOY_TASK: SafeMAToy}
