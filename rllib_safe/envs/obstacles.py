"""MACPO Safe MAMuJoCo obstacle tasks: folded-corridor Ant / ManyAgent Ant and HalfCheetah with a moving obstacle.

These are the Safe MAMuJoCo tasks of the MACPO code (``chauncygu/Multi-Agent-Constrained-Policy-Optimisation``,
``MACPO/macpo/envs/safety_ma_mujoco/safety_multiagent_mujoco/{ant,manyagent_ant,half_cheetah,mujoco_multi}.py`` and
``assets/``) that the MAFOCOPS paper evaluates (Appendix F.1, Eq. 36-37, Figures 3 and 6-9), rebuilt on Gymnasium's
MuJoCo ``*-v5`` robots and MaMuJoCo v1 factorizations. The scene objects are added with :class:`mujoco.MjSpec` to the
robots' own XML and the spec is compiled directly (no XML round trip), so they are real bodies and geoms that the
robot collides with; the robot's observation (and therefore MaMuJoCo's index arrays) excludes them.

**Corridor tasks** (``SafeAnt*``, ``SafeManyAgentAnt*``). The corridor follows the MACPO centre line

    ``y_c(x) = x·tan30°`` for ``x <= 20``, ``(40 - x)·tan30°`` for ``20 <= x <= 60``,
    ``(x - 80)·tan30°`` for ``60 <= x <= 100``, ``20·tan30°`` for ``x >= 100``,

(a zig-zag folding by 30° at ``x = 20, 60, 100`` m, then straight), with one wall on each side at
``y = y_c(x) ± w`` (``w = 5`` m for Ant: a 10 m corridor, ``w = 4.5`` m for ManyAgent Ant: 9 m, paper F.1;
MACPO's ``ywall``). Two wall models (option ``walls``):

* ``"static"`` (default): each wall is a chain of four static world-body boxes (geoms ``wall_left_0..3`` and
  ``wall_right_0..3``, 1.4 m high, 0.2 m thick) whose inner faces lie exactly on the polyline ``y_c(x) ± w`` from
  ``x = -50`` to ``x = 1000`` m, and ``d_wall`` below is the Euclidean distance in the plane from the torso to the
  nearest wall segment (``cos30°`` times the ``y`` offset on the sloped parts, the distance to the fold vertex where a
  fold juts into the corridor).
* ``"macpo"``: MACPO's walls: light free bodies (box half sizes 20 x 0.01 x 0.7 m, density 1e-6 kg/m³, dropped from
  ``z = 1``) that the robot pushes away; Ant (``ant.xml``): three segments per side centred at ``x = 0, 40, 80``
  (``x`` from -17.3 to 97.3 m, open at the folds); ManyAgent Ant (``manyagent_ant.xml.template``): one segment per
  side at ``x = 0`` (``x`` from -17.3 to 17.3 m). ``d_wall`` is MACPO's ``y`` offset ``min(|y - y_c(x) ∓ w|)``
  (with MACPO's branches: at exactly ``x = 60`` or ``x >= 100`` the centre is ``20·tan30°``).

The team cost of a step is (paper Eq. 36 as the MACPO code computes it, ``clip(obj_cost + done_cost, 0, 1)``)

    ``c_t = 1`` if ``d_wall(x, y) < 1.8`` or not ``0.2 <= z <= 1.0`` or ``z_up < -0.7``, else ``0``,

with ``(x, y, z)`` the torso position after the step and ``z_up = 1 - 2(q_x² + q_y²)`` the z component of the torso's
up axis. The paper prints Eq. 36 with the inequalities inverted (cost 1 when *far* from the wall and upright); the
MACPO code's reading (cost when too close or fallen) is the meaningful one and is what is implemented. A step in which
the torso leaves the healthy height range or topples also ends the episode (``terminated``), as in MACPO; the reward
is Gymnasium ``Ant-v5``'s. Every agent observes, after its MaMuJoCo local observation, the two corridor features of
MACPO's ``_get_obs``: ``x / 5`` and ``y - y_c(x)``. ManyAgent Ant steps as in MACPO (``timestep 0.005`` s,
``frame_skip 4``: 0.02 s per control step; MaMuJoCo v1's ManySegmentAnt uses 0.01 s x 5).

``SafeAnt2x4WallSpeed-v0`` has two costs: the corridor cost above and safety-gymnasium's velocity cost of the Ant 2x4
(1 when the planar torso speed exceeds 2.522 m/s, :func:`rllib_safe.envs.safe_mamujoco.velocity_cost`).

**Obstacle tasks** (``SafeHalfCheetah*``). MACPO's moving obstacle (``half_cheetah.xml``, body ``obj1``): a box
(half sizes 0.1 x 2.3 x 1.3 m, density 1e-4, its centre starting at ``x = 10`` m, 1.4 m up: it clears the floor by
0.1 m) on a slide joint along ``x`` (damping 0.2, armature 0.1 from the model's joint defaults) driven by a motor of
gear 120 whose control before each control step is MACPO's

    ``u(t) = 0.02·sin²(t / 3) - 0.004``, ``t`` = simulated time at the start of the step,

so the force is ``120·u`` N in [-0.48, 1.92] N against the damping 0.2: the obstacle runs at up to ``120·u / 0.2``,
between -2.4 and 9.6 m/s, 3.6 m/s on average, with a 0.5 s lag. It is light (0.16 g plus the 0.1 kg armature), so the
cheetah pushes it. Its mass enters the model's ``settotalmass="14"`` as in MACPO, which scales the cheetah's masses by
``1 - 1.1e-5``. The team cost of a step is (paper Eq. 37 as the MACPO code computes it, ``obj_cost =
int(np.abs(xdist) < 9)``; the paper again prints the inequality inverted and calls the running axis ``y``)
``c_t = 1`` if ``|x_obstacle - x_torso| < 9`` m, else ``0``, with ``x_torso`` the root slide and ``x_obstacle`` the
box centre. Every agent observes, after its MaMuJoCo local observation, MACPO's three obstacle features: the
obstacle's velocity, the drive ``u`` of the coming step and ``clip((x_obstacle - x_torso) / 10, -5, 5)``. The reward
is Gymnasium ``HalfCheetah-v5``'s; the robot never terminates. Reset noise perturbs the obstacle's joint like the
robot's (MACPO: ``reset_model`` on all of ``qpos``/``qvel``).

In both families the global state (``infos[agent]["state"]``) is the single-agent ``*-v5`` observation of the robot
followed by the same extra features. ``obs_mode="macpo"`` gives MACPO's observations instead
(:meth:`SafeMAMuJoCoObstacle.original_vector`). Factorizations MaMuJoCo v1 does not define are given explicitly with
the MACPO partitions (the MACPO ``obsk.py``): Ant ``8x1`` = one agent per joint in the order hip1, ankle1, ...,
hip4, ankle4; HalfCheetah ``3x2`` = (bfoot, bshin), (bthigh, ffoot), (fshin, fthigh), on MaMuJoCo v1's joint graph.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from rllib_safe.envs.base import check_mujoco_stable
from rllib_safe.envs.safe_mamujoco import (
    ORIGINAL_OBS_MODES,
    VELOCITY_COST_LIMIT,
    MaMuJoCoRobot,
    MaMuJoCoTask,
    velocity_cost,
)

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
#: Static wall boxes: half thickness and half height (m). MACPO's walls are 0.02 m thick and 1.4 m high; 0.2 m
#: thickness keeps contacts with a static wall robust at the 0.01 s physics step.
WALL_HALF_THICKNESS = 0.1
WALL_HALF_HEIGHT = 0.7
#: The wall models of option ``walls`` (module docstring).
WALL_MODELS = ("static", "macpo")
#: MACPO's free wall bodies ``(x, y, yaw in degrees)`` at ``z = 1`` (Ant: ``assets/ant.xml`` b1-b6; ManyAgent Ant:
#: ``assets/manyagent_ant.xml.template`` b1-b2), with their box half sizes and density.
MACPO_WALLS = {
    "Ant": ((0.0, 5.0, 30.0), (0.0, -5.0, 30.0), (40.0, 5.0, -30.0), (40.0, -5.0, -30.0), (80.0, 5.0, 30.0),
            (80.0, -5.0, 30.0)),
    "ManySegmentAnt": ((0.0, 4.5, 30.0), (0.0, -4.5, 30.0)),
}  # fmt: skip
MACPO_WALL_Z = 1.0
MACPO_WALL_HALF_SIZE = (20.0, 0.01, 0.7)
MACPO_WALL_DENSITY = 1e-6
#: MACPO's ``_get_obs`` of both Ant tasks slices ``qpos[2:-42]`` and ``qvel[:-36]``: it assumes six free wall bodies
#: after the robot (true for ``ant.xml``; ``manyagent_ant.xml.template`` has two, so there it also cuts robot joints).
MACPO_OBS_WALL_BODIES = 6

#: ManyAgent Ant physics step and control repeat of MACPO (``manyagent_ant.xml.template``: ``timestep="0.005"``;
#: ``manyagent_ant.py``: ``MujocoEnv.__init__(self, asset_path, 4)``): 0.02 s per control step.
MANY_AGENT_ANT_TIMESTEP = 0.005
MANY_AGENT_ANT_FRAME_SKIP = 4

#: Distance to the obstacle below which a step costs 1 (MACPO ``half_cheetah.py``: ``np.abs(xdist) < 9``; Eq. 37).
OBSTACLE_DISTANCE = 9.0
#: MACPO's obstacle (``assets/half_cheetah.xml``, body ``obj1``): body position, box offset in the body and half
#: sizes, density; joint ``wall_joint`` (slide along x) damping and range, and the model's default joint armature
#: (``<default><joint armature=".1">``); actuator ``wall_joint_ac`` gear. The box starts at x = 5 + 5 = 10 m.
OBSTACLE_BODY_POS = (5.0, 0.0, 0.7)
OBSTACLE_GEOM_POS = (5.0, 0.0, 0.7)
OBSTACLE_HALF_SIZE = (0.1, 2.3, 1.3)
OBSTACLE_DENSITY = 1e-4
OBSTACLE_DAMPING = 0.2
OBSTACLE_ARMATURE = 0.1
OBSTACLE_RANGE = 5000.0
OBSTACLE_GEAR = 120.0
OBSTACLE_START_X = OBSTACLE_BODY_POS[0] + OBSTACLE_GEOM_POS[0]

#: Default limits on the expected episode cost: the MAFOCOPS paper's safety bounds (Figure 3: ManyAgent Ant 25,
#: Ant 50, HalfCheetah 30; Figure 6: Ant 8x1 70; Figure 7: HalfCheetah 30; Figure 8: ManyAgent Ant 2x3/3x2/6x1 25;
#: Figure 9: ManyAgent Ant 2x4/4x2/8x1 80).
ANT_COST_LIMIT = 50.0
ANT_8X1_COST_LIMIT = 70.0
HALF_CHEETAH_COST_LIMIT = 30.0
MANY_AGENT_ANT_SMALL_COST_LIMIT = 25.0
MANY_AGENT_ANT_LARGE_COST_LIMIT = 80.0
#: Speed cost of ``SafeAnt2x4WallSpeed-v0``: safety-gymnasium's Ant 2x4 threshold (``TASK_VELCITY_THRESHOLD``, m/s),
#: with SafePO's velocity-task limit (``--cost-limit 25``, :data:`~rllib_safe.envs.safe_mamujoco.VELOCITY_COST_LIMIT`).
ANT_2X4_SPEED_THRESHOLD = 2.522


@dataclass(frozen=True)
class ObstacleTask:
    """One MACPO Safe MAMuJoCo obstacle task.

    Attributes:
        name: The registered task name.
        scenario: ``"Ant"``, ``"ManySegmentAnt"`` (corridor tasks) or ``"HalfCheetah"`` (moving obstacle).
        agent_conf: The agent partition (MaMuJoCo name, or one of the MACPO partitions given explicitly).
        cost_limit: Default limit on the expected episode cost (MAFOCOPS paper Figures 3, 6-9); one per cost.
        half_width: Corridor tasks: offset ``w`` of each wall from the centre line along ``y`` (m).
        speed_threshold: If set, a second cost: 1 when the planar torso speed exceeds it (m/s).
    """

    name: str
    scenario: Literal["Ant", "ManySegmentAnt", "HalfCheetah"]
    agent_conf: str
    cost_limit: float | tuple[float, ...]
    half_width: float = 0.0
    speed_threshold: float | None = None

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
        ObstacleTask(
            "SafeAnt2x4WallSpeed-v0",
            "Ant",
            "2x4",
            (ANT_COST_LIMIT, VELOCITY_COST_LIMIT),
            5.0,
            speed_threshold=ANT_2X4_SPEED_THRESHOLD,
        ),
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


def macpo_centre_y(x: float) -> float:
    """The centre line with MACPO's branches (``x < 20``, ``20 < x < 60``, ``60 < x < 100``, else ``20·tan30°``).

    Equal to :func:`corridor_centre_y` except at exactly ``x = 60`` (MACPO: ``20·tan30°`` instead of ``-20·tan30°``).
    """
    if x < 20.0:
        return x * TAN30
    if 20.0 < x < 60.0:
        return (40.0 - x) * TAN30
    if 60.0 < x < 100.0:
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


def macpo_wall_distance(x: float, y: float, half_width: float) -> float:
    """MACPO's wall distance: the ``y`` offset ``min(|y - y_c(x) - w|, |y - y_c(x) + w|)`` (:func:`macpo_centre_y`)."""
    offset = y - macpo_centre_y(x)
    return min(abs(offset - half_width), abs(offset + half_width))


