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

Observation modes (:class:`MaMuJoCoTask`): ``"local"`` (default; MaMuJoCo's local observations, no original's
setting), ``"global"`` (raw state + one-hot id) and ``"safepo"``: exactly what SafePO's multi-agent actors see on
these tasks, the standardised Gymnasium ``*-v4`` observation plus a one-hot agent id (:func:`safepo_vector`).
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
        gym_env: An optional ready single-agent MuJoCo env to drive (MaMuJoCo's ``gym_env``); its partition must
            then come from ``agent_factorization``.
        factorize_env: The env whose observation MaMuJoCo factorizes, if not ``gym_env``: the same robot without the
            scene's extra bodies and joints (MaMuJoCo's index arrays assume that every ``qpos``/``qvel`` entry of
            the model belongs to the robot; a scene env observes only its robot, so the arrays are the same).
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
        factorize_env: gym.Env | None = None,
        **mujoco_kwargs: Any,
    ) -> None:
        from gymnasium_robotics.envs.multiagent_mujoco.mujoco_multi import MultiAgentMujocoEnv

        ma = MultiAgentMujocoEnv(
            scenario,
            agent_conf,
            agent_obsk=agent_obsk,
            agent_factorization=agent_factorization,
            gym_env=factorize_env or gym_env,
            render_mode=render_mode,
            **mujoco_kwargs,
        )
        #: The single-agent MuJoCo env, without Gymnasium's wrappers (the time limit is ours).
        self.env = (gym_env or ma.single_agent_env).unwrapped
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

#: Observation modes that reproduce an original project's observations (:meth:`MaMuJoCoTask.original_vector`).
ORIGINAL_OBS_MODES = ("safepo", "macpo")


