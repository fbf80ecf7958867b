"""Safe multi-agent ShadowHand tasks (Safe MAIG) on MuJoCo, built from the Shadow hand that gymnasium-robotics ships.

The MAFOCOPS paper (Zhao et al., Appendix F.2) and MACPO's "Safe Multi-Agent Isaac Gym"
(chauncygu/Safe-Multi-Agent-Isaac-Gym, ``dexteroushandenvs/tasks/shadow_hand_over.py`` and
``shadow_hand_re_orientation.py``, themselves built on PKU-MARL/DexterousHands) run these tasks in Isaac Gym, which
needs Python <= 3.8 and cannot share a process with Ray 2.60. This module rebuilds them in MuJoCo from the same hand
model: the OpenAI Shadow hand MJCF (``robot.xml``, ``shared.xml``, ``shared_asset.xml`` and the STL meshes under
``gymnasium_robotics/envs/assets/hand``), which is the model Isaac's ``mjcf/open_ai_assets/hand/shadow_hand.xml``
loads. The assets are read from the installed gymnasium-robotics package; nothing is copied into this repository.
Physics (MuJoCo's soft contacts vs PhysX) differs, so returns are not comparable with the papers' curves; the task
layout, observation layout, reward and cost rules follow the sources.

Tasks:

* ``SafeShadowHandOver-v0`` — two hands, palms up, fingertips towards each other; the first hand holds an egg and must
  pass it to the second hand. 75 steps.
* ``SafeShadowHandReOrientation-v0`` — each hand holds a block and turns it to its goal orientation. 600 steps.

Scene (all lengths in m, world frame, z up, gravity -9.81):

* **Hands.** Hand 0 (``agent_0``) has its mount at ``(0, 0, 0.5)``, hand 1 (``agent_1``) at ``(0, -1, 0.5)``
  (HandOver) or ``(0, -1.15, 0.5)`` (ReOrientation), turned by pi about z, as in the Isaac tasks. The mount keeps the
  asset's orientation (``euler="1.5708 0 3.14159"``): forearm horizontal, palm up, fingers towards the other hand; the
  palms are 0.42 m (0.57 m) apart. Mounts are fixed; all hand bodies are gravity-compensated (``gravcomp=1``), as the
  Isaac tasks load the hands with ``disable_gravity=True``. The two hands do not collide with each other (the asset's
  hand geoms have ``conaffinity=0``); they collide with the objects and the floor.
* **Objects.** HandOver: an egg, the ellipsoid of gymnasium-robotics ``manipulate_egg.xml`` (semi-axes 0.03, 0.03,
  0.04). ReOrientation: one block per hand, the cube of ``manipulate_block.xml`` (half size 0.025). Density 500 kg/m³
  (Isaac's ``object_asset_options.density``). Each starts 0.37 m from its hand's mount along the fingers and 0.045 m
  above it (Isaac: 0.39 and 0.04; moved 2 cm towards the palm because the start pose below is half closed), plus
  uniform noise of +-0.01 per axis (Isaac ``resetPositionNoise``), with a random orientation
  ``q_x(pi u0) * q_y(pi u1)``, ``u ~ U(-1, 1)`` (Isaac ``randomize_rotation``).
* **Hand start pose.** Every actuated joint starts at the centre of its control range plus
  ``0.2 * half range * U(-1, 1)`` (Isaac ``resetDofPosRandomInterval: 0.2``, there around the flat hand), the
  tendon-coupled distal joints at the coupling ratio, velocities zero; the position targets start at these joint
  positions. The centre pose is a loosely closed hand that cups the object. :meth:`SafeShadowHand.hold_actions`
  returns the actions that keep these start targets; the zero action commands the centre pose. With either, the
  objects stay in the palms (the tests run 30 steps; over seeds 0-29 they stayed for the full 75 / 600 steps).
* **Goals** (visual mocap bodies, no collision). HandOver: 0.25 m past the egg's nominal start towards hand 1 (Isaac
  ``goal_states[:, 1] -= 0.25``), i.e. above hand 1's palm, with a random orientation as above. ReOrientation: each
  block's nominal start position with its own random orientation (Isaac gives both goals one orientation).
* **Control.** MuJoCo timestep 1/480 s, 8 substeps per control step: 60 Hz control, Isaac's ``controlFrequencyInv 1``
  at ``dt = 1/60``. Actions are clipped to [-1, 1] and mapped to absolute joint-position targets
  ``centre + a * half range`` of the 20 position actuators of each hand (Isaac ``useRelativeControl: False``,
  ``scale(a, lower, upper)``). Action order (per agent): WRJ1, WRJ0, FFJ3, FFJ2, FFJ1, MFJ3, MFJ2, MFJ1, RFJ3, RFJ2,
  RFJ1, LFJ4, LFJ3, LFJ2, LFJ1, THJ4, THJ3, THJ2, THJ1, THJ0; index 4 is ``A_FFJ1``, the fore finger's middle joint.

Observations mirror Isaac's ``full_state`` layout and MACPO's ``MultiVecTask`` split. Per hand (187 values):

===========  ============================================================================================
``0:24``     joint positions of the 24 hand joints (order WRJ1, WRJ0, FFJ3..FFJ0, MFJ3..0, RFJ3..0, LFJ4..0,
             THJ4..0), unscaled from the joint range to [-1, 1]
``24:48``    joint velocities x 0.2
``48:72``    joint actuator forces (``qfrc_actuator``, the position servos' torques; 0 on the 4 tendon-coupled
             joints) x 10 — Isaac observes its DOF force sensors x 10
``72:137``   5 fingertips (ff, mf, rf, lf, th distal bodies) x (position 3, quaternion 4, linear velocity 3,
             angular velocity 3), world frame
``137:167``  5 fingertips x (force 3, torque 3) between each distal body and its parent (MuJoCo ``force`` and
             ``torque`` sensors at the body origin, in the body frame) x 10
``167:187``  the hand's last (clipped) action; zeros after reset
===========  ============================================================================================

Per object (24 values): position 3, quaternion 4, linear velocity 3, angular velocity x 0.2 3 (world frame), goal
position 3, goal quaternion 4, ``q_object * conj(q_goal)`` 4. Quaternions are MuJoCo's ``(w, x, y, z)`` (Isaac writes
``(x, y, z, w)``). The global state is ``[hand 0, hand 1, objects]``: 398 values (HandOver) or 422 (ReOrientation, two
objects); agent ``i`` observes ``[hand i, objects]``: 211 or 235 values — Isaac's sizes. Observations are not clipped
(MACPO's wrapper clips to [-5, 5]).

Reward (team reward, every agent gets it), with ``d`` the object-goal distance and
``theta = 2 asin(min(|vec(q_object * conj(q_goal))|, 1))`` the rotation angle between object and goal:

* HandOver: ``exp(-0.2 (50 d + theta))`` (DexterousHands ``compute_hand_reward``, ``distRewardScale 50``; its reach
  bonus needs ``d <= 0`` and its fall penalty is 0, so neither is added).
* ReOrientation: ``-10 (d1 + d2) + 1.5 / (|theta1| + 0.1) + 1.5 / (|theta2| + 0.1) - 0.0002 |a|²`` over both
  hands' 40 actions (MACPO ``shadow_hand_re_orientation.py`` with ``cfg/shadow_hand_re_orientation.yaml``:
  ``distRewardScale -10``, ``rotRewardScale 1.5``, ``rotEps 0.1``, ``actionPenaltyScale -0.0002``; its success
  bonus never fires: ``goal_resets`` needs ``|theta1 + theta2| < 0``).

Episodes terminate when an object falls: its height ``z <= 0.2`` (Isaac resets at ``object_pos[:, 2] <= 0.2`` with the
hands at ``z = 0.5``); they are truncated at 75 (HandOver) or 600 (ReOrientation) steps.

Cost (team cost, every agent gets it; one constraint): ``1`` when a watched entry of the 40 actions (hand 0's 20,
then hand 1's) exceeds the threshold in absolute value, else ``0`` (:data:`COST_RULES`). HandOver watches the first
hand (``agent_0``) only, as both sources do; ReOrientation watches both hands.

* ``"macpo"`` (default): the MACPO Safe MAIG code's ``compute_cost``, ``actions[:, i] < -0.1 or > 0.1`` for ``i = 4``
  (hand 0's ``A_FFJ1``, the fore finger's middle joint) and, in ReOrientation, ``i = 4 + 24 = 28``, which is hand 1's
  ``A_RFJ3`` (index 8 of its 20 actions; the ``+ 24`` looks like an offset meant for 24 joints per hand, but MACPO's
  actions have 20 per hand). MAFOCOPS Eq. (38) writes ``||F_a4|| >= 0.1``; we use the code's strict ``>``: an action
  of exactly 0.1 costs 0.
* ``"ffj1"``: ``|a[4]| > 0.1`` on each watched hand's own 20 actions (ReOrientation: indices 4 and 24, both hands'
  ``A_FFJ1``), Eq. (38) applied per hand; rllib_safe's ReOrientation rule before it offered MACPO's.
* ``"safe_joint"``: ``|a[4]| > 0.5``; ``"safe_finger"``: any of ``|a[2]|, |a[3]|, |a[4]|`` ``> 0.5`` — the rules of
  safety-gymnasium's ``ShadowHandOver_Safe_joint`` / ``_Safe_finger`` (``compute_cost``), on each watched hand.

The comparison is made in float32, the dtype of the action space, so that ``0.1`` as given equals the threshold.

Default cost limits: 15 (HandOver) and 110 (ReOrientation), the safety bounds of the MAFOCOPS paper's Safe MAIG
experiments (Figure 4: "The safety constraint value for ShadowHandOver is set to be 15 and that for another task is set
to be 110").
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import mujoco
import numpy as np

from rllib_safe.envs.base import SafeMultiAgentEnv, check_number

#: MuJoCo timestep (s) and substeps per control step: 60 Hz control as Isaac's ``dt = 1/60``, ``controlFrequencyInv 1``.
TIMESTEP = 1.0 / 480.0
SUBSTEPS = 8
#: Isaac's observation scales: ``vel_obs_scale`` and ``force_torque_obs_scale``.
VEL_OBS_SCALE = 0.2
FORCE_TORQUE_OBS_SCALE = 10.0
#: An object whose height is at most this has fallen (Isaac ``object_pos[:, 2] <= 0.2``); the hands are at 0.5.
FALL_HEIGHT = 0.2
#: Height of the hand mounts (Isaac ``shadow_hand_start_pose.p.z``).
HAND_HEIGHT = 0.5
#: Object start relative to its hand's mount, in the hand's frame (y along the fingers, z up); see the module docstring.
OBJECT_OFFSET = (0.0, -0.37, 0.045)
#: Uniform noise of the object start position per axis (Isaac ``resetPositionNoise``).
OBJECT_POSITION_NOISE = 0.01
#: Start-pose noise of the actuated joints, as a fraction of their half range (Isaac ``resetDofPosRandomInterval``).
JOINT_POSITION_NOISE = 0.2
#: HandOver goal: this far past the object's nominal start towards hand 1 (Isaac ``goal_states[:, 1] -= 0.25``).
HANDOVER_GOAL_SHIFT = 0.25
#: Distance below which the object counts as delivered (DexterousHands ``successes`` at ``goal_dist < 0.03``).
SUCCESS_DISTANCE = 0.03
#: ReOrientation reward scales (MACPO ``cfg/shadow_hand_re_orientation.yaml``: ``distRewardScale``,
#: ``rotRewardScale``, ``rotEps``, ``actionPenaltyScale``).
REORIENT_DIST_SCALE = -10.0
REORIENT_ROT_SCALE = 1.5
REORIENT_ROT_EPS = 0.1
REORIENT_ACTION_PENALTY = -0.0002

#: The 24 joints of one hand, in the asset's (and Isaac's DOF) order.
HAND_JOINTS = (
    "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1", "FFJ0",
    "MFJ3", "MFJ2", "MFJ1", "MFJ0",
    "RFJ3", "RFJ2", "RFJ1", "RFJ0",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0",
    "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)  # fmt: skip
#: The 20 actuated joints of one hand: the action order (the asset's actuator order ``A_<joint>``).
ACTUATED_JOINTS = (
    "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1",
    "MFJ3", "MFJ2", "MFJ1",
    "RFJ3", "RFJ2", "RFJ1",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1",
    "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)  # fmt: skip
#: Fingers whose distal joint J0 follows J1 through the asset's coupling tendon ``T_<f>FJ1c``.
COUPLED_FINGERS = ("FF", "MF", "RF", "LF")
#: Fingertip bodies observed, in Isaac's order.
FINGERTIPS = ("ffdistal", "mfdistal", "rfdistal", "lfdistal", "thdistal")

NUM_ACTIONS = len(ACTUATED_JOINTS)  # 20 per hand
HAND_OBS_DIM = 3 * len(HAND_JOINTS) + 19 * len(FINGERTIPS) + NUM_ACTIONS  # 72 + 95 + 20 = 187
OBJECT_OBS_DIM = 24  # pose 7, linear velocity 3, angular velocity 3, goal pose 7, quaternion difference 4

ObjectType = Literal["egg", "block"]


@dataclass(frozen=True)
class CostRule:
    """A Safe MAIG action-cost rule: cost 1 when any watched action entry exceeds the threshold in absolute value.

    Attributes:
        first_hand: The watched entries of hand 0's 20 actions.
        second_hand: The watched entries of hand 1's 20 actions, in tasks that watch both hands (ReOrientation).
        threshold: The bound on ``|a[i]|``; the comparison is strict (``>``).
        source: Where the rule comes from.
    """

    first_hand: tuple[int, ...]
    second_hand: tuple[int, ...]
    threshold: float
    source: str

    def watched(self, both_hands: bool) -> tuple[int, ...]:
        """The watched entries of the 40 actions (hand 0's, then hand 1's at ``20 + i``)."""
        return self.first_hand + (tuple(NUM_ACTIONS + i for i in self.second_hand) if both_hands else ())


#: The selectable cost rules (option ``cost_rule``; see the module docstring).
COST_RULES: dict[str, CostRule] = {
    "macpo": CostRule(
        (4,), (8,), 0.1, "MACPO Safe MAIG compute_cost: actions[:, 4] (and ReOrientation actions[:, 4 + 24]) beyond 0.1"
    ),
    "ffj1": CostRule((4,), (4,), 0.1, "MAFOCOPS Eq. (38) on each watched hand's A_FFJ1"),
    "safe_joint": CostRule((4,), (4,), 0.5, "safety-gymnasium ShadowHandOver_Safe_joint compute_cost"),
    "safe_finger": CostRule((2, 3, 4), (2, 3, 4), 0.5, "safety-gymnasium ShadowHandOver_Safe_finger compute_cost"),
}


@dataclass(frozen=True)
class ShadowHandTask:
    """One Safe ShadowHand task.

    Attributes:
        name: The registered task name.
        object_type: ``"egg"`` or ``"block"``.
        num_objects: 1 (the first hand holds it) or 2 (one per hand).
        second_hand_y: The y coordinate of hand 1's mount (hand 0's is at y = 0).
        max_episode_steps: Isaac ``episodeLength``.
        cost_limit: Default limit on the expected episode cost (MAFOCOPS Figure 4).
        both_hands: Whether the cost rule watches both hands' actions (else hand 0's only).
    """

    name: str
    object_type: ObjectType
    num_objects: int
    second_hand_y: float
    max_episode_steps: int
    cost_limit: float
    both_hands: bool


SHADOW_HAND_TASKS: dict[str, ShadowHandTask] = {
    t.name: t
    for t in (
        ShadowHandTask("SafeShadowHandOver-v0", "egg", 1, -1.0, 75, 15.0, False),
        ShadowHandTask("SafeShadowHandReOrientation-v0", "block", 2, -1.15, 600, 110.0, True),
    )
}


def shadow_hand_cost(actions: np.ndarray, indices: tuple[int, ...], threshold: float) -> float:
    """The Safe MAIG action cost of one step (MAFOCOPS Eq. 38 with the MACPO code's strict comparison).

    Args:
        actions: Both hands' 40 actions (hand 0's, then hand 1's), already clipped to [-1, 1].
        indices: The watched entries (:meth:`CostRule.watched`).
        threshold: The bound on ``|a[i]|``.

    Returns:
        ``1.0`` if any watched ``|a[i]|`` is strictly greater than ``threshold`` (compared in float32), else ``0.0``.
    """
    watched = np.abs(np.asarray(actions, dtype=np.float32).reshape(-1)[list(indices)])
    return float(np.any(watched > np.float32(threshold)))


def asset_dir() -> str:
    """The Shadow hand assets of the installed gymnasium-robotics package (``envs/assets/hand``)."""
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or spec.origin is None:
        raise ImportError("The Safe ShadowHand tasks need gymnasium-robotics (pip install gymnasium-robotics==1.4.2).")
    path = os.path.join(os.path.dirname(spec.origin), "envs", "assets", "hand")
    if not os.path.isfile(os.path.join(path, "reach.xml")):
        raise FileNotFoundError(f"No Shadow hand assets in {path} (expected gymnasium-robotics' reach.xml there).")
    return path


def _quat_about(axis: int, angle: np.ndarray) -> np.ndarray:
    """Quaternions ``(w, x, y, z)`` of rotations by ``angle`` about the coordinate axis ``axis``; shape ``(..., 4)``."""
    angle = np.asarray(angle, dtype=np.float64)
    q = np.zeros((*angle.shape, 4))
    q[..., 0] = np.cos(angle / 2)
    q[..., 1 + axis] = np.sin(angle / 2)
    return q


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of ``(w, x, y, z)`` quaternions, broadcast over leading axes."""
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """Conjugate of ``(w, x, y, z)`` quaternions."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def rotation_distance(q_diff: np.ndarray) -> np.ndarray:
    """Rotation angle of ``q_object * conj(q_goal)``: ``2 asin(min(|vec|, 1))`` (DexterousHands ``rot_dist``)."""
    return 2.0 * np.arcsin(np.minimum(np.linalg.norm(q_diff[..., 1:], axis=-1), 1.0))


def random_rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random orientations ``q_x(pi u0) * q_y(pi u1)``, ``u ~ U(-1, 1)`` (Isaac ``randomize_rotation``)."""
    u = rng.uniform(-1.0, 1.0, size=(n, 2))
    return quat_mul(_quat_about(0, np.pi * u[:, 0]), _quat_about(1, np.pi * u[:, 1]))


def build_model(task: ShadowHandTask) -> mujoco.MjModel:
    """Builds the two-hand scene of a task with ``mujoco.MjSpec`` (see the module docstring for the layout).

    Each hand is gymnasium-robotics' ``reach.xml`` hand (mount body and subtree with its tendons, actuators and contact
    pairs), attached under a frame with the prefix ``hand<i>/``; its own sensors are dropped. Added: a site at every
    fingertip body origin, the observation sensors (:class:`SafeShadowHand` reads them), the objects, the goal markers,
    a floor and a light. Building takes about 0.1 s (the STL meshes are read from the installed package).

    Args:
        task: The task whose scene to build.

    Returns:
        The compiled model.
    """
    root = asset_dir()
    spec = mujoco.MjSpec()
    spec.modelname = task.name
    spec.option.timestep = TIMESTEP
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480
    hand_mounts = ((0.0, 0.0, HAND_HEIGHT, 0.0), (0.0, task.second_hand_y, HAND_HEIGHT, math.pi))
    for i, (x, y, z, yaw) in enumerate(hand_mounts):
        child = mujoco.MjSpec.from_file(os.path.join(root, "reach.xml"))
        # Take the parent's sizes and solver settings so that attaching raises no conflicts.
        child.option.timestep = spec.option.timestep
        child.option.iterations = spec.option.iterations
        for key in ("njmax", "nconmax", "nuser_jnt", "nuser_site", "nuser_tendon", "nuser_sensor", "nuser_actuator"):
            setattr(child, key, getattr(spec, key))
        for sensor in list(child.sensors):
            child.delete(sensor)
        mount = child.body("robot0:hand mount")
        mount.pos = [0.0, 0.0, 0.0]
        mount.gravcomp = 1.0
        for body in mount.find_all(mujoco.mjtObj.mjOBJ_BODY):
            body.gravcomp = 1.0
        for tip in FINGERTIPS:
            child.body(f"robot0:{tip}").add_site(name=f"robot0:S_{tip}_ft", pos=[0.0, 0.0, 0.0], group=4)
        frame = spec.worldbody.add_frame(pos=[x, y, z], quat=_quat_about(2, np.array(yaw)).tolist())
        frame.attach_body(mount, f"hand{i}/", "")

    # Observation sensors: per hand 5 fingertips x (pos, quat, linvel, angvel), then 5 x (force, torque); per object
    # (pos, quat, linvel, angvel). The sensor order is the observation order (see SafeShadowHand._layout).
    frame_sensors = (
        mujoco.mjtSensor.mjSENS_FRAMEPOS,
        mujoco.mjtSensor.mjSENS_FRAMEQUAT,
        mujoco.mjtSensor.mjSENS_FRAMELINVEL,
        mujoco.mjtSensor.mjSENS_FRAMEANGVEL,
    )
    for i in range(2):
        for tip in FINGERTIPS:
            for kind in frame_sensors:
                spec.add_sensor(type=kind, objtype=mujoco.mjtObj.mjOBJ_XBODY, objname=f"hand{i}/robot0:{tip}")
        for tip in FINGERTIPS:
            for kind in (mujoco.mjtSensor.mjSENS_FORCE, mujoco.mjtSensor.mjSENS_TORQUE):
                spec.add_sensor(type=kind, objtype=mujoco.mjtObj.mjOBJ_SITE, objname=f"hand{i}/robot0:S_{tip}_ft")

    rgba = ((0.6, 0.72, 0.98, 1.0), (0.98, 0.6, 0.72, 1.0))
    for j in range(task.num_objects):
        body = spec.worldbody.add_body(name=f"object{j}", pos=list(_object_start(task, j)))
        body.add_freejoint(name=f"object{j}")
        goal = spec.worldbody.add_body(name=f"goal{j}", pos=list(_goal_position(task, j)), mocap=True)
        for target, alpha in ((body, 1.0), (goal, 0.35)):
            geom = target.add_geom(rgba=[*rgba[j][:3], alpha])
            if task.object_type == "egg":
                geom.type = mujoco.mjtGeom.mjGEOM_ELLIPSOID
                geom.size = [0.03, 0.03, 0.04]
            else:
                geom.type = mujoco.mjtGeom.mjGEOM_BOX
                geom.size = [0.025, 0.025, 0.025]
            if target is body:
                geom.density = 500.0
                geom.condim = 4
            else:
                geom.contype = 0
                geom.conaffinity = 0
                geom.group = 2
        for kind in frame_sensors:
            spec.add_sensor(type=kind, objtype=mujoco.mjtObj.mjOBJ_XBODY, objname=f"object{j}")

    spec.worldbody.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.0, 1.5, 0.05], pos=[0.0, -0.5, 0.0],
        rgba=[0.35, 0.4, 0.45, 1.0],
    )  # fmt: skip
    spec.worldbody.add_light(pos=[0.0, -0.5, 3.0], dir=[0.0, 0.0, -1.0], diffuse=[0.8, 0.8, 0.8])
    return spec.compile()