def torso_up_z(quat: np.ndarray) -> float:
    """The z component of the torso's up axis, ``1 - 2(q_x² + q_y²)`` for a ``(w, x, y, z)`` quaternion (MACPO)."""
    return 1.0 - 2.0 * (float(quat[1]) ** 2 + float(quat[2]) ** 2)


def is_fallen(z: float, z_up: float) -> bool:
    """MACPO's ``done``: the torso height leaves ``[0.2, 1.0]`` or the torso is toppled (``z_up < -0.7``)."""
    return not (HEALTHY_Z_RANGE[0] <= z <= HEALTHY_Z_RANGE[1]) or z_up < TOPPLE_Z_UP


def corridor_cost(x: float, y: float, z: float, z_up: float, half_width: float, walls: str = "static") -> float:
    """The corridor cost of one step (paper Eq. 36 as MACPO computes it, see the module docstring).

    Args:
        x: Torso x after the step.
        y: Torso y after the step.
        z: Torso height after the step.
        z_up: z component of the torso's up axis (:func:`torso_up_z`).
        half_width: The corridor's wall offset ``w`` (Ant 5, ManyAgent Ant 4.5).
        walls: ``"static"``: planar distance to the wall polyline (:func:`corridor_wall_distance`); ``"macpo"``:
            MACPO's ``y`` offset (:func:`macpo_wall_distance`).

    Returns:
        ``1.0`` if the torso is within :data:`WALL_DISTANCE` of a wall or the robot has fallen, else ``0.0``.
    """
    distance = macpo_wall_distance if walls == "macpo" else corridor_wall_distance
    return float(distance(x, y, half_width) < WALL_DISTANCE or is_fallen(z, z_up))


