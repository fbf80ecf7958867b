"""MACPO Safe MAMuJoCo obstacle tasks: folded-corridor Ant / ManyAgent Ant and HalfCheetah with a moving obstacle.

These are the Safe MAMuJoCo tasks of the MACPO code (``chauncygu/Safe-Multi-Agent-Mujoco``,
``safety_multiagent_mujoco/{ant,manyagent_ant,half_cheetah}.py``) that the MAFOCOPS paper evaluates (Appendix F.1,
Eq. 36-37, Figures 3 and 6-9), rebuilt on Gymnasium's MuJoCo ``*-v5`` robots and MaMuJoCo v1 factorizations.
The scene objects are added with :class:`mujoco.MjSpec` to the robots' own XML and the spec is compiled directly
(no XML round trip), so they are real geoms that the robot collides with, while the robot model stays bit-identical
to Gymnasium's and its observation (and therefore MaMuJoCo's index arrays) is unchanged by them.

**Corridor tasks** (``SafeAnt*``, ``SafeManyAgentAnt*``). The corridor follows the MACPO centre line

    ``y_c(x) = x·tan30°`` for ``x <= 20``, ``(40 - x)·tan30°`` for ``20 <= x <= 60``,
    ``(x - 80)·tan30°`` for ``60 <= x <= 100``, ``20·tan30°`` for ``x >= 100``,

(a zig-zag folding by 30° at ``x = 20, 60, 100`` m, then straight), with one wall on each side at
``y = y_c(x) ± w`` (``w = 5`` m for Ant: a 10 m corridor, ``w = 4.5`` m for ManyAgent Ant: 9 m, paper F.1;
MACPO's ``ywall``). Each wall is a chain of four static world-body boxes (geoms ``wall_left_0..3`` and
``wall_right_0..3``, 1.4 m high, 0.2 m thick) whose inner faces lie exactly on the polyline ``y_c(x) ± w`` from
``x = -50`` to ``x = 1000`` m; the robot starts at the origin, 4.33 m (Ant) or 3.90 m (ManyAgent Ant) from each
wall. The team cost of a step is (paper Eq. 36 as the MACPO code computes it, ``clip(obj_cost + done_cost, 0, 1)``)

    ``c_t = 1`` if ``d_wall(x, y) < 1.8`` or not ``0.2 <= z <= 1.0`` or ``z_up < -0.7``, else ``0``,

with ``(x, y, z)`` the torso position after the step, ``z_up = 1 - 2(q_x² + q_y²)`` the z component of the torso's
up axis, and ``d_wall`` the Euclidean distance in the plane from the torso to the nearest wall polyline. The paper
prints Eq. 36 with the inequalities inverted (cost 1 when *far* from the wall and upright); the MACPO code's reading
(cost when too close or fallen) is the meaningful one and is what is implemented. MACPO measures the wall distance
along ``y`` only (``|y - y_c(x) ∓ w|``); here it is the true planar distance to the wall segments, which is ``cos30°``
times the ``y`` offset on the sloped parts and the distance to the fold vertex where a fold juts into the corridor.
A step in which the torso leaves the healthy height range or topples also ends the episode (``terminated``), as in
MACPO; the reward is Gymnasium ``Ant-v5``'s. Every agent observes, after its MaMuJoCo local observation, the two
corridor features of MACPO's ``_get_obs``: ``x / 5`` and ``y - y_c(x)``.

**Obstacle tasks** (``SafeHalfCheetah*``). A box obstacle (0.5 m long, 2 m wide, 1.9 m high, lifted 5 cm off the
floor) stands across the HalfCheetah's path, its centre starting at ``x = 20`` m. It is a mocap body (no joint: the
robot's ``qpos``/``qvel`` are unchanged), moved kinematically: before control step ``k`` (``k = 0, 1, ...`` counted from
the reset) it is advanced by

    ``Δx_k = 0.02·sin²(t_k / 3) - 0.004`` metres, ``t_k = k·dt`` (simulated seconds, ``dt = 0.05`` s),

the MACPO drive ``wall_act = .02 * np.sin(t / 3) ** 2 - .004`` with MACPO's ``t = self.data.time``. (MACPO feeds this
value to a motor on the obstacle's joint; the motor's gear and the obstacle's mass are not in the public code, so the
drive is used here directly as the displacement per control step: the obstacle creeps forward by 6 mm per step on
average, about 6 m per 1000-step episode, and briefly backs off by up to 4 mm per step.) The team cost of a step is
(paper Eq. 37 as the MACPO code computes it, ``obj_cost = int(np.abs(xdist) < 9)``; the paper again prints the
inequality inverted and calls the running axis ``y``) ``c_t = 1`` if ``|x_obstacle - x_torso| < 9`` m, else ``0``,
with ``x_torso`` the root slide ``qpos[0]`` and ``x_obstacle`` the box centre. Every agent observes, after its
MaMuJoCo local observation, ``x_obstacle - x_torso`` and the obstacle's velocity ``Δx_k / dt`` during the coming
step. The reward is Gymnasium ``HalfCheetah-v5``'s; the robot never terminates.

In both families the global state (``infos[agent]["state"]``) is the single-agent ``*-v5`` observation followed by
the same extra features. Factorizations MaMuJoCo v1 does not define are given explicitly with the MACPO partitions
(the MACPO ``obsk.py``): Ant ``8x1`` = one agent per joint in the order hip1, ankle1, ..., hip4, ankle4; HalfCheetah
``3x2`` = (bfoot, bshin), (bthigh, ffoot), (fshin, fthigh), on MaMuJoCo v1's joint graph.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from rllib_safe.envs.safe_mamujoco import MaMuJoCoRobot, MaMuJoCoTask

TAN30 = math.tan(math.radians(30.0))

#: Extent of the walls along x and the x of the folds of the MACPO centre line (``ant.py`` / ``manyagent_ant.py``).
CORRIDOR_START_X = -50.0
CORRIDOR_END_X = 1000.0
CORRIDOR_FOLDS_X = (20.0, 60.0, 100.0)
#: Distance to a wall below which a step costs 1 (MACPO ``abs(y_walldist) < 1.8``; paper Eq. 36).
WALL_DISTANCE = 1.8
#: Healthy torso height range and topple limit (MACPO ``state[2] >= 0.2 and state[2] <= 1.0 and z_rot >= -0.7``).
HEALTHY_Z_RANGE = (0.2, 1.0)
TOPPLE_Z_UP = -0.7
#: Wall boxes: half thickness and half height (m). MACPO's walls are 0.02 m thick and 1.4 m high; 0.2 m thickness
#: keeps contacts robust at the 0.01 s physics step.
WALL_HALF_THICKNESS = 0.1
WALL_HALF_HEIGHT = 0.7

#: Distance to the obstacle below which a step costs 1 (MACPO ``half_cheetah.py``: ``np.abs(xdist) < 9``; Eq. 37).
OBSTACLE_DISTANCE = 9.0
#: Initial x of the obstacle's centre (m) and its box half sizes (x, y, z); the box is lifted by ``OBSTACLE_GAP``.
OBSTACLE_START_X = 20.0
OBSTACLE_HALF_SIZE = (0.25, 1.0, 0.95)
OBSTACLE_GAP = 0.05

#: Default limits on the expected episode cost: the MAFOCOPS paper's safety bounds (Figure 3: ManyAgent Ant 25,
#: Ant 50, HalfCheetah 30; Figure 6: Ant 8x1 70; Figure 7: HalfCheetah 30; Figure 8: ManyAgent Ant 2x3/3x2/6x1 25;
#: Figure 9: ManyAgent Ant 2x4/4x2/8x1 80).
ANT_COST_LIMIT = 50.0
ANT_8X1_COST_LIMIT = 70.0
HALF_CHEETAH_COST_LIMIT = 30.0
MANY_AGENT_ANT_SMALL_COST_LIMIT = 25.0
MANY_AGENT_ANT_LARGE_COST_LIMIT = 80.0


@dataclass(frozen=True)
class ObstacleTask:
    """One MACPO Safe MAMuJoCo obstacle task.

    Attributes:
        name: The registered task name.
        scenario: ``"Ant"``, ``"ManySegmentAnt"`` (corridor tasks) or ``"HalfCheetah"`` (moving obstacle).
        agent_conf: The agent partition (MaMuJoCo name, or one of the MACPO partitions given explicitly).
        cost_limit: Default limit on the expected episode cost (MAFOCOPS paper Figures 3, 6-9).
        half_width: Corridor tasks: offset ``w`` of each wall from the centre line along ``y`` (m).
    """

    name: str
    scenario: Literal["Ant", "ManySegmentAnt", "HalfCheetah"]
    agent_conf: str
    cost_limit: float
    half_width: float = 0.0

    @property
    def is_corridor(self) -> bool:
        """Whether the task is a folded-corridor (wall) task rather than a moving-obstacle task."""
        return self.scenario != "HalfCheetah"


OBSTACLE_TASKS: dict[str, ObstacleTask] = {
    t.name: t
    for t in (
        ObstacleTask("SafeAnt2x4-v0", "Ant", "2x4", ANT_COST_LIMIT, 5.0),
        ObstacleTask("SafeAnt2x4d-v0", "Ant", "2x4d", ANT_COST_LIMIT, 5.0),
        ObstacleTask("SafeAnt4x2-v0", "Ant", "4x2", ANT_COST_LIMIT, 5.0),
        ObstacleTask("SafeAnt8x1-v0", "Ant", "8x1", ANT_8X1_COST_LIMIT, 5.0),
        ObstacleTask("SafeHalfCheetah2x3-v0", "HalfCheetah", "2x3", HALF_CHEETAH_COST_LIMIT),
        ObstacleTask("SafeHalfCheetah3x2-v0", "HalfCheetah", "3x2", HALF_CHEETAH_COST_LIMIT),
        ObstacleTask("SafeHalfCheetah6x1-v0", "HalfCheetah", "6x1", HALF_CHEETAH_COST_LIMIT),
        ObstacleTask("SafeManyAgentAnt2x3-v0", "ManySegmentAnt", "2x3", MANY_AGENT_ANT_SMALL_COST_LIMIT, 4.5),
        ObstacleTask("SafeManyAgentAnt3x2-v0", "ManySegmentAnt", "3x2", MANY_AGENT_ANT_SMALL_COST_LIMIT, 4.5),
        ObstacleTask("SafeManyAgentAnt6x1-v0", "ManySegmentAnt", "6x1", MANY_AGENT_ANT_SMALL_COST_LIMIT, 4.5),
        ObstacleTask("SafeManyAgentAnt2x4-v0", "ManySegmentAnt", "2x4", MANY_AGENT_ANT_LARGE_COST_LIMIT, 4.5),
        ObstacleTask("SafeManyAgentAnt4x2-v0", "ManySegmentAnt", "4x2", MANY_AGENT_ANT_LARGE_COST_LIMIT, 4.5),
        ObstacleTask("SafeManyAgentAnt8x1-v0", "ManySegmentAnt", "8x1", MANY_AGENT_ANT_LARGE_COST_LIMIT, 4.5),
    )
}


# ----------------------------------------------------------------------------------------------------------------
# Corridor geometry and cost (paper Eq. 36, MACPO ant.py / manyagent_ant.py).
# ----------------------------------------------------------------------------------------------------------------
def corridor_centre_y(x: float) -> float:
    """The MACPO corridor centre line ``y_c(x)`` (see the module docstring), continuous at the folds."""
    if x <= 20.0:
        return x * TAN30
    if x <= 60.0:
        return (40.0 - x) * TAN30
    if x <= 100.0:
        return (x - 80.0) * TAN30
    return 20.0 * TAN30


def corridor_centre_vertices() -> list[tuple[float, float]]:
    """The vertices of the centre polyline from ``CORRIDOR_START_X`` over the folds to ``CORRIDOR_END_X``."""
    xs = (CORRIDOR_START_X, *CORRIDOR_FOLDS_X, CORRIDOR_END_X)
    return [(x, corridor_centre_y(x)) for x in xs]


@functools.lru_cache(maxsize=8)
def corridor_wall_segments(half_width: float) -> tuple[tuple[int, float, float, float, float], ...]:
    """The wall segments: ``(side, x0, y0, x1, y1)`` with ``side = +1`` (left, ``+y``) or ``-1`` (right).

    Each wall is the centre polyline shifted by ``side · half_width`` along ``y`` (MACPO's ``ywall``).
    """
    verts = corridor_centre_vertices()
    segments = []
    for side in (1, -1):
        for (x0, y0), (x1, y1) in zip(verts[:-1], verts[1:]):
            segments.append((side, x0, y0 + side * half_width, x1, y1 + side * half_width))
    return tuple(segments)


def _point_segment_distance(px: float, py: float, x0: float, y0: float, x1: float, y1: float) -> float:
    """Euclidean distance from the point ``(px, py)`` to the segment ``(x0, y0)-(x1, y1)``."""
    dx, dy = x1 - x0, y1 - y0
    s = ((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy)
    s = min(1.0, max(0.0, s))
    return math.hypot(px - (x0 + s * dx), py - (y0 + s * dy))


def corridor_wall_distance(x: float, y: float, half_width: float) -> float:
    """Planar distance from ``(x, y)`` to the nearest wall of the corridor of half width ``half_width``."""
    return min(_point_segment_distance(x, y, *seg[1:]) for seg in corridor_wall_segments(half_width))


def torso_up_z(quat: np.ndarray) -> float:
    """The z component of the torso's up axis, ``1 - 2(q_x² + q_y²)`` for a ``(w, x, y, z)`` quaternion (MACPO)."""
    return 1.0 - 2.0 * (float(quat[1]) ** 2 + float(quat[2]) ** 2)


def is_fallen(z: float, z_up: float) -> bool:
    """MACPO's ``done``: the torso height leaves ``[0.2, 1.0]`` or the torso is toppled (``z_up < -0.7``)."""
    return not (HEALTHY_Z_RANGE[0] <= z <= HEALTHY_Z_RANGE[1]) or z_up < TOPPLE_Z_UP


def corridor_cost(x: float, y: float, z: float, z_up: float, half_width: float) -> float:
    """The corridor cost of one step (paper Eq. 36 as MACPO computes it, see the module docstring).

    Args:
        x: Torso x after the step.
        y: Torso y after the step.
        z: Torso height after the step.
        z_up: z component of the torso's up axis (:func:`torso_up_z`).
        half_width: The corridor's wall offset ``w`` (Ant 5, ManyAgent Ant 4.5).

    Returns:
        ``1.0`` if the torso is within :data:`WALL_DISTANCE` of a wall or the robot has fallen, else ``0.0``.
    """
    near_wall = corridor_wall_distance(x, y, half_width) < WALL_DISTANCE
    return float(near_wall or is_fallen(z, z_up))


# ----------------------------------------------------------------------------------------------------------------
# Moving obstacle (paper Eq. 37, MACPO half_cheetah.py).
# ----------------------------------------------------------------------------------------------------------------
def obstacle_drive(t: float) -> float:
    """The MACPO obstacle drive ``0.02·sin²(t / 3) - 0.004``, used as the displacement per control step (m).

    Args:
        t: Simulated time in seconds at the start of the control step (``k·dt``).
    """
    return 0.02 * math.sin(t / 3.0) ** 2 - 0.004


def obstacle_position(k: int, dt: float, x0: float = OBSTACLE_START_X) -> float:
    """The obstacle's x after ``k`` control steps: ``x0 + Σ_{j<k} obstacle_drive(j·dt)``."""
    return x0 + sum(obstacle_drive(j * dt) for j in range(k))


def obstacle_cost(x_obstacle: float, x_torso: float) -> float:
    """The obstacle cost of one step: ``1.0`` if ``|x_obstacle - x_torso| < 9`` m, else ``0.0`` (Eq. 37, MACPO)."""
    return float(abs(x_obstacle - x_torso) < OBSTACLE_DISTANCE)


# ----------------------------------------------------------------------------------------------------------------
# Scene construction with MjSpec.
# ----------------------------------------------------------------------------------------------------------------
def _gym_asset(name: str) -> str:
    """Path of one of Gymnasium's MuJoCo robot XMLs."""
    import gymnasium.envs.mujoco as gym_mujoco

    return os.path.join(os.path.dirname(gym_mujoco.__file__), "assets", name)


def _load_spec(path: str) -> mujoco.MjSpec:
    """Loads an MJCF file into an ``MjSpec`` (silencing the ``settotalmass`` deprecation of Gymnasium's XMLs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        return mujoco.MjSpec.from_file(path)


def _freeze_statistics(spec: mujoco.MjSpec) -> None:
    """Pins the model statistics to the robot's own, so that long walls do not rescale rendering and visualisation."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        model = spec.compile()
    spec.stat.extent = float(model.stat.extent)
    spec.stat.center = np.asarray(model.stat.center, dtype=np.float64)


def _infinite_floor(spec: mujoco.MjSpec) -> None:
    """Renders the floor plane without edges (size 0); planes collide without bounds either way."""
    for geom in spec.geoms:
        if geom.type == mujoco.mjtGeom.mjGEOM_PLANE:
            geom.size = [0.0, 0.0, geom.size[2] or 1.0]


def add_corridor_walls(spec: mujoco.MjSpec, half_width: float) -> list[str]:
    """Adds the two folded walls to ``spec`` as static boxes on the world body.

    Each wall segment of :func:`corridor_wall_segments` becomes a box whose inner face lies on the segment, shifted
    outwards by :data:`WALL_HALF_THICKNESS`, standing on the floor (height ``2·WALL_HALF_HEIGHT``).

    Returns:
        The names of the wall geoms.
    """
    names = []
    for i, (side, x0, y0, x1, y1) in enumerate(corridor_wall_segments(half_width)):
        theta = math.atan2(y1 - y0, x1 - x0)
        normal = (-math.sin(theta) * side, math.cos(theta) * side)  # away from the corridor
        name = f"wall_{'left' if side > 0 else 'right'}_{i % (len(CORRIDOR_FOLDS_X) + 1)}"
        spec.worldbody.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.5 * math.hypot(x1 - x0, y1 - y0), WALL_HALF_THICKNESS, WALL_HALF_HEIGHT],
            pos=[
                0.5 * (x0 + x1) + WALL_HALF_THICKNESS * normal[0],
                0.5 * (y0 + y1) + WALL_HALF_THICKNESS * normal[1],
                WALL_HALF_HEIGHT,
            ],
            quat=[math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)],
            contype=1,
            conaffinity=1,
            condim=3,
            rgba=[1.0, 0.5, 0.5, 1.0],
        )
        names.append(name)
    return names


