"""The contract every rllib_safe task follows: a safe RLlib ``MultiAgentEnv``.

All tasks (Safe MAMuJoCo velocity, MACPO walls and obstacles, Safe ShadowHand) share one base class so that the
algorithms can rely on the same conventions:

* RLlib 2.60 multi-agent API: ``possible_agents``, ``agents``, per-agent ``observation_spaces`` / ``action_spaces``;
  ``step`` returns the 5-tuple ``(obs, rewards, terminateds, truncateds, infos)`` with ``"__all__"`` keys.
* **Costs** travel in ``infos[agent]["cost"]``: a ``float`` when the task has one constraint, a ``float32`` vector of
  length ``num_costs`` when it has several. The cost of transition ``t`` is in the info returned by step ``t``; the
  reset info carries no cost. A team cost is given to every agent (it is logged once, never summed over agents).
* **Global state** for centralized critics: ``infos[agent]["state"]`` on reset *and* on every step (the state that
  belongs to the observation returned alongside it), ``state_space`` for its space and :meth:`state` for the latest.
* **Episodes** end with ``terminated`` when the task fails (a fall, a dropped object) and with ``truncated`` only at
  the time limit; a termination on the last allowed step is a termination, never both.
* **Non-finite values** in actions, observations, the state, rewards or costs raise :class:`NonFiniteError` naming
  the task, the step and where the value was found. MuJoCo never lets a NaN reach the observations: it resets the
  simulation and counts a warning instead, so MuJoCo tasks call :func:`check_mujoco_stable` after each step.

Subclasses implement :meth:`_reset` and :meth:`_step`; the base class does the time limit, the dict assembly and the
checks, so that no task repeats them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

Cost = float | np.ndarray


class NonFiniteError(FloatingPointError):
    """A NaN or infinity reached an environment's actions, observations, state, rewards or costs."""


def all_finite(x: np.ndarray | float) -> bool:
    """Whether every entry of ``x`` is finite (fast path: a sum is finite iff no NaN/inf, barring overflow)."""
    return math.isfinite(np.sum(x)) or bool(np.isfinite(x).all())


#: MuJoCo warnings that mean the simulation diverged and MuJoCo reset it behind our back.
_MUJOCO_INSTABILITY_WARNINGS = ("mjWARN_BADQPOS", "mjWARN_BADQVEL", "mjWARN_BADQACC")


@functools.cache
def _mujoco_warning_ids() -> tuple[tuple[str, int], ...]:
    import mujoco

    return tuple((name, int(getattr(mujoco.mjtWarning, name))) for name in _MUJOCO_INSTABILITY_WARNINGS)