# ----------------------------------------------------------------------------------------------------------------
# Moving obstacle (paper Eq. 37, MACPO half_cheetah.py).
# ----------------------------------------------------------------------------------------------------------------
def obstacle_drive(t: float) -> float:
    """MACPO's obstacle motor control ``u(t) = 0.02·sin²(t / 3) - 0.004`` (``wall_act``; force ``120·u`` N).

    Args:
        t: Simulated time in seconds at the start of the control step (``data.time``).
    """
    return 0.02 * math.sin(t / 3.0) ** 2 - 0.004


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


@dataclass(frozen=True)
class RobotSize:
    """The robot's share of a scene model: its ``qpos``/``qvel`` entries and bodies come first (world body included)."""

    nq: int
    nv: int
    nbody: int


def _robot_only(spec: mujoco.MjSpec) -> RobotSize:
    """Compiles the robot alone, before the scene objects are added, and returns its sizes.

    Also pins the model statistics to the robot's own, so that long walls do not rescale rendering and visualisation.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        model = spec.compile()
    spec.stat.extent = float(model.stat.extent)
    spec.stat.center = np.asarray(model.stat.center, dtype=np.float64)
    return RobotSize(int(model.nq), int(model.nv), int(model.nbody))


def _infinite_floor(spec: mujoco.MjSpec) -> None:
    """Renders the floor plane without edges (size 0); planes collide without bounds either way."""
    for geom in spec.geoms:
        if geom.type == mujoco.mjtGeom.mjGEOM_PLANE:
            geom.size = [0.0, 0.0, geom.size[2] or 1.0]


def add_corridor_walls(spec: mujoco.MjSpec, half_width: float) -> list[str]:
    """Adds the two folded static walls to ``spec`` as boxes on the world body (``walls="static"``).

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