def add_obstacle(spec: mujoco.MjSpec) -> str:
    """Adds the moving obstacle to ``spec``: a mocap body (no joint) carrying a box that collides with the robot.

    Returns:
        The name of the obstacle body.
    """
    hx, hy, hz = OBSTACLE_HALF_SIZE
    body = spec.worldbody.add_body(name="obstacle", mocap=True, pos=[OBSTACLE_START_X, 0.0, OBSTACLE_GAP + hz])
    body.add_geom(
        name="obstacle_geom",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[hx, hy, hz],
        mass=0.0,  # kinematic; a mass would also be rescaled by half_cheetah.xml's settotalmass="14"
        contype=1,
        conaffinity=1,
        condim=3,
        rgba=[1.0, 0.3, 0.3, 1.0],
    )
    return "obstacle"


def _add_view_camera(spec: mujoco.MjSpec, body_name: str, pos: list[float], xyaxes: list[float]) -> str:
    """Adds a camera that tracks the robot's centre of mass, used for ``rgb_array`` frames."""
    spec.body(body_name).add_camera(name="scene_view", mode=mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM, pos=pos)
    cam = spec.camera("scene_view")
    cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    cam.alt.xyaxes = xyaxes
    return "scene_view"


class _SpecModel:
    """Mixin for Gymnasium MuJoCo envs: the model is compiled from an ``MjSpec`` instead of read from ``xml_file``.

    Compiling the spec directly (rather than writing it to XML and reading that back) keeps every number of the
    robot model bit-identical to Gymnasium's own (an XML round trip rounds masses and inertias).
    """

    def __init__(self, scene_spec: mujoco.MjSpec, **kwargs: Any) -> None:
        self._scene_spec = scene_spec
        super().__init__(**kwargs)
        self._scene_spec = None  # compiled; the model no longer needs it

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*settotalmass.*")
            model = self._scene_spec.compile()
        model.vis.global_.offwidth = self.width
        model.vis.global_.offheight = self.height
        return model, mujoco.MjData(model)