def standardize(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """``(x - mean(x)) / (std(x) + eps)`` over the entries of one vector, in float64.

    The per-sample z-normalisation of MACPO's ``mujoco_multi.py: get_obs`` and SafePO's ``ShareEnv._get_obs``, which
    use ``eps = 0``; SafePO's ``_get_share_obs`` uses ``eps = 1e-8``.
    """
    return _standardize_rows(np.asarray(x, dtype=np.float64)[None], eps)[0]


def _standardize_rows(rows: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """:func:`standardize` of every row of a 2-D float64 array.

    ``np.mean``/``np.std`` written out: faster on short vectors, equal up to rounding.
    """
    centred = rows - (rows.sum(axis=1) / rows.shape[1])[:, None]
    std = np.sqrt(np.einsum("ij,ij->i", centred, centred) / rows.shape[1])
    return centred / (std + eps)[:, None]


#: SafePO's ``ShareEnv._get_share_obs`` adds this to the standard deviation of the state.
SAFEPO_STATE_EPS = 1e-8


class MaMuJoCoTask(SafeMultiAgentEnv):
    """What every MaMuJoCo-based task shares: options, the robot, the spaces and the observation assembly.

    Subclasses set ``self.spec_`` (their task entry), then call ``super().__init__(...)``, and implement
    :meth:`_build_robot`, ``_reset`` and ``_step``. Tasks with ``num_extra`` task features (e.g. an obstacle's
    position) append them to the robot's global state and to every agent's local observation.

    Observation modes (``obs_mode``; :attr:`obs_modes` lists those a task accepts):

    * ``"local"``: each agent's MaMuJoCo v1 local observation within ``agent_obsk`` joints, plus the task features.
      No original uses it: MaMuJoCo's own default, not MACPO's (MACPO builds ``obsk`` lists but its ``get_obs``
      ignores them) nor SafePO's.
    * ``"global"``: the global state (the Gymnasium ``*-v5`` observation plus the task features) and a one-hot agent
      id, raw. Not an original's either: SafePO and MACPO standardise, and their single-agent vector differs.
    * ``"safepo"`` (velocity tasks) and ``"macpo"`` (MACPO tasks): the original's observation exactly. Agent ``i``
      sees ``standardize(concat(v, one_hot(i)))`` with ``v`` = :meth:`original_vector` (SafePO: the Gymnasium
      ``*-v4`` observation that SafePO's ``ShareEnv`` reads through MaMuJoCo's ``state()``; MACPO: the task env's own
      ``_get_obs``), and the global state is ``standardize(v, 1e-8)``, SafePO's shared observation (MACPO gives
      each agent's critic the agent's own observation; a shared critic here sees ``v`` standardised, without id).

    Args:
        task_name: The registered task name.
        obs_mode: One of :attr:`obs_modes` (see above).
        agent_obsk: Graph distance of the observed joints in ``"local"`` mode (MaMuJoCo default: 1).
        max_episode_steps: Time limit; reaching it truncates the episode.
        cost_limit: The limit on the expected episode cost that algorithms use when their config gives none.
        default_cost_limit: The task's default for ``cost_limit``.
        render_mode: One of :data:`RENDER_MODES`.
        num_extra: Number of task features appended to the state and the local observations.
    """

    #: The observation modes of this task family.
    obs_modes: tuple[str, ...] = ("local", "global")

    def __init__(
        self,
        task_name: str,
        *,
        obs_mode: str,
        agent_obsk: int,
        max_episode_steps: int,
        cost_limit: float | None,
        default_cost_limit: float | tuple[float, ...],
        render_mode: str | None,
        num_extra: int = 0,
    ) -> None:
        super().__init__()
        self._set_episode_options(task_name, max_episode_steps, cost_limit, default_cost_limit)
        if obs_mode not in self.obs_modes:
            raise ValueError(f"obs_mode must be one of {self.obs_modes} for {task_name}, got {obs_mode!r}.")
        agent_obsk = check_int("agent_obsk", agent_obsk, 0)
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}.")
        self.obs_mode, self.render_mode, self.num_extra = obs_mode, render_mode, num_extra

        self.robot = self._build_robot(agent_obsk)
        self.possible_agents = list(self.robot.agents)
        self.agents = list(self.possible_agents)
        n = len(self.possible_agents)
        self._eye = np.eye(n)
        self._one_hot = {aid: self._eye[i].astype(np.float32) for i, aid in enumerate(self.possible_agents)}
        if obs_mode in ORIGINAL_OBS_MODES:
            self.state_dim = len(self.original_vector())
            obs_dims = {aid: self.state_dim + n for aid in self.possible_agents}
        else:
            self.state_dim = self.robot.state_dim + num_extra
            if obs_mode == "global":
                obs_dims = {aid: self.state_dim + n for aid in self.possible_agents}
            else:
                obs_dims = {aid: len(self.robot.obs_index[aid]) + num_extra for aid in self.possible_agents}
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)
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

    def original_vector(self) -> np.ndarray:
        """The single-agent vector that the original project standardises with the agent id (float64).

        Read from the current simulation state; used by the ``"safepo"`` / ``"macpo"`` observation modes.
        """
        raise NotImplementedError

    def _observe(
        self, state64: np.ndarray, extra: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The agents' observations and the global state from the robot's ``*-v5`` observation and task features."""
        if self.obs_mode in ORIGINAL_OBS_MODES:  # row i: standardize(concat(v, one_hot(i))), all agents at once
            v = self.original_vector()
            rows = np.concatenate([np.broadcast_to(v, (len(self._eye), len(v))), self._eye], axis=1)
            obs = dict(zip(self.possible_agents, _standardize_rows(rows).astype(np.float32)))
            return obs, standardize(v, SAFEPO_STATE_EPS).astype(np.float32)
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


def safepo_vector(scenario: str, data: Any) -> np.ndarray:
    """The observation of Gymnasium's ``<scenario>-v4`` env with its default options for the current MuJoCo state.

    This is what SafePO's agents are built from: ``ShareEnv._get_obs`` standardises ``MaMuJoCo.state()``, which in
    gymnasium-robotics 1.2.2 (safety-gymnasium 1.0's pin) is the ``*-v4`` env's ``_get_obs()`` (Gymnasium 0.28.1):

    * Ant (``use_contact_forces=False``), Swimmer: ``qpos[2:], qvel`` (Ant 27, Swimmer 8 values);
    * HalfCheetah: ``qpos[1:], qvel`` (17); Hopper, Walker2d: ``qpos[1:], clip(qvel, -10, 10)`` (11, 17);
    * Humanoid: ``qpos[2:], qvel, cinert, cvel, qfrc_actuator, cfrc_ext`` over all bodies and dofs, the world body
      and the root's 6 dofs included (376; ``*-v5`` drops those 28 entries, which are always 0).

    Args:
        scenario: The MaMuJoCo scenario of a velocity task.
        data: The robot's ``mujoco.MjData``.
    """
    qpos, qvel = data.qpos, data.qvel
    if scenario in ("Ant", "Swimmer"):
        return np.concatenate([qpos[2:], qvel])
    if scenario == "HalfCheetah":
        return np.concatenate([qpos[1:], qvel])
    if scenario in ("Hopper", "Walker2d"):
        return np.concatenate([qpos[1:], np.clip(qvel, -10.0, 10.0)])
    if scenario == "Humanoid":
        return np.concatenate(
            [qpos[2:], qvel, data.cinert.ravel(), data.cvel.ravel(), data.qfrc_actuator, data.cfrc_ext.ravel()]
        )
    raise ValueError(f"No SafePO observation for scenario {scenario!r}.")


class SafeMAMuJoCoVelocity(MaMuJoCoTask):
    """A Safe MAMuJoCo velocity task as an RLlib ``MultiAgentEnv``.

    Args:
        task: One of :data:`VELOCITY_TASKS` (e.g. ``"Safety2x4AntVelocity-v0"``).
        obs_mode: ``"local"`` (default), ``"global"`` or ``"safepo"`` (see :class:`MaMuJoCoTask`). ``"safepo"`` is
            what SafePO's actors see: ``standardize(concat(safepo_vector, one_hot))`` (:func:`safepo_vector`:
            Ant 27, HalfCheetah 17, Hopper 11, Walker2d 17, Swimmer 8, Humanoid 376 values), with the standardised
            ``*-v4`` observation as the global state (SafePO's critics' input).
        agent_obsk: Graph distance of the observed joints in ``"local"`` mode (MaMuJoCo default: 1).
        max_episode_steps: Time limit (default 1000 as MaMuJoCo and SafePO).
        cost_limit: Default limit for algorithms (default :data:`VELOCITY_COST_LIMIT`).
        render_mode: One of :data:`RENDER_MODES`.

    Observation, action and state spaces are ``float32`` Boxes; the global state is the single-agent ``*-v5``
    observation (``infos[agent]["state"]``, :meth:`state`), standardised ``*-v4`` observation in ``"safepo"`` mode.
    The robot is always the ``*-v5`` one (reward, termination, and Walker2d's ``walker2d_v5.xml`` with equal foot
    frictions); only the observations follow SafePO.
    """

    obs_modes = ("local", "global", "safepo")

    def __init__(
        self,
        task: str = "Safety2x4AntVelocity-v0",
        obs_mode: Literal["local", "global", "safepo"] = "local",
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

    def original_vector(self) -> np.ndarray:
        """SafePO's single-agent vector, :func:`safepo_vector`."""
        return safepo_vector(self.spec_.scenario, self.robot.env.data)

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
