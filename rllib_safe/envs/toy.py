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

``SafeMAToy2Cost-v0`` (:class:`SafeMAToy2Cost`) is the same task with **two** costs (m = 2, for tests of several
constraints): cost 0 is the team speed cost above, cost 1 watches the first agent ("the lead", ``agent_0``) alone,
``(max(0, s_0 − τ_2) / (1 − τ_2))²`` with ``τ_2`` [0.3]; the limits are ``[d_1, d_2]`` [[5.0, 2.5]]. Both costs
go to every agent as a ``float32`` vector. The best safe team speed is ``m* = min(τ + (1 − τ)·sqrt(d_1/T),
(s_0^max + N − 1)/N)`` with ``s_0^max = τ_2 + (1 − τ_2)·sqrt(d_2/T)`` (defaults: ``s_0^max = 0.5214``,
``m* = 0.7236``, reward 18.09 as in the one-cost task; :func:`analytic_optimum_two_costs`). A symmetric team at
``m*`` costs 9.15 > 2.5 on cost 1: meeting both limits needs the lead to slow down and the others to make up for
it. Observations and the state end with the cumulative cost of each index (``[t/T, s_i, mean_{j≠i} s_j, C_t^1/T,
C_t^2/T]``).
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
#: The registered name of the two-cost variant.
TOY_2COST_TASK = "SafeMAToy2Cost-v0"
#: Default limits ``[d_1, d_2]`` of the two-cost variant (this task's own choice: with them both costs matter).
TOY_2COST_LIMITS = (5.0, 2.5)
#: Default threshold ``τ_2`` of the lead agent's own speed (cost 1 of the two-cost variant).
TOY_LEAD_SPEED_THRESHOLD = 0.3


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