class _AntScene(_SpecModel, AntEnv):
    """Gymnasium ``Ant-v5`` (reward, termination, observation) on a scene compiled from an ``MjSpec``."""


class _HalfCheetahScene(_SpecModel, HalfCheetahEnv):
    """Gymnasium ``HalfCheetah-v5`` (reward, observation) on a scene compiled from an ``MjSpec``."""


def build_corridor_env(scenario: str, agent_conf: str, half_width: float, render_mode: str | None) -> AntEnv:
    """The single-agent ``Ant-v5`` env of a corridor task: the (ManySegment) Ant robot plus the folded walls.

    ManySegmentAnt's XML is generated with MaMuJoCo's ``gen_asset`` into a private temporary directory (MaMuJoCo
    itself writes into, and deletes from, the installed package's assets directory, which fails on a read-only
    install and races between processes).
    """
    with tempfile.TemporaryDirectory(prefix="rllib_safe_") as tmp:
        if scenario == "Ant":
            path, torso = _gym_asset("ant.xml"), "torso"
        else:
            from gymnasium_robotics.envs.multiagent_mujoco.many_segment_ant import gen_asset

            n_agents, n_segs = (int(v) for v in agent_conf.split("x"))
            path, torso = os.path.join(tmp, "many_segment_ant.xml"), "torso_0"
            gen_asset(n_segs=n_agents * n_segs, asset_path=path)
        spec = _load_spec(path)
        _freeze_statistics(spec)
        _infinite_floor(spec)
        add_corridor_walls(spec, half_width)
        _add_view_camera(spec, torso, [0.0, -12.0, 10.0], [1.0, 0.0, 0.0, 0.0, 0.640, 0.768])
        return _AntScene(spec, xml_file=path, render_mode=render_mode, camera_name="scene_view")


