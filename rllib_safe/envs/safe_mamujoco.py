"""Safe MAMuJoCo velocity tasks (safety-gymnasium's multi-agent velocity rule on gymnasium-robotics MaMuJoCo v1).

The cost rule and its thresholds are those of safety-gymnasium's ``SafeMAEnv``
(``safety_gymnasium/tasks/safe_multi_agent/.../safe_mujoco_multi.py``, Apache-2.0, table ``TASK_VELCITY_THRESHOLD``):
every step, the team cost is ``1`` when the robot's planar speed ``sqrt(vx² + vy²)`` (Swimmer: ``vx`` alone) exceeds
the task's threshold, else ``0``; every agent receives it. ``vx``/``vy`` are the torso velocities that Gymnasium's
MuJoCo ``*-v5`` environments report (position difference over one control step). The task names are the ones SafePO
users know (``safepo/utils/config.py``); safety-gymnasium itself registers no such ids. safety-gymnasium is not a
dependency: its pins conflict with Ray 2.60 (see DESIGN.md), and its multi-agent velocity tasks are this rule alone.

The robot, its agent partition and its local-observation factorization come from MaMuJoCo v1. For speed, a step
drives the single-agent ``*-v5`` simulation directly and gathers every agent's local observation from the global
state with MaMuJoCo's precomputed index arrays (``obs_i = state[idx_i]``, identical to MaMuJoCo's own ``_get_obs``,
except that Hopper-v5 and Walker2d-v5 clip joint velocities to [-10, 10] in that state, so local observations do too,
where MaMuJoCo's ``build_obs`` reads the raw ``qvel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rllib_safe.envs.base import SafeMultiAgentEnv, check_int, check_mujoco_stable

#: Default limit on the expected episode cost of the velocity tasks: SafePO's multi-agent CLI default
#: (``--cost-limit 25.0`` in ``safepo/utils/config.py``), also OmniSafe's velocity benchmark limit.
VELOCITY_COST_LIMIT = 25.0


@dataclass(frozen=True)
class VelocityTask:
    """One Safe MAMuJoCo velocity task.

    Attributes:
        name: The registered task name.
        scenario: The MaMuJoCo scenario (the Gymnasium ``*-v5`` robot).
        agent_conf: The MaMuJoCo agent partition.
        threshold: Speed above which a step costs 1 (safety-gymnasium ``TASK_VELCITY_THRESHOLD``, m/s).
        planar: Whether the speed is ``sqrt(vx² + vy²)`` (True) or ``vx`` alone (Swimmer).
    """

    name: str
    scenario: str
    agent_conf: str
    threshold: float
    planar: bool = True


VELOCITY_TASKS: dict[str, VelocityTask] = {
    t.name: t
    for t in (
        VelocityTask("Safety2x4AntVelocity-v0", "Ant", "2x4", 2.522),
        VelocityTask("Safety4x2AntVelocity-v0", "Ant", "4x2", 2.418),
        VelocityTask("Safety2x3HalfCheetahVelocity-v0", "HalfCheetah", "2x3", 3.227),
        VelocityTask("Safety6x1HalfCheetahVelocity-v0", "HalfCheetah", "6x1", 2.932),
        VelocityTask("Safety3x1HopperVelocity-v0", "Hopper", "3x1", 0.9613),
        VelocityTask("Safety2x3Walker2dVelocity-v0", "Walker2d", "2x3", 1.641),
        VelocityTask("Safety2x1SwimmerVelocity-v0", "Swimmer", "2x1", 0.04891, planar=False),
        VelocityTask("Safety9|8HumanoidVelocity-v0", "Humanoid", "9|8", 0.58),
    )
}


def velocity_cost(info: dict[str, Any], threshold: float, planar: bool = True) -> float:
    """The safety-gymnasium velocity cost of one step.

    Args:
        info: The step info of a Gymnasium MuJoCo ``*-v5`` env (``x_velocity``, optionally ``y_velocity``).
        threshold: The task's speed threshold.
        planar: Use ``sqrt(vx² + vy²)``; else ``vx`` alone.

    Returns:
        ``1.0`` if the speed exceeds ``threshold``, else ``0.0``.
    """
    vx = float(info["x_velocity"])
    speed = math.hypot(vx, float(info.get("y_velocity", 0.0))) if planar else vx
    return float(speed > threshold)


class MaMuJoCoRobot:
    """A MaMuJoCo robot stripped to what a fast step needs: the simulation and the agent index arrays.

    Args:
        scenario: The MaMuJoCo scenario.
        agent_conf: The agent partition (e.g. ``"2x4"``).
        agent_obsk: Graph distance of the joints each agent observes (MaMuJoCo ``agent_obsk``).
        gym_env: An optional ready single-agent MuJoCo env to factorize (MaMuJoCo's ``gym_env``); its partition
            must then come from ``agent_factorization``.
        agent_factorization: An optional explicit partition (MaMuJoCo's ``agent_factorization`` dict).
        render_mode: Gymnasium render mode of the underlying robot.
        mujoco_kwargs: Extra keyword arguments for the Gymnasium ``*-v5`` constructor.
    """

    def __init__(
        self,
        scenario: str,
        agent_conf: str | None,
        agent_obsk: int = 1,
        gym_env: gym.Env | None = None,
        agent_factorization: dict | None = None,
        render_mode: str | None = None,
        **mujoco_kwargs: Any,
    ) -> None:
        from gymnasium_robotics.envs.multiagent_mujoco.mujoco_multi import MultiAgentMujocoEnv

        ma = MultiAgentMujocoEnv(
            scenario,
            agent_conf,
            agent_obsk=agent_obsk,
            agent_factorization=agent_factorization,
            gym_env=gym_env,
            render_mode=render_mode,
            **mujoco_kwargs,
        )
        #: The single-agent MuJoCo env, without Gymnasium's wrappers (the time limit is ours).
        self.env = ma.single_agent_env.unwrapped
        self.agents: list[str] = list(ma.possible_agents)
        self.action_index = {
            aid: np.array([node.act_ids for node in part], dtype=np.int64)
            for aid, part in zip(self.agents, ma.agent_action_partitions)
        }
        self.obs_index = {aid: np.asarray(ma.observation_factorization[aid], dtype=np.int64) for aid in self.agents}
        self.action_spaces = {aid: ma.action_spaces[aid] for aid in self.agents}
        self.action_dim = int(self.env.action_space.shape[0])
        self.state_dim = int(self.env.observation_space.shape[0])

    def global_action(self, actions: dict[str, np.ndarray]) -> np.ndarray:
        """Scatters the agents' local actions into the robot's action vector."""
        a = np.empty(self.action_dim, dtype=np.float64)
        for aid, idx in self.action_index.items():
            a[idx] = actions[aid]
        return a

    def local_observations(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Gathers every agent's local observation from the global state."""
        return {aid: state[idx] for aid, idx in self.obs_index.items()}


#: Render modes of the MaMuJoCo-based tasks (headless through ``MUJOCO_GL=egl``).
RENDER_MODES = (None, "rgb_array", "depth_array")


class MaMuJoCoTask(SafeMultiAgentEnv):
    """What every MaMuJoCo-based task shares: options, the robot, the spaces and the observation assembly.

    Subclasses set ``self.spec_`` (their task entry), then call ``super().__init__(...)``, and implement
    :meth:`_build_robot`, ``_reset`` and ``_step``. Tasks with ``num_extra`` task features (e.g. an obstacle's
    position) append them to the robot's global state and to every agent's local observation.

    Args:
        task_name: The registered task name.
        obs_mode: ``"local"``: MaMuJoCo local observations within ``agent_obsk`` joints (the MACPO code's setting);
            ``"global"``: the full state plus a one-hot agent id (SafePO's setting).
        agent_obsk: Graph distance of the observed joints in ``"local"`` mode (MaMuJoCo default and MACPO: 1).
        max_episode_steps: Time limit; reaching it truncates the episode.
        cost_limit: The limit on the expected episode cost that algorithms use when their config gives none.
        default_cost_limit: The task's default for ``cost_limit``.
        render_mode: One of :data:`RENDER_MODES`.
        num_extra: Number of task features appended to the state and the local observations.
    """

    def __init__(
        self,
        task_name: str,
        *,
        obs_mode: str,
        agent_obsk: int,
        max_episode_steps: int,
        cost_limit: float | None,
        default_cost_limit: float,
        render_mode: str | None,
        num_extra: int = 0,
    ) -> None:
        super().__init__()
        self._set_episode_options(task_name, max_episode_steps, cost_limit, default_cost_limit)
        if obs_mode not in ("local", "global"):
            raise ValueError(f"obs_mode must be 'local' or 'global', got {obs_mode!r}.")
        agent_obsk = check_int("agent_obsk", agent_obsk, 0)
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}.")
        self.obs_mode, self.render_mode, self.num_extra = obs_mode, render_mode, num_extra

        self.robot = self._build_robot(agent_obsk)
        self.possible_agents = list(self.robot.agents)
        self.agents = list(self.possible_agents)
        n = len(self.possible_agents)
        self.state_dim = self.robot.state_dim + num_extra
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)
        if obs_mode == "global":
            self._one_hot = {aid: np.eye(n, dtype=np.float32)[i] for i, aid in enumerate(self.possible_agents)}
            obs_dims = {aid: self.state_dim + n for aid in self.possible_agents}
        else:
            obs_dims = {aid: len(self.robot.obs_index[aid]) + num_extra for aid in self.possible_agents}
        self.observation_spaces = {
            aid: gym.spaces.Box(-np.inf, np.inf, (obs_dims[aid],), np.float32) for aid in self.possible_agents
        }
        self.action_spaces = {
            aid: gym.spaces.Box(space.low, space.high, space.shape, np.float32)
            for aid, space in self.robot.action_spaces.items()
        }

    def _build_robot(self, agent_obsk: int) -> MaMuJoCoRobot:
        """Builds the task's robot (and scene)."""
        raise NotImplementedError

    def _observe(
        self, state64: np.ndarray, extra: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The agents' observations and the global state from the robot's ``*-v5`` observation and task features."""
        state = (state64 if extra is None else np.concatenate([state64, extra])).astype(np.float32)
        if self.obs_mode == "global":
            return {aid: np.concatenate([state, oh]) for aid, oh in self._one_hot.items()}, state
        if self.num_extra:
            extra32 = state[-self.num_extra :]
            return {aid: np.concatenate([state[idx], extra32]) for aid, idx in self.robot.obs_index.items()}, state
        return self.robot.local_observations(state), state

    def render(self) -> np.ndarray | None:
        """Renders the scene (``render_mode="rgb_array"`` returns an ``HxWx3`` image)."""
        return self.robot.env.render()

    def close(self) -> None:
        """Closes the MuJoCo renderer, if any."""
        self.robot.env.close()


class SafeMAMuJoCoVelocity(MaMuJoCoTask):
    """A Safe MAMuJoCo velocity task as an RLlib ``MultiAgentEnv``.

    Args:
        task: One of :data:`VELOCITY_TASKS` (e.g. ``"Safety2x4AntVelocity-v0"``).
        obs_mode: ``"local"`` or ``"global"`` (see :class:`MaMuJoCoTask`).
        agent_obsk: Graph distance of the observed joints in ``"local"`` mode (MaMuJoCo default and MACPO: 1).
        max_episode_steps: Time limit (default 1000 as MaMuJoCo and SafePO).
        cost_limit: Default limit for algorithms (default :data:`VELOCITY_COST_LIMIT`).
        render_mode: One of :data:`RENDER_MODES`.

    Observation, action and state spaces are ``float32`` Boxes; the global state is the single-agent ``*-v5``
    observation (``infos[agent]["state"]``, :meth:`state`).
    """

    def __init__(
        self,
        task: str = "Safety2x4AntVelocity-v0",
        obs_mode: Literal["local", "global"] = "local",
        agent_obsk: int = 1,
        max_episode_steps: int = 1000,
        cost_limit: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        if task not in VELOCITY_TASKS:
            raise ValueError(f"Unknown velocity task {task!r}; known: {sorted(VELOCITY_TASKS)}.")
        self.spec_ = VELOCITY_TASKS[task]
        super().__init__(
            task,
            obs_mode=obs_mode,
            agent_obsk=agent_obsk,
            max_episode_steps=max_episode_steps,
            cost_limit=cost_limit,
            default_cost_limit=VELOCITY_COST_LIMIT,
            render_mode=render_mode,
        )

    def _build_robot(self, agent_obsk: int) -> MaMuJoCoRobot:
        return MaMuJoCoRobot(self.spec_.scenario, self.spec_.agent_conf, agent_obsk, render_mode=self.render_mode)

    def _reset(self, seed: int | None, options: dict | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        state64, _ = self.robot.env.reset(seed=seed)
        return self._observe(state64)

    def _step(self, actions: dict[str, np.ndarray]):
        state64, reward, terminated, _, info = self.robot.env.step(self.robot.global_action(actions))
        check_mujoco_stable(self.robot.env.data, self.task_name, self._t + 1)
        obs, state = self._observe(state64)
        cost = velocity_cost(info, self.spec_.threshold, self.spec_.planar)
        return obs, state, reward, cost, terminated, {}


def task_factories() -> dict[str, Any]:
    """The registry entries of this module: task name -> constructor taking the task's keyword options."""
    return {name: _factory(name) for name in VELOCITY_TASKS}


def _factory(name: str):
    def make(**kwargs: Any) -> SafeMAMuJoCoVelocity:
        return SafeMAMuJoCoVelocity(name, **kwargs)

    return make