def add_macpo_walls(spec: mujoco.MjSpec, scenario: str) -> list[str]:
    """Adds MACPO's walls (``walls="macpo"``): free bodies ``b1...`` with one light box geom ``wall1...`` each.

    The geoms take the model's default class (the Ant's friction 1 / 0.5 / 0.5 and margin 0.01, as in MACPO's XML);
    a ``freejoint`` takes no defaults (no armature, no damping), as in MuJoCo's XML.

    Returns:
        The names of the wall bodies.
    """
    names = []
    for i, (x, y, yaw) in enumerate(MACPO_WALLS[scenario], start=1):
        half = math.radians(yaw) / 2
        quat = [math.cos(half), 0.0, 0.0, math.sin(half)]
        body = spec.worldbody.add_body(name=f"b{i}", pos=[x, y, MACPO_WALL_Z], quat=quat)
        body.add_freejoint(name=f"b{i}_fj")
        body.add_geom(
            name=f"wall{i}",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=list(MACPO_WALL_HALF_SIZE),
            density=MACPO_WALL_DENSITY,
            contype=1,
            conaffinity=1,
            condim=3,
            rgba=[1.0, 0.5, 0.5, 1.0],
        )
        names.append(f"b{i}")
    return names


def add_obstacle(spec: mujoco.MjSpec) -> str:
    """Adds MACPO's moving obstacle (module docstring) after the robot: body, slide joint, box and motor.

    The joint and the geom take the model's default class (HalfCheetah's joint armature 0.1, limit softness; geom
    friction 0.4, solref/solimp), as ``obj1`` does in MACPO's ``half_cheetah.xml``.

    Returns:
        The name of the obstacle body.
    """
    body = spec.worldbody.add_body(name="obstacle", pos=list(OBSTACLE_BODY_POS))
    body.add_joint(
        name="obstacle_joint",
        type=mujoco.mjtJoint.mjJNT_SLIDE,
        axis=[1.0, 0.0, 0.0],
        damping=OBSTACLE_DAMPING,
        stiffness=0.0,
        armature=OBSTACLE_ARMATURE,
        range=[-OBSTACLE_RANGE, OBSTACLE_RANGE],
    )
    body.add_geom(
        name="obstacle_geom",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        pos=list(OBSTACLE_GEOM_POS),
        size=list(OBSTACLE_HALF_SIZE),
        density=OBSTACLE_DENSITY,
        contype=1,
        conaffinity=1,
        condim=3,
        rgba=[1.0, 0.3, 0.3, 1.0],
    )
    spec.add_actuator(
        name="obstacle_motor",
        target="obstacle_joint",
        trntype=mujoco.mjtTrn.mjTRN_JOINT,
        gear=[OBSTACLE_GEAR, 0.0, 0.0, 0.0, 0.0, 0.0],
        ctrlrange=[-1.0, 1.0],
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

    The observation covers the robot only (its ``qpos``/``qvel``/bodies come first in the scene). Compiling the spec
    directly (rather than writing it to XML and reading that back) keeps every number of the robot model identical to
    Gymnasium's own (an XML round trip rounds masses and inertias).
    """

    def __init__(self, scene_spec: mujoco.MjSpec, robot: RobotSize, **kwargs: Any) -> None:
        self._scene_spec, self.robot_size = scene_spec, robot
        super().__init__(**kwargs)
        self._scene_spec = None  # compiled; the model no longer needs it
        size = len(self._get_obs())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float64)
        self.observation_structure = {
            **self.observation_structure,
            "qpos": robot.nq - self.observation_structure["skipped_qpos"],
            "qvel": robot.nv,
        }
        if "cfrc_ext" in self.observation_structure:
            self.observation_structure["cfrc_ext"] = 6 * (robot.nbody - 1)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*settotalmass.*")
            model = self._scene_spec.compile()
        model.vis.global_.offwidth = self.width
        model.vis.global_.offheight = self.height
        return model, mujoco.MjData(model)


class _AntScene(_SpecModel, AntEnv):
    """Gymnasium ``Ant-v5`` (reward, termination, observation of the robot) on a scene compiled from an ``MjSpec``.

    With MACPO's free walls the reset noise, drawn over all ``qpos``/``qvel`` as Gymnasium's, leaves the walls at
    their start (MACPO's ``reset_model``: ``qpos[-42:] = self.init_qpos[-42:]``). The reward's contact cost sums the
    contact forces of every body, walls included, as in Gymnasium and MACPO.
    """

    def _get_obs(self) -> np.ndarray:
        r = self.robot_size
        return np.concatenate(
            [self.data.qpos[2 : r.nq], self.data.qvel[: r.nv], self.contact_forces[1 : r.nbody].ravel()]
        )

    def reset_model(self) -> np.ndarray:
        noise = self._reset_noise_scale
        qpos = self.init_qpos + self.np_random.uniform(low=-noise, high=noise, size=self.model.nq)
        qvel = self.init_qvel + noise * self.np_random.standard_normal(self.model.nv)
        r = self.robot_size
        qpos[r.nq :], qvel[r.nv :] = self.init_qpos[r.nq :], self.init_qvel[r.nv :]
        self.set_state(qpos, qvel)
        return self._get_obs()


class _HalfCheetahScene(_SpecModel, HalfCheetahEnv):
    """Gymnasium ``HalfCheetah-v5`` (reward, observation of the robot) with MACPO's motor-driven obstacle.

    The action space is the robot's six motors (MACPO's ``_set_action_space`` drops the last actuator); each control
    step appends the obstacle's drive :func:`obstacle_drive` at the step's start time.
    """

    def _set_action_space(self) -> gym.spaces.Box:
        low, high = self.model.actuator_ctrlrange[:-1].astype(np.float32).T
        self.action_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        return self.action_space

    def do_simulation(self, ctrl: np.ndarray, n_frames: int) -> None:
        super().do_simulation(np.append(ctrl, obstacle_drive(float(self.data.time))), n_frames)

    def _get_obs(self) -> np.ndarray:
        r = self.robot_size
        return np.concatenate([self.data.qpos[1 : r.nq], self.data.qvel[: r.nv]])


def build_corridor_env(
    scenario: str, agent_conf: str, half_width: float, walls: str, render_mode: str | None
) -> tuple[AntEnv, AntEnv | None]:
    """The single-agent ``Ant-v5`` env of a corridor task: the (ManySegment) Ant robot plus the folded walls.

    ManySegmentAnt's XML is generated with MaMuJoCo's ``gen_asset`` into a private temporary directory (MaMuJoCo
    itself writes into, and deletes from, the installed package's assets directory, which fails on a read-only
    install and races between processes) and steps with MACPO's ``timestep``/``frame_skip``.

    Returns:
        The scene env, and the robot alone for MaMuJoCo to factorize when the walls add bodies (else ``None``).
    """
    frame_skip = 5  # Gymnasium Ant-v5 and MACPO ant.py
    with tempfile.TemporaryDirectory(prefix="rllib_safe_") as tmp:
        if scenario == "Ant":
            path, torso = _gym_asset("ant.xml"), "torso"
            spec = _load_spec(path)
        else:
            from gymnasium_robotics.envs.multiagent_mujoco.many_segment_ant import gen_asset

            n_agents, n_segs = (int(v) for v in agent_conf.split("x"))
            path, torso = os.path.join(tmp, "many_segment_ant.xml"), "torso_0"
            gen_asset(n_segs=n_agents * n_segs, asset_path=path)
            spec = _load_spec(path)
            spec.option.timestep, frame_skip = MANY_AGENT_ANT_TIMESTEP, MANY_AGENT_ANT_FRAME_SKIP
        robot = _robot_only(spec)
        robot_spec = spec.copy() if walls == "macpo" else None
        _infinite_floor(spec)
        if walls == "macpo":
            add_macpo_walls(spec, scenario)
        else:
            add_corridor_walls(spec, half_width)
        _add_view_camera(spec, torso, [0.0, -12.0, 10.0], [1.0, 0.0, 0.0, 0.0, 0.640, 0.768])
        scene = _AntScene(
            spec, robot, xml_file=path, frame_skip=frame_skip, render_mode=render_mode, camera_name="scene_view"
        )
        if robot_spec is None:
            return scene, None
        return scene, _AntScene(robot_spec, robot, xml_file=path, frame_skip=frame_skip)


def build_obstacle_env(render_mode: str | None) -> tuple[HalfCheetahEnv, HalfCheetahEnv]:
    """The single-agent ``HalfCheetah-v5`` env of an obstacle task: the robot plus MACPO's moving obstacle.

    Returns:
        The scene env, and the robot alone for MaMuJoCo to factorize.
    """
    path = _gym_asset("half_cheetah.xml")
    spec = _load_spec(path)
    robot = _robot_only(spec)
    robot_spec = spec.copy()
    _infinite_floor(spec)
    add_obstacle(spec)
    _add_view_camera(spec, "torso", [6.0, -24.0, 4.0], [1.0, 0.0, 0.0, 0.0, 0.174, 0.985])
    scene = _HalfCheetahScene(spec, robot, xml_file=path, render_mode=render_mode, camera_name="scene_view")
    return scene, _HalfCheetahScene(robot_spec, robot, xml_file=path)


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
        obs_mode: ``"local"`` (default): MaMuJoCo local observations within ``agent_obsk`` joints plus the task's
            extra features; ``"global"``: the global state plus a one-hot agent id; ``"macpo"``: MACPO's observation,
            ``standardize(concat(original_vector(), one_hot))`` (:meth:`original_vector`, :class:`MaMuJoCoTask`).
        agent_obsk: Graph distance of the observed joints in ``"local"`` mode (MaMuJoCo default: 1).
        max_episode_steps: Time limit; reaching it truncates the episode (default 1000, MACPO ``episode_limit``).
        cost_limit: The limit on the expected episode cost that algorithms use when their config gives none
            (default: the task's MAFOCOPS-paper safety bound, :attr:`ObstacleTask.cost_limit`); a number or one
            number per cost.
        render_mode: ``None``, ``"rgb_array"`` or ``"depth_array"`` (headless through ``MUJOCO_GL=egl``).
        walls: Corridor tasks: ``"static"`` (default) or ``"macpo"`` (:data:`WALL_MODELS`, module docstring).

    Observation, action and state spaces are ``float32`` Boxes. The extra features (module docstring) follow each
    agent's MaMuJoCo local observation and the single-agent ``*-v5`` observation in the global state.
    """

    obs_modes = ("local", "global", "macpo")

    def __init__(
        self,
        task: str = "SafeAnt2x4-v0",
        obs_mode: Literal["local", "global", "macpo"] = "local",
        agent_obsk: int = 1,
        max_episode_steps: int = 1000,
        cost_limit: float | list[float] | None = None,
        render_mode: str | None = None,
        walls: Literal["static", "macpo"] = "static",
    ) -> None:
        if task not in OBSTACLE_TASKS:
            raise ValueError(f"Unknown obstacle task {task!r}; known: {sorted(OBSTACLE_TASKS)}.")
        self.spec_ = OBSTACLE_TASKS[task]
        if walls not in WALL_MODELS or (walls != "static" and not self.spec_.is_corridor):
            known = WALL_MODELS if self.spec_.is_corridor else ("static",)
            raise ValueError(f"walls must be one of {known} for {task}, got {walls!r}.")
        self.walls = walls
        self.num_costs = 1 if self.spec_.speed_threshold is None else 2
        super().__init__(
            task,
            obs_mode=obs_mode,
            agent_obsk=agent_obsk,
            max_episode_steps=max_episode_steps,
            cost_limit=cost_limit,
            default_cost_limit=self.spec_.cost_limit,
            render_mode=render_mode,
            num_extra=2 if self.spec_.is_corridor else 3,
        )
        self.dt = float(self.robot.env.dt)

    def _build_robot(self, agent_obsk: int) -> MaMuJoCoRobot:
        if self.spec_.is_corridor:
            gym_env, robot_env = build_corridor_env(
                self.spec_.scenario, self.spec_.agent_conf, self.spec_.half_width, self.walls, self.render_mode
            )
        else:
            gym_env, robot_env = build_obstacle_env(self.render_mode)
            model = gym_env.model
            self._obstacle_geom = int(model.geom("obstacle_geom").id)
            self._obstacle_dof = int(model.jnt_dofadr[model.joint("obstacle_joint").id])
        robot = MaMuJoCoRobot(
            self.spec_.scenario,
            self.spec_.agent_conf,
            agent_obsk=agent_obsk,
            gym_env=gym_env,
            agent_factorization=macpo_factorization(self.spec_.scenario, self.spec_.agent_conf),
            factorize_env=robot_env,
        )
        if robot_env is not None:
            robot_env.close()
        return robot

    # ----------------------------------------------------------------------------------------------------------
    # Task quantities read from the MuJoCo state.
    # ----------------------------------------------------------------------------------------------------------
    @property
    def obstacle_x(self) -> float:
        """Moving-obstacle tasks: the x of the obstacle's box centre."""
        return float(self.robot.env.data.geom_xpos[self._obstacle_geom, 0])

    def extra_features(self) -> np.ndarray:
        """The task features appended to every observation and to the state (see the module docstring).

        Corridor: ``[x / 5, y - y_c(x)]``; moving obstacle: MACPO's ``[obstacle velocity, u(t),
        clip((x_obstacle - x_torso) / 10, -5, 5)]`` with ``u(t)`` the drive of the coming step.
        """
        data = self.robot.env.data
        x = float(data.qpos[0])
        if self.spec_.is_corridor:
            return np.array([x / 5.0, float(data.qpos[1]) - corridor_centre_y(x)])
        gap = min(5.0, max(-5.0, (self.obstacle_x - x) / 10.0))
        return np.array([float(data.qvel[self._obstacle_dof]), obstacle_drive(float(data.time)), gap])

    def original_vector(self) -> np.ndarray:
        """MACPO's single-agent observation (the task env's ``_get_obs``), which ``obs_mode="macpo"`` standardises.

        Corridor (``ant.py`` / ``manyagent_ant.py``): ``qpos[2:-42]``, ``qvel[:-36]`` of MACPO's model, then
        ``x / 5`` and ``y - y_c(x)`` (MACPO's branches, :func:`macpo_centre_y`). MACPO's slices assume six free wall
        bodies after the robot: for the Ant that is the robot's ``qpos[2:]`` and ``qvel`` (13 + 14 values, no contact
        forces: 29 in all); MACPO's ManyAgent Ant has two walls, so its slices also drop the robot's last 28 ``qpos``
        and 24 ``qvel`` entries, and MACPO's agents see only the torso height, its first segment's joints (8
        segments) and the torso velocities: 9 values (6 segments) or 25 (8 segments), reproduced here.

        Moving obstacle (``half_cheetah.py``): the cheetah's ``qpos[1:]`` and ``qvel`` (17 values; MACPO's
        ``qpos[2:]``/``qvel[1:]`` skip its obstacle joint, which comes first there) and the three features of
        :meth:`extra_features`: 20 values.
        """
        data, r = self.robot.env.data, self.robot.env.robot_size
        if not self.spec_.is_corridor:
            return np.concatenate([data.qpos[1 : r.nq], data.qvel[: r.nv], self.extra_features()])
        macpo_walls = len(MACPO_WALLS[self.spec_.scenario])
        qpos_end = r.nq + 7 * (macpo_walls - MACPO_OBS_WALL_BODIES)
        qvel_end = r.nv + 6 * (macpo_walls - MACPO_OBS_WALL_BODIES)
        x, y = float(data.qpos[0]), float(data.qpos[1])
        return np.concatenate([data.qpos[2:qpos_end], data.qvel[:qvel_end], [x / 5.0, y - macpo_centre_y(x)]])

    def current_cost(self) -> float:
        """The obstacle/wall cost of the current MuJoCo state (Eq. 36 for corridors, Eq. 37 for the obstacle)."""
        qpos = self.robot.env.data.qpos
        if self.spec_.is_corridor:
            x, y, z = float(qpos[0]), float(qpos[1]), float(qpos[2])
            return corridor_cost(x, y, z, torso_up_z(qpos[3:7]), self.spec_.half_width, self.walls)
        return obstacle_cost(self.obstacle_x, float(qpos[0]))

    def toppled(self) -> bool:
        """Corridor tasks: whether the torso is toppled (``z_up < -0.7``), which MACPO also treats as a fall."""
        return self.spec_.is_corridor and torso_up_z(self.robot.env.data.qpos[3:7]) < TOPPLE_Z_UP

    def _features_for_state(self) -> np.ndarray | None:
        """The extra features of the raw-state modes (the original modes read them in :meth:`original_vector`)."""
        return None if self.obs_mode in ORIGINAL_OBS_MODES else self.extra_features()

    # ----------------------------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options: dict | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        state64, _ = self.robot.env.reset(seed=seed)
        return self._observe(state64, self._features_for_state())

    def _step(self, actions: dict[str, np.ndarray]):
        sim = self.robot.env
        state64, reward, terminated, _, info = sim.step(self.robot.global_action(actions))
        check_mujoco_stable(sim.data, self.task_name, self._t + 1)
        obs, state = self._observe(state64, self._features_for_state())
        cost = self.current_cost()
        if self.spec_.speed_threshold is not None:
            cost = np.array([cost, velocity_cost(info, self.spec_.speed_threshold)], dtype=np.float32)
        terminated = bool(terminated) or self.toppled()
        return obs, state, reward, cost, terminated, {}


def task_factories() -> dict[str, Any]:
    """The registry entries of this module: task name -> constructor taking the task's keyword options."""
    return {name: _factory(name) for name in OBSTACLE_TASKS}


def _factory(name: str):
    def make(**kwargs: Any) -> SafeMAMuJoCoObstacle:
        return SafeMAMuJoCoObstacle(name, **kwargs)

    return make