def build_obstacle_env(render_mode: str | None) -> HalfCheetahEnv:
    """The single-agent ``HalfCheetah-v5`` env of an obstacle task: the robot plus the moving obstacle."""
    path = _gym_asset("half_cheetah.xml")
    spec = _load_spec(path)
    _freeze_statistics(spec)
    _infinite_floor(spec)
    add_obstacle(spec)
    _add_view_camera(spec, "torso", [6.0, -24.0, 4.0], [1.0, 0.0, 0.0, 0.0, 0.174, 0.985])
    return _HalfCheetahScene(spec, xml_file=path, render_mode=render_mode, camera_name="scene_view")


def macpo_factorization(scenario: str, agent_conf: str) -> dict | None:
    """MaMuJoCo ``agent_factorization`` for the MACPO partitions that MaMuJoCo v1 does not define, else ``None``.

    Built on MaMuJoCo v1's joint graph (``obsk.get_parts_and_edges``) with the MACPO ``obsk.py`` partitions:
    Ant ``8x1``: ``(hip1,), (ankle1,), (hip2,), (ankle2,), (hip3,), (ankle3,), (hip4,), (ankle4,)``;
    HalfCheetah ``3x2``: ``(bfoot, bshin), (bthigh, ffoot), (fshin, fthigh)``.
    """
    from gymnasium_robotics.envs.multiagent_mujoco.obsk import get_parts_and_edges

    if (scenario, agent_conf) == ("Ant", "8x1"):
        parts, edges, globals_ = get_parts_and_edges("Ant", "4x2")
        partition = [(node,) for part in parts for node in part]
    elif (scenario, agent_conf) == ("HalfCheetah", "3x2"):
        parts, edges, globals_ = get_parts_and_edges("HalfCheetah", "6x1")
        node = {part[0].label: part[0] for part in parts}
        partition = [
            (node["bfoot"], node["bshin"]),
            (node["bthigh"], node["ffoot"]),
            (node["fshin"], node["fthigh"]),
        ]
    else:
        return None
    return {"partition": partition, "edges": edges, "globals": globals_}