def analytic_optimum_two_costs(
    num_agents: int = 2,
    max_episode_steps: int = TOY_EPISODE_STEPS,
    cost_limits: tuple[float, float] = TOY_2COST_LIMITS,
    speed_threshold: float = TOY_SPEED_THRESHOLD,
    lead_speed_threshold: float = TOY_LEAD_SPEED_THRESHOLD,
) -> dict[str, float]:
    """The two-cost task's optimal episode numbers (see the module docstring).

    Both per-step costs are convex (in the team's mean speed and in the lead's speed), so by Jensen's inequality the
    best constant speeds are optimal among all policies.

    Returns:
        ``safe_speed`` (the best team mean speed ``m*``), ``safe_reward`` (``T·m*``), ``lead_max_speed``
        (``s_0^max``, the fastest lead speed within ``d_2``) and ``symmetric_lead_cost`` (cost 1 of an episode in
        which every agent runs at ``m*``).
    """
    steps = max_episode_steps
    team = speed_threshold + (1.0 - speed_threshold) * math.sqrt(min(1.0, cost_limits[0] / steps))
    lead = lead_speed_threshold + (1.0 - lead_speed_threshold) * math.sqrt(min(1.0, cost_limits[1] / steps))
    speed = min(team, (lead + num_agents - 1) / num_agents)
    return {
        "safe_speed": speed,
        "safe_reward": steps * speed,
        "lead_max_speed": lead,
        "symmetric_lead_cost": steps * step_cost(speed, lead_speed_threshold),
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
        self._set_episode_options(self.task_name, max_episode_steps, cost_limit, TOY_COST_LIMIT)
        self.speed_threshold = check_number("speed_threshold", speed_threshold, 0.0, 1.0)

        self.possible_agents = [f"agent_{i}" for i in range(self.team_size)]
        self.agents = list(self.possible_agents)
        m = self.num_costs
        self.observation_spaces = {aid: gym.spaces.Box(0.0, 1.0, (3 + m,), np.float32) for aid in self.possible_agents}
        self.action_spaces = {aid: gym.spaces.Box(-1.0, 1.0, (1,), np.float32) for aid in self.possible_agents}
        self.state_space = gym.spaces.Box(0.0, 1.0, (self.team_size + 1 + m,), np.float32)
        self._speeds: list[float] | None = None
        self._cum_costs = [0.0] * m

    def analytic_optimum(self) -> dict[str, float]:
        """:func:`analytic_optimum` for this env's settings."""
        return analytic_optimum(self.max_episode_steps, self.cost_limit, self.speed_threshold)

    # ----------------------------------------------------------------------------------------------------------
    def _observe(self, t: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        # Plain Python floats: for a handful of agents they are several times faster than tiny numpy arrays.
        speeds = self._speeds
        n = self.team_size
        time = t / self.max_episode_steps
        cums = [min(1.0, c / self.max_episode_steps) for c in self._cum_costs]
        total = sum(speeds)
        obs = {
            aid: np.array([time, s, (total - s) / (n - 1) if n > 1 else 0.0, *cums], dtype=np.float32)
            for aid, s in zip(self.possible_agents, speeds)
        }
        return obs, np.array([time, *speeds, *cums], dtype=np.float32)

    def _reset(self, seed: int | None, options: dict | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        self._speeds = [float(v) for v in self.np_random.uniform(0.0, 1.0, self.team_size)]
        self._cum_costs = [0.0] * self.num_costs
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
        costs = self._step_costs(speeds, mean_speed)
        self._cum_costs = [c + x for c, x in zip(self._cum_costs, costs)]
        obs, state = self._observe(self._t + 1)
        cost = costs[0] if self.num_costs == 1 else np.array(costs, dtype=np.float32)
        return obs, state, mean_speed, cost, False, {"mean_speed": mean_speed}

    def _step_costs(self, speeds: list[float], mean_speed: float) -> list[float]:
        """The per-step costs, one per cost index (here: the team speed cost)."""
        return [step_cost(mean_speed, self.speed_threshold)]


class SafeMAToy2Cost(SafeMAToy):
    """The ``SafeMAToy2Cost-v0`` task: :class:`SafeMAToy` with a second cost on the lead agent's speed (m = 2).

    Args:
        num_agents: Number of agents ``N >= 1``; ``agent_0`` is the lead.
        max_episode_steps: Episode length ``T >= 1``.
        cost_limit: The limits ``[d_1, d_2]`` (a number sets both), each ``>= 0`` (default
            :data:`TOY_2COST_LIMITS`).
        speed_threshold: ``τ`` of the team speed cost (cost 0), in ``[0, 1)``.
        lead_speed_threshold: ``τ_2`` of the lead's speed cost (cost 1), in ``[0, 1)``.

    Raises:
        ValueError: If an option is invalid; the message names it.
    """

    task_name = TOY_2COST_TASK
    num_costs = 2

    def __init__(
        self,
        num_agents: int = 2,
        max_episode_steps: int = TOY_EPISODE_STEPS,
        cost_limit: float | list[float] | tuple[float, float] | None = None,
        speed_threshold: float = TOY_SPEED_THRESHOLD,
        lead_speed_threshold: float = TOY_LEAD_SPEED_THRESHOLD,
    ) -> None:
        super().__init__(num_agents, max_episode_steps, None, speed_threshold)
        self.lead_speed_threshold = check_number("lead_speed_threshold", lead_speed_threshold, 0.0, 1.0)
        if cost_limit is None:
            cost_limit = TOY_2COST_LIMITS
        elif isinstance(cost_limit, (int, float, np.integer, np.floating)) and not isinstance(cost_limit, bool):
            cost_limit = (cost_limit, cost_limit)
        if not isinstance(cost_limit, (list, tuple)) or len(cost_limit) != 2:
            raise ValueError(f"cost_limit must be a number or a pair [d_1, d_2], got {cost_limit!r}.")
        self.cost_limit = tuple(check_number(f"cost_limit[{k}]", d) for k, d in enumerate(cost_limit))

    def analytic_optimum(self) -> dict[str, float]:
        """:func:`analytic_optimum_two_costs` for this env's settings."""
        return analytic_optimum_two_costs(
            self.team_size, self.max_episode_steps, self.cost_limit, self.speed_threshold, self.lead_speed_threshold
        )

    def _step_costs(self, speeds: list[float], mean_speed: float) -> list[float]:
        """Cost 0: the team's mean speed; cost 1: the lead's (``agent_0``'s) own speed."""
        return [step_cost(mean_speed, self.speed_threshold), step_cost(speeds[0], self.lead_speed_threshold)]


def task_factories() -> dict[str, Any]:
    """The registry entries of this module: task name -> constructor taking the task's keyword options."""
    return {TOY_TASK: SafeMAToy, TOY_2COST_TASK: SafeMAToy2Cost}