def check_mujoco_stable(data: Any, task_name: str, step: int) -> None:
    """Raises :class:`NonFiniteError` if MuJoCo flagged a NaN/divergent state since the last ``mj_resetData``.

    Args:
        data: The ``mujoco.MjData`` of the task.
        task_name: Task name for the message.
        step: The step that is being taken.
    """
    for name, index in _mujoco_warning_ids():
        if data.warning[index].number > 0:
            raise NonFiniteError(
                f"{task_name}: the MuJoCo simulation became non-finite at step {step} ({name}: MuJoCo reset the "
                "state); the actions or the physics diverged."
            )


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or ``ValueError`` naming the option if it is no integer ``>= minimum`` (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_number(name: str, value: Any, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` as a float, or ``ValueError`` naming the option unless it is a finite number in ``[low, high)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if not (math.isfinite(value) and low <= value < high):
        bound = f">= {low}" if high == math.inf else f"in [{low}, {high})"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return float(value)


def check_cost_limit(value: Any, num_costs: int) -> float | tuple[float, ...]:
    """A task's limit on the expected episode cost: a float for one cost, a tuple of ``num_costs`` floats for several.

    Args:
        value: A number, or (several costs) a number for all or a sequence of one number per cost, each ``>= 0``.
        num_costs: The task's number of costs ``m``.

    Raises:
        ValueError: Naming ``cost_limit``, for a negative, non-finite or non-number entry or a wrong length.
    """
    if num_costs == 1:
        return check_number("cost_limit", value)
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != num_costs:
            raise ValueError(f"cost_limit must be a number or {num_costs} numbers (one per cost), got {value!r}.")
        return tuple(check_number(f"cost_limit[{i}]", v) for i, v in enumerate(value))
    return (check_number("cost_limit", value),) * num_costs


class SafeMultiAgentEnv(MultiAgentEnv):
    """Base class of all rllib_safe tasks (see the module docstring for the contract).

    Subclasses set in their constructor: ``task_name``, ``possible_agents``, ``observation_spaces``,
    ``action_spaces``, ``state_space``, ``num_costs``, ``cost_limit`` (the task's default limit on the expected
    episode cost, with its source: a float, or a tuple of one float per cost when ``num_costs > 1``) and
    ``max_episode_steps``; ``self.np_random`` is seeded by :meth:`reset`.
    """

    task_name: str = "SafeMultiAgentEnv"
    num_costs: int = 1
    cost_limit: float | tuple[float, ...] = 25.0
    max_episode_steps: int = 1000

    def __init__(self) -> None:
        super().__init__()
        self.state_space: gym.spaces.Box | None = None
        self._t = 0
        self._state: np.ndarray | None = None

    # ----------------------------------------------------------------------------------------------------------
    # Hooks for subclasses.
    # ----------------------------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options: dict | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Resets the simulation.

        Returns:
            The per-agent observations and the global state.
        """
        raise NotImplementedError

    def _step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, float, Cost, bool, dict[str, Any]]:
        """Advances the simulation by one control step.

        Args:
            actions: One action per agent in ``possible_agents``, already checked to be finite.

        Returns:
            ``(observations, state, team_reward, team_cost, terminated, extra_info)``; ``extra_info`` entries are
            copied into every agent's info.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------------------
    # RLlib MultiAgentEnv API.
    # ----------------------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Resets the task; see :class:`SafeMultiAgentEnv` for the info layout."""
        super().reset(seed=seed)  # seeds self.np_random
        self._t = 0
        self.agents = list(self.possible_agents)
        obs, state = self._reset(seed, options)
        self._check_finite(obs, state, None, None, where="reset")
        self._state = state
        return obs, {aid: {"state": state} for aid in self.agents}

    def step(self, action_dict: dict[str, np.ndarray]) -> tuple[dict, dict, dict, dict, dict]:
        """Steps all agents at once; every agent of ``possible_agents`` must act."""
        missing = [aid for aid in self.possible_agents if aid not in action_dict]
        if missing:
            raise ValueError(f"{self.task_name}: every agent acts at every step; no action for {missing}.")
        for aid in self.possible_agents:
            if not all_finite(action_dict[aid]):
                raise NonFiniteError(
                    f"{self.task_name}: non-finite action for {aid} at step {self._t + 1}: {action_dict[aid]}"
                )
        obs, state, reward, cost, terminated, extra = self._step(action_dict)
        self._t += 1
        self._check_finite(obs, state, reward, cost, where=f"step {self._t}")
        self._state = state
        terminated = bool(terminated)
        truncated = (not terminated) and self._t >= self.max_episode_steps
        info = {"cost": cost, "state": state, **extra}
        agents = self.possible_agents
        rewards = {aid: float(reward) for aid in agents}
        terminateds = {aid: terminated for aid in agents}
        truncateds = {aid: truncated for aid in agents}
        terminateds["__all__"] = terminated
        truncateds["__all__"] = truncated
        if terminated or truncated:
            self.agents = []
        return obs, rewards, terminateds, truncateds, {aid: dict(info) for aid in agents}

    def _set_episode_options(
        self, task_name: str, max_episode_steps: Any, cost_limit: Any, default_cost_limit: float | tuple[float, ...]
    ) -> None:
        """Checks and sets the options every task has (``ValueError`` naming the option).

        Set ``num_costs`` first: with several costs, ``cost_limit`` is a number (the same limit for every cost) or
        one number per cost, and is stored as a tuple of ``num_costs`` floats.
        """
        self.task_name = task_name
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps, 1)
        limit = default_cost_limit if cost_limit is None else cost_limit
        self.cost_limit = check_cost_limit(limit, self.num_costs)

    def state(self) -> np.ndarray:
        """Returns the global state that belongs to the latest observations."""
        if self._state is None:
            raise RuntimeError(f"{self.task_name}: call reset() before state().")
        return self._state

    # ----------------------------------------------------------------------------------------------------------
    # Helpers.
    # ----------------------------------------------------------------------------------------------------------
    def _check_finite(
        self,
        obs: dict[str, np.ndarray],
        state: np.ndarray,
        reward: float | None,
        cost: Cost | None,
        *,
        where: str,
    ) -> None:
        """Raises :class:`NonFiniteError` naming the task, the step and the offending entry."""
        for aid, o in obs.items():
            if not all_finite(o):
                raise NonFiniteError(f"{self.task_name}: non-finite observation of {aid} at {where}.")
        if not all_finite(state):
            raise NonFiniteError(f"{self.task_name}: non-finite global state at {where}.")
        if reward is not None and not math.isfinite(reward):
            raise NonFiniteError(f"{self.task_name}: non-finite reward {reward} at {where}.")
        if cost is not None and not all_finite(cost):
            raise NonFiniteError(f"{self.task_name}: non-finite cost {cost} at {where}.")

    def close(self) -> None:
        """Releases simulator resources."""