# ----------------------------------------------------------------------------------------------------------------
# The RLlib environment.
# ----------------------------------------------------------------------------------------------------------------
class SafeMAMuJoCoObstacle(MaMuJoCoTask):
    """A MACPO Safe MAMuJoCo obstacle task (folded corridor or moving obstacle) as an RLlib ``MultiAgentEnv``.

    Args:
        task: One of :data:`OBSTACLE_TASKS` (e.g. ``"SafeAnt2x4-v0"``).
        obs_mode: ``"local"``: MaMuJoCo local observations within ``agent_obsk`` joints plus the task's extra
            features (the MACPO code's setting); ``"global"``: the global state plus a one-hot agent id.
        agent_obsk: Graph distance of the observed joints in ``"local"`` mode (MaMuJoCo default and MACPO: 1).
        max_episode_steps: Time limit; reaching it truncates the episode (default 1000, MACPO ``episode_limit``).
        cost_limit: The limit on the expected episode cost that algorithms use when their config gives none
            (default: the task's MAFOCOPS-paper safety bound, :attr:`ObstacleTask.cost_limit`).
        render_mode: ``None``, ``"rgb_array"`` or ``"depth_array"`` (headless through ``MUJOCO_GL=egl``).

    Observation, action and state spaces are ``float32`` Boxes. The extra features (module docstring) follow each
    agent's MaMuJoCo local observation and the single-agent ``*-v5`` observation in the global state.
    """

    def __init__(
        self,
        task: str = "SafeAnt2x4-v0",
        obs_mode: Literal["local", "global"] = "local",
        agent_obsk: int = 1,
        max_episode_steps: int = 1000,
        cost_limit: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        if task not in OBSTACLE_TASKS:
            raise ValueError(f"Unknown obstacle task {task!r}; known: {sorted(OBSTACLE_TASKS)}.")
        self.spec_ = OBSTACLE_TASKS[task]
        super().__init__(
            task,
            obs_mode=obs_mode,
            agent_obsk=agent_obsk,
            max_episode_steps=max_episode_steps,
            cost_limit=cost_limit,
            default_cost_limit=self.spec_.cost_limit,
            render_mode=render_mode,
            num_extra=2,
        )
        sim = self.robot.env
        self.dt = float(sim.dt)
        self._mocap_id = -1 if self.spec_.is_corridor else int(sim.model.body("obstacle").mocapid[0])

    def _build_robot(self, agent_obsk: int) -> MaMuJoCoRobot:
        if self.spec_.is_corridor:
            gym_env = build_corridor_env(
                self.spec_.scenario, self.spec_.agent_conf, self.spec_.half_width, self.render_mode
            )
        else:
            gym_env = build_obstacle_env(self.render_mode)
        return MaMuJoCoRobot(
            self.spec_.scenario,
            self.spec_.agent_conf,
            agent_obsk=agent_obsk,
            gym_env=gym_env,
            agent_factorization=macpo_factorization(self.spec_.scenario, self.spec_.agent_conf),
        )

    # ----------------------------------------------------------------------------------------------------------
    # Task quantities read from the MuJoCo state.
    # ----------------------------------------------------------------------------------------------------------
    @property
    def obstacle_x(self) -> float:
        """Moving-obstacle tasks: the obstacle's current x (the mocap body's position)."""
        return float(self.robot.env.data.mocap_pos[self._mocap_id, 0])

    def extra_features(self, steps: int | None = None) -> np.ndarray:
        """The task features appended to every observation and to the state (see the module docstring).

        Args:
            steps: Control steps taken since the reset (default: the current count); the obstacle's velocity is
                the one of the next step, ``obstacle_drive(steps·dt) / dt``.
        """
        qpos = self.robot.env.data.qpos
        if self.spec_.is_corridor:
            x, y = float(qpos[0]), float(qpos[1])
            return np.array([x / 5.0, y - corridor_centre_y(x)])
        k = self._t if steps is None else steps
        return np.array([self.obstacle_x - float(qpos[0]), obstacle_drive(k * self.dt) / self.dt])

    def current_cost(self) -> float:
        """The team cost of the current MuJoCo state (Eq. 36 for corridors, Eq. 37 for the moving obstacle)."""
        qpos = self.robot.env.data.qpos
        if self.spec_.is_corridor:
            x, y, z = float(qpos[0]), float(qpos[1]), float(qpos[2])
            return corridor_cost(x, y, z, torso_up_z(qpos[3:7]), self.spec_.half_width)
        return obstacle_cost(self.obstacle_x, float(qpos[0]))

    def toppled(self) -> bool:
        """Corridor tasks: whether the torso is toppled (``z_up < -0.7``), which MACPO also treats as a fall."""
        return self.spec_.is_corridor and torso_up_z(self.robot.env.data.qpos[3:7]) < TOPPLE_Z_UP

    # ----------------------------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options: dict | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        sim = self.robot.env
        state64, _ = sim.reset(seed=seed)
        if not self.spec_.is_corridor:
            # mj_resetData already puts the mocap body back at its XML position; written out to be explicit.
            sim.data.mocap_pos[self._mocap_id, 0] = OBSTACLE_START_X
        return self._observe(state64, self.extra_features(0))

    def _step(self, actions: dict[str, np.ndarray]):
        sim = self.robot.env
        if not self.spec_.is_corridor:  # move the obstacle by this step's displacement before simulating it
            sim.data.mocap_pos[self._mocap_id, 0] += obstacle_drive(self._t * self.dt)
        state64, reward, terminated, _, _ = sim.step(self.robot.global_action(actions))
        obs, state = self._observe(state64, self.extra_features(self._t + 1))  # the base counts the step later
        cost = self.current_cost()
        terminated = bool(terminated) or self.toppled()
        return obs, state, reward, cost, terminated, {}


def task_factories() -> dict[str, Any]:
    """The registry entries of this module: task name -> constructor taking the task's keyword options."""
    return {name: _factory(name) for name in OBSTACLE_TASKS}


def _factory(name: str):
    def make(**kwargs: Any) -> SafeMAMuJoCoObstacle:
        return SafeMAMuJoCoObstacle(name, **kwargs)

    return make