def _object_start(task: ShadowHandTask, j: int) -> np.ndarray:
    """Nominal start position of object ``j`` (in hand ``j``'s palm; hand 1 faces the other way)."""
    dx, dy, dz = OBJECT_OFFSET
    if j == 0:
        return np.array([dx, dy, HAND_HEIGHT + dz])
    return np.array([-dx, task.second_hand_y - dy, HAND_HEIGHT + dz])


def _goal_position(task: ShadowHandTask, j: int) -> np.ndarray:
    """Goal position of object ``j``: HandOver shifts it towards hand 1; ReOrientation keeps the start position."""
    pos = _object_start(task, j)
    if task.num_objects == 1:
        pos[1] -= HANDOVER_GOAL_SHIFT
    return pos


class SafeShadowHand(SafeMultiAgentEnv):
    """A Safe ShadowHand task (Safe MAIG on MuJoCo) as an RLlib ``MultiAgentEnv``; see the module docstring.

    Args:
        task: One of :data:`SHADOW_HAND_TASKS`.
        max_episode_steps: Time limit; reaching it truncates the episode (default: 75 HandOver, 600 ReOrientation,
            Isaac ``episodeLength``).
        cost_limit: The limit on the expected episode cost that algorithms use when their config gives none
            (default: 15 HandOver, 110 ReOrientation, MAFOCOPS Figure 4).
        cost_rule: ``"macpo"`` (default), ``"ffj1"``, ``"safe_joint"`` or ``"safe_finger"`` (:data:`COST_RULES`).
        cost_threshold: Overrides the rule's threshold on ``|a[i]|``.
        render_mode: ``None`` or ``"rgb_array"`` (a 480x640 image; headless with ``MUJOCO_GL=egl`` set before MuJoCo
            is first imported).

    Raises:
        ValueError: On an unknown task or an invalid option (the message names the option).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 60}

    def __init__(
        self,
        task: str = "SafeShadowHandOver-v0",
        max_episode_steps: int | None = None,
        cost_limit: float | None = None,
        cost_rule: str = "macpo",
        cost_threshold: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if task not in SHADOW_HAND_TASKS:
            raise ValueError(f"Unknown ShadowHand task {task!r}; known: {sorted(SHADOW_HAND_TASKS)}.")
        spec = SHADOW_HAND_TASKS[task]
        if max_episode_steps is None:
            max_episode_steps = spec.max_episode_steps
        self._set_episode_options(task, max_episode_steps, cost_limit, spec.cost_limit)
        if cost_rule not in COST_RULES:
            raise ValueError(f"cost_rule must be one of {sorted(COST_RULES)}, got {cost_rule!r}.")
        if cost_threshold is not None:
            check_number("cost_threshold", cost_threshold)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")

        self.spec_ = spec
        self.cost_rule = cost_rule
        rule = COST_RULES[cost_rule]
        #: The watched entries of the 40 actions (hand 0's, then hand 1's).
        self.cost_indices = rule.watched(spec.both_hands)
        self.cost_threshold = rule.threshold if cost_threshold is None else float(cost_threshold)
        self.render_mode = render_mode
        self._renderer: mujoco.Renderer | None = None
        self._camera: mujoco.MjvCamera | None = None

        self.model = build_model(spec)
        self.data = mujoco.MjData(self.model)
        self._index_model()
        self._layout()

        self.possible_agents = ["agent_0", "agent_1"]
        self.agents = list(self.possible_agents)
        obs_dim = HAND_OBS_DIM + OBJECT_OBS_DIM * spec.num_objects
        self.observation_spaces = {
            aid: gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32) for aid in self.possible_agents
        }
        self.action_spaces = {
            aid: gym.spaces.Box(-1.0, 1.0, (NUM_ACTIONS,), np.float32) for aid in self.possible_agents
        }
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (self._state_dim,), np.float32)
        self._last_actions = np.zeros((2, NUM_ACTIONS), dtype=np.float32)
        self._hold = np.zeros((2, NUM_ACTIONS), dtype=np.float32)
        self._goal_quat = np.tile([1.0, 0.0, 0.0, 0.0], (spec.num_objects, 1))

    # ----------------------------------------------------------------------------------------------------------
    # Model indexing (once per env; the step only uses the arrays built here).
    # ----------------------------------------------------------------------------------------------------------
    def _index_model(self) -> None:
        m = self.model
        joint_ids = np.array([[m.joint(f"hand{h}/robot0:{j}").id for j in HAND_JOINTS] for h in range(2)])
        #: qpos / qvel addresses of both hands' 24 joints, shape (48,) (hand 0 first).
        self._jq = m.jnt_qposadr[joint_ids].ravel()
        self._jd = m.jnt_dofadr[joint_ids].ravel()
        lo, hi = m.jnt_range[joint_ids.ravel()].T
        self._joint_sum = hi + lo
        self._joint_span = hi - lo
        act_ids = np.array([[m.actuator(f"hand{h}/robot0:A_{j}").id for j in ACTUATED_JOINTS] for h in range(2)])
        self._act = act_ids.ravel()
        clo, chi = m.actuator_ctrlrange[self._act].T
        self._ctrl_center = (chi + clo) / 2
        self._ctrl_half = (chi - clo) / 2
        #: qpos addresses of the actuated joints (the actuators drive joints directly).
        self._act_q = m.jnt_qposadr[m.actuator_trnid[self._act, 0]]
        # Distal joint J0 = ratio * J1 from the coupling tendon 0.00705 J0 - 0.00805 J1 = 0 (clipped to J0's range).
        j0, j1, ratio = [], [], []
        for h in range(2):
            for f in COUPLED_FINGERS:
                tendon = m.tendon(f"hand{h}/robot0:T_{f}J1c").id
                adr, num = int(m.tendon_adr[tendon]), int(m.tendon_num[tendon])
                coef = {int(m.wrap_objid[k]): float(m.wrap_prm[k]) for k in range(adr, adr + num)}
                id0, id1 = m.joint(f"hand{h}/robot0:{f}J0").id, m.joint(f"hand{h}/robot0:{f}J1").id
                j0.append(id0)
                j1.append(id1)
                ratio.append(-coef[id1] / coef[id0])
        self._coupled_q0 = m.jnt_qposadr[j0]
        self._coupled_q1 = m.jnt_qposadr[j1]
        self._coupled_ratio = np.array(ratio)
        self._coupled_lo, self._coupled_hi = m.jnt_range[j0].T
        n = self.spec_.num_objects
        obj_joints = [m.joint(f"object{j}").id for j in range(n)]
        self._obj_q = m.jnt_qposadr[obj_joints]
        self._obj_d = m.jnt_dofadr[obj_joints]
        self._goal_mocap = np.array([m.body_mocapid[m.body(f"goal{j}").id] for j in range(n)])
        self._obj_start = np.stack([_object_start(self.spec_, j) for j in range(n)])
        self._goal_pos = np.stack([_goal_position(self.spec_, j) for j in range(n)])

    def _layout(self) -> None:
        """Precomputes where every state entry comes from (see the module docstring for the layout)."""
        n = self.spec_.num_objects
        nj = len(HAND_JOINTS)
        tips = 13 * len(FINGERTIPS)
        hand_sensors = tips + 6 * len(FINGERTIPS)  # 95 sensor values per hand, in observation order
        self._state_dim = 2 * HAND_OBS_DIM + OBJECT_OBS_DIM * n
        pos_idx, vel_idx, frc_idx, act_idx, sens_dst, sens_src, sens_scale = [], [], [], [], [], [], []
        for h in range(2):
            base = h * HAND_OBS_DIM
            pos_idx.append(base + np.arange(nj))
            vel_idx.append(base + nj + np.arange(nj))
            frc_idx.append(base + 2 * nj + np.arange(nj))
            sens_dst.append(base + 3 * nj + np.arange(hand_sensors))
            sens_src.append(h * hand_sensors + np.arange(hand_sensors))
            sens_scale.append(np.r_[np.ones(tips), np.full(hand_sensors - tips, FORCE_TORQUE_OBS_SCALE)])
            act_idx.append(base + 3 * nj + hand_sensors + np.arange(NUM_ACTIONS))
        goal_pos_idx, goal_quat_idx, diff_idx = [], [], []
        for j in range(n):
            base = 2 * HAND_OBS_DIM + j * OBJECT_OBS_DIM
            sens_dst.append(base + np.arange(13))
            sens_src.append(2 * hand_sensors + 13 * j + np.arange(13))
            sens_scale.append(np.r_[np.ones(10), np.full(3, VEL_OBS_SCALE)])
            goal_pos_idx.append(base + 13 + np.arange(3))
            goal_quat_idx.append(base + 16 + np.arange(4))
            diff_idx.append(base + 20 + np.arange(4))
        self._i_pos = np.concatenate(pos_idx)
        self._i_vel = np.concatenate(vel_idx)
        self._i_frc = np.concatenate(frc_idx)
        self._i_act = np.concatenate(act_idx)
        self._i_sens = np.concatenate(sens_dst)
        self._sens_src = np.concatenate(sens_src)
        self._sens_scale = np.concatenate(sens_scale)
        self._i_goal_pos = np.concatenate(goal_pos_idx)
        self._i_goal_quat = np.concatenate(goal_quat_idx)
        self._i_diff = np.concatenate(diff_idx)
        #: sensordata addresses of each object's position and quaternion.
        self._obj_pos_src = np.stack([2 * hand_sensors + 13 * j + np.arange(3) for j in range(n)])
        self._obj_quat_src = np.stack([2 * hand_sensors + 13 * j + 3 + np.arange(4) for j in range(n)])
        objects = np.arange(2 * HAND_OBS_DIM, self._state_dim)
        self._obs_index = {
            f"agent_{h}": np.concatenate([np.arange(h * HAND_OBS_DIM, (h + 1) * HAND_OBS_DIM), objects])
            for h in range(2)
        }
        if self.model.nsensordata != 2 * hand_sensors + 13 * n:
            raise RuntimeError(f"{self.task_name}: unexpected sensor layout ({self.model.nsensordata} values).")
        self._buf = np.zeros(self._state_dim)

    # ----------------------------------------------------------------------------------------------------------
    # SafeMultiAgentEnv hooks.
    # ----------------------------------------------------------------------------------------------------------
    def _reset(self, seed: int | None, options: dict | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rng = self.np_random
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        # The start targets are those of float32 actions, so that hold_actions() reproduces them exactly.
        hold = (JOINT_POSITION_NOISE * rng.uniform(-1.0, 1.0, size=2 * NUM_ACTIONS)).astype(np.float32)
        targets = self._ctrl_center + hold.astype(np.float64) * self._ctrl_half
        d.qpos[self._act_q] = targets
        d.qpos[self._coupled_q0] = np.clip(
            self._coupled_ratio * d.qpos[self._coupled_q1], self._coupled_lo, self._coupled_hi
        )
        d.ctrl[self._act] = targets
        n = self.spec_.num_objects
        start = self._obj_start + OBJECT_POSITION_NOISE * rng.uniform(-1.0, 1.0, size=(n, 3))
        start_quat = random_rotation(rng, n)
        self._goal_quat = random_rotation(rng, n)
        for j in range(n):
            q = self._obj_q[j]
            d.qpos[q : q + 3] = start[j]
            d.qpos[q + 3 : q + 7] = start_quat[j]
        d.mocap_pos[self._goal_mocap] = self._goal_pos
        d.mocap_quat[self._goal_mocap] = self._goal_quat
        mujoco.mj_forward(m, d)
        self._hold = hold.reshape(2, NUM_ACTIONS)
        self._last_actions = np.zeros((2, NUM_ACTIONS), dtype=np.float32)
        self._buf[self._i_goal_pos] = self._goal_pos.ravel()
        self._buf[self._i_goal_quat] = self._goal_quat.ravel()
        obs, state, _, _ = self._observe()
        return obs, state

    def _step(self, actions: dict[str, np.ndarray]):
        a = np.stack([np.asarray(actions[aid], dtype=np.float32).reshape(NUM_ACTIONS) for aid in self.possible_agents])
        a = np.clip(a, -1.0, 1.0)
        cost = shadow_hand_cost(a, self.cost_indices, self.cost_threshold)
        m, d = self.model, self.data
        d.ctrl[self._act] = self._ctrl_center + a.ravel() * self._ctrl_half
        mujoco.mj_step(m, d, nstep=SUBSTEPS)
        mujoco.mj_forward(m, d)  # sensors and forces of the state reached (mj_step leaves those of the last substep)
        self._last_actions = a
        obs, state, dist, rot = self._observe()
        if self.spec_.num_objects == 1:
            reward = math.exp(-0.2 * (50.0 * dist[0] + rot[0]))
        else:
            reward = float(
                REORIENT_DIST_SCALE * dist.sum()
                + REORIENT_ROT_SCALE * (1.0 / (np.abs(rot) + REORIENT_ROT_EPS)).sum()
                + REORIENT_ACTION_PENALTY * np.square(a).sum()
            )
        terminated = bool(np.any(d.qpos[self._obj_q + 2] <= FALL_HEIGHT))
        extra = {
            "goal_dist": tuple(float(x) for x in dist),
            "rot_dist": tuple(float(x) for x in rot),
            "is_success": bool(np.all(dist < SUCCESS_DISTANCE)),
        }
        return obs, state, reward, cost, terminated, extra

    def _observe(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Fills the state buffer from the simulation; returns observations, state, goal distances and angles."""
        d, s = self.data, self._buf
        s[self._i_pos] = (2.0 * d.qpos[self._jq] - self._joint_sum) / self._joint_span
        s[self._i_vel] = VEL_OBS_SCALE * d.qvel[self._jd]
        s[self._i_frc] = FORCE_TORQUE_OBS_SCALE * d.qfrc_actuator[self._jd]
        s[self._i_sens] = d.sensordata[self._sens_src] * self._sens_scale
        s[self._i_act] = self._last_actions.ravel()
        obj_quat = d.sensordata[self._obj_quat_src]
        q_diff = quat_mul(obj_quat, quat_conjugate(self._goal_quat))
        s[self._i_diff] = q_diff.ravel()
        state = s.astype(np.float32)
        obs = {aid: state[idx] for aid, idx in self._obs_index.items()}
        dist = np.linalg.norm(self._goal_pos - d.sensordata[self._obj_pos_src], axis=-1)
        return obs, state, dist, rotation_distance(q_diff)

    # ----------------------------------------------------------------------------------------------------------
    # Extras.
    # ----------------------------------------------------------------------------------------------------------
    def hold_actions(self) -> dict[str, np.ndarray]:
        """The actions that keep every joint target at its start value (the episode's start pose)."""
        return {aid: self._hold[h].copy() for h, aid in enumerate(self.possible_agents)}

    def render(self) -> np.ndarray | None:
        """Renders the scene (``render_mode="rgb_array"``: a 480x640x3 ``uint8`` image; else ``None``).

        Raises:
            RuntimeError: If MuJoCo has no working OpenGL backend (set ``MUJOCO_GL=egl`` or ``osmesa`` before MuJoCo is
                first imported on a headless machine).
        """
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, height=480, width=640)
            except Exception as e:  # the GL backend is chosen when mujoco is imported
                raise RuntimeError(
                    f"{self.task_name}: MuJoCo cannot render ({e!r}); on a headless machine set MUJOCO_GL=egl "
                    "(or osmesa) before MuJoCo is first imported."
                ) from e
            camera = mujoco.MjvCamera()
            camera.lookat[:] = [0.0, self.spec_.second_hand_y / 2, HAND_HEIGHT]
            camera.distance = 1.3
            camera.azimuth = 0.0
            camera.elevation = -35.0
            self._camera = camera
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        """Releases the renderer, if any."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def task_factories() -> dict[str, Any]:
    """The registry entries of this module: task name -> constructor taking the task's keyword options."""
    return {name: _factory(name) for name in SHADOW_HAND_TASKS}


def _factory(name: str):
    def make(**kwargs: Any) -> SafeShadowHand:
        return SafeShadowHand(name, **kwargs)

    return make
