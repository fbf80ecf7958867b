"""MACPO Safe MAMuJoCo obstacle tasks: contract, shapes, exact cost rules, real walls/obstacle, motion, MACPO's
options (walls, observations, timing), the two-cost corridor, rendering."""

import math
import os
import tempfile
import textwrap

import mujoco
import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from rllib_safe.envs import make, task_names
from rllib_safe.envs.obstacles import OBSTACLE_TASKS, SafeMAMuJoCoObstacle, macpo_wall_distance
from rllib_safe.envs.safe_mamujoco import SafeMAMuJoCoVelocity
from tests.helpers import check_contract_and_shapes, random_actions, render_headless, zero_actions

NAMES = sorted(OBSTACLE_TASKS)
T30 = math.tan(math.radians(30.0))
COS30 = math.cos(math.radians(30.0))

# (agents, local obs dims with agent_obsk=1 incl. the task features, action dims, state dim), written out from
# MaMuJoCo's factorization rule: own qpos/qvel(/cfrc_ext) + neighbours' qpos + the global root, plus 2 corridor
# features (Ant) or MACPO's 3 obstacle features (HalfCheetah).
EXPECTED_SHAPES = {
    "SafeAnt2x4-v0": (2, [65, 65], [4, 4], 107),
    "SafeAnt2x4d-v0": (2, [65, 65], [4, 4], 107),
    "SafeAnt4x2-v0": (4, [44] * 4, [2] * 4, 107),
    "SafeAnt8x1-v0": (8, [31, 34] * 4, [1] * 8, 107),
    "SafeAnt2x4WallSpeed-v0": (2, [65, 65], [4, 4], 107),
    "SafeHalfCheetah2x3-v0": (2, [15, 15], [3, 3], 20),
    "SafeHalfCheetah3x2-v0": (3, [13, 15, 14], [2, 2, 2], 20),
    "SafeHalfCheetah6x1-v0": (6, [12, 12, 11, 12, 12, 11], [1] * 6, 20),
    "SafeManyAgentAnt2x3-v0": (2, [167, 169], [12, 12], 313),
    "SafeManyAgentAnt3x2-v0": (3, [115, 117, 117], [8, 8, 8], 313),
    "SafeManyAgentAnt6x1-v0": (6, [63] + [65] * 5, [4] * 6, 313),
    "SafeManyAgentAnt2x4-v0": (2, [219, 221], [16, 16], 413),
    "SafeManyAgentAnt4x2-v0": (4, [115, 117, 117, 117], [8] * 4, 413),
    "SafeManyAgentAnt8x1-v0": (8, [63] + [65] * 7, [4] * 8, 413),
}
# MAFOCOPS paper safety bounds (Figures 3, 6-9), written out independently of the implementation's table.
EXPECTED_COST_LIMITS = {
    "SafeAnt2x4-v0": 50.0,
    "SafeAnt2x4d-v0": 50.0,
    "SafeAnt4x2-v0": 50.0,
    "SafeAnt8x1-v0": 70.0,
    "SafeAnt2x4WallSpeed-v0": (50.0, 25.0),  # Figure 3's Ant bound; SafePO's velocity-task limit
    "SafeHalfCheetah2x3-v0": 30.0,
    "SafeHalfCheetah3x2-v0": 30.0,
    "SafeHalfCheetah6x1-v0": 30.0,
    "SafeManyAgentAnt2x3-v0": 25.0,
    "SafeManyAgentAnt3x2-v0": 25.0,
    "SafeManyAgentAnt6x1-v0": 25.0,
    "SafeManyAgentAnt2x4-v0": 80.0,
    "SafeManyAgentAnt4x2-v0": 80.0,
    "SafeManyAgentAnt8x1-v0": 80.0,
}


def place(env, xyz, quat=(1.0, 0.0, 0.0, 0.0), x=None, vel=None):
    """Puts the robot's root at ``xyz`` (Ant) or its root x at ``x`` (HalfCheetah), at rest (or with root velocity
    ``vel``), leaving the scene's bodies where they are, and runs mj_forward."""
    sim = env.robot.env
    n = sim.robot_size
    qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
    qpos[: n.nq], qvel[: n.nv] = sim.init_qpos[: n.nq], 0.0
    if x is not None:
        qpos[0] = x
    else:
        qpos[0:3] = xyz
        qpos[3:7] = quat
    if vel is not None:
        qvel[: len(vel)] = vel
    sim.set_state(qpos, qvel)  # calls mj_forward


@pytest.fixture(scope="module")
def ant():
    env = SafeMAMuJoCoObstacle("SafeAnt2x4-v0")
    env.reset(seed=0)
    return env


@pytest.fixture(scope="module")
def many_ant():
    env = SafeMAMuJoCoObstacle("SafeManyAgentAnt2x3-v0")
    env.reset(seed=0)
    return env


@pytest.fixture(scope="module")
def cheetah():
    env = SafeMAMuJoCoObstacle("SafeHalfCheetah2x3-v0")
    env.reset(seed=0)
    return env


# ----------------------------------------------------------------------------------------------------------------
# Contract, shapes, determinism.
# ----------------------------------------------------------------------------------------------------------------
def test_registry_lists_all_obstacle_tasks():
    assert set(EXPECTED_SHAPES) == set(OBSTACLE_TASKS)
    assert set(EXPECTED_SHAPES) <= set(task_names())


@pytest.mark.parametrize("name", NAMES)
def test_rllib_env_checker_shapes_and_cost_limit(name):
    env = make(name)
    n, obs_dims, act_dims, state_dim = EXPECTED_SHAPES[name]
    check_contract_and_shapes(env, n, obs_dims, act_dims, state_dim)
    assert env.cost_limit == EXPECTED_COST_LIMITS[name]
    assert env.num_costs == (2 if name == "SafeAnt2x4WallSpeed-v0" else 1)
    obs, infos = env.reset(seed=1)
    for aid in env.possible_agents:
        assert env.observation_spaces[aid].contains(obs[aid])
        assert infos[aid]["state"].shape == (state_dim,)
        assert "cost" not in infos[aid]
    obs, rew, term, trunc, infos = env.step(random_actions(env, np.random.default_rng(0)))
    costs = [np.atleast_1d(infos[aid]["cost"]) for aid in env.possible_agents]
    for cost in costs:
        np.testing.assert_array_equal(cost, costs[0])  # the team cost, copied to every agent
        assert cost.shape == (env.num_costs,) and set(cost.tolist()) <= {0.0, 1.0}
    if env.num_costs > 1:
        assert infos["agent_0"]["cost"].dtype == np.float32
    np.testing.assert_array_equal(infos["agent_0"]["state"], env.state())
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_determinism_under_seed(name):
    envs = [make(name), make(name)]
    outs = []
    for env in envs:
        rng = np.random.default_rng(7)
        obs, _ = env.reset(seed=123)
        trace = [obs]
        for _ in range(40):
            obs, rew, term, trunc, infos = env.step(random_actions(env, rng))
            trace.append((obs, rew, infos["agent_0"]["cost"], infos["agent_0"]["state"], term["__all__"]))
            if term["__all__"] or trunc["__all__"]:
                obs, _ = env.reset(seed=5)
                trace.append(obs)
        outs.append(trace)
    for a, b in zip(*outs):
        if isinstance(a, dict):
            for aid in a:
                np.testing.assert_array_equal(a[aid], b[aid])
        else:
            for aid in a[0]:
                np.testing.assert_array_equal(a[0][aid], b[0][aid])
            assert a[1] == b[1] and a[4] == b[4]
            np.testing.assert_array_equal(a[2], b[2])
            np.testing.assert_array_equal(a[3], b[3])


def test_cost_limit_override_and_registry_options():
    assert make("SafeAnt4x2-v0", cost_limit=12.5).cost_limit == 12.5
    env = make("SafeHalfCheetah6x1-v0", obs_mode="global")
    check_multiagent_environments(env)
    obs, infos = env.reset(seed=0)
    for i, aid in enumerate(env.possible_agents):
        assert obs[aid].shape == (20 + 6,)
        np.testing.assert_array_equal(obs[aid][:20], infos[aid]["state"])
        assert obs[aid][20 + i] == 1.0 and obs[aid][20:].sum() == 1.0
    assert make("SafeAnt2x4-v0", agent_obsk=0).observation_spaces["agent_0"].shape[0] == 61 + 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"obs_mode": "full"}, "obs_mode"),
        ({"agent_obsk": -1}, "agent_obsk"),
        ({"agent_obsk": 1.5}, "agent_obsk"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"cost_limit": -1.0}, "cost_limit"),
        ({"render_mode": "human_window"}, "render_mode"),
        ({"walls": "glass"}, "walls"),
        ({"obs_mode": "safepo"}, "obs_mode"),
    ],
)
def test_bad_options_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make("SafeAnt2x4-v0", **kwargs)
    with pytest.raises(ValueError, match="walls"):
        make("SafeHalfCheetah2x3-v0", walls="macpo")  # the obstacle tasks have no corridor
    with pytest.raises(ValueError, match="Unknown obstacle task"):
        SafeMAMuJoCoObstacle("SafeAnt3x3-v0")


def test_truncation_at_time_limit_is_not_termination():
    env = make("SafeHalfCheetah2x3-v0", max_episode_steps=5)
    env.reset(seed=0)
    for t in range(5):
        _, _, term, trunc, _ = env.step(zero_actions(env))
        assert not term["__all__"]
        assert trunc["__all__"] == (t == 4)


# ----------------------------------------------------------------------------------------------------------------
# The scene objects leave the robot (and MaMuJoCo's factorization) unchanged.
# ----------------------------------------------------------------------------------------------------------------
def test_corridor_robot_and_local_observations_identical_to_plain_mamujoco():
    """Static walls add no qpos/qvel: the first entries of every observation are MaMuJoCo's, bit for bit."""
    env, ref = make("SafeAnt2x4-v0"), SafeMAMuJoCoVelocity("Safety2x4AntVelocity-v0")
    assert env.robot.env.model.nq == ref.robot.env.model.nq and env.robot.env.model.nv == ref.robot.env.model.nv
    n_bodies = ref.robot.env.model.nbody
    np.testing.assert_array_equal(env.robot.env.model.body_mass[:n_bodies], ref.robot.env.model.body_mass)
    obs, infos = env.reset(seed=11)
    ref_obs, ref_infos = ref.reset(seed=11)
    rng = np.random.default_rng(3)
    for _ in range(20):
        for aid in env.possible_agents:
            np.testing.assert_array_equal(obs[aid][:-2], ref_obs[aid])
        np.testing.assert_array_equal(infos["agent_0"]["state"][:-2], ref_infos["agent_0"]["state"])
        act = random_actions(env, rng)
        obs, rew, term, _, infos = env.step(act)
        ref_obs, ref_rew, _, _, ref_infos = ref.step(act)
        assert rew == ref_rew
        if term["__all__"]:
            break


def test_cheetah_scene_is_gymnasium_cheetah_plus_macpo_obstacle(cheetah):
    """The obstacle is one slide joint after the robot's nine; its mass enters settotalmass="14" as in MACPO."""
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    plain = HalfCheetahEnv()
    model, ref = cheetah.robot.env.model, plain.model
    assert (model.nq, model.nv, model.nu) == (ref.nq + 1, ref.nv + 1, ref.nu + 1)
    assert model.joint("obstacle_joint").qposadr[0] == 9 and model.joint("obstacle_joint").type[0] == 2  # slide
    assert cheetah.action_spaces["agent_0"].shape == (3,) and cheetah.robot.action_dim == 6
    box = model.geom("obstacle_geom").id
    body = model.body("obstacle").id
    robot_mass = model.body_mass[: ref.nbody]
    f = robot_mass[1] / ref.body_mass[1]  # settotalmass scales every mass by one factor
    np.testing.assert_allclose(robot_mass[1:] / ref.body_mass[1:], f, rtol=1e-12)  # body 0: the world
    assert model.body_mass.sum() == pytest.approx(14.0, rel=1e-12)
    assert 1.0 - f == pytest.approx(model.body_mass[body] / 14.0, rel=1e-6)  # the box's share of the 14 kg
    assert model.body_mass[body] == pytest.approx(1.6e-4, rel=0.02)  # 1e-4 x 2.392 m³, scaled by 14 kg / raw mass
    np.testing.assert_allclose(model.geom_size[box], [0.1, 2.3, 1.3])
    dof = model.joint("obstacle_joint").dofadr[0]
    assert (model.dof_damping[dof], model.dof_armature[dof]) == (0.2, 0.1)
    motor = model.actuator("obstacle_motor").id
    assert model.actuator_gear[motor, 0] == 120.0 and list(model.actuator_ctrlrange[motor]) == [-1.0, 1.0]
    # The state is the robot's HalfCheetah-v5 observation plus the 3 obstacle features.
    _, infos = cheetah.reset(seed=2)
    data = cheetah.robot.env.data
    np.testing.assert_array_equal(
        infos["agent_0"]["state"][:17], np.concatenate([data.qpos[1:9], data.qvel[:9]]).astype(np.float32)
    )


def test_many_segment_ant_robot_identical_to_generated_asset_at_macpo_timing(many_ant):
    """The ManySegmentAnt robot is MaMuJoCo's generated one (built here in a private dir), walls aside, stepped as in
    MACPO: timestep 0.005 s x frame_skip 4 = 0.02 s (MaMuJoCo v1: 0.01 s x 5)."""
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium_robotics.envs.multiagent_mujoco.many_segment_ant import gen_asset

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "msa.xml")
        gen_asset(n_segs=6, asset_path=path)
        with open(path) as f:
            xml = f.read()
        assert 'timestep="0.01"' in xml
        with open(path, "w") as f:
            f.write(xml.replace('timestep="0.01"', 'timestep="0.005"'))
        plain = AntEnv(xml_file=path, frame_skip=4)
    sim = many_ant.robot.env
    assert sim.model.opt.timestep == 0.005 and sim.frame_skip == 4 and many_ant.dt == pytest.approx(0.02)
    assert (sim.model.nq, sim.model.nv, sim.model.nbody, sim.model.nu) == (
        plain.model.nq,
        plain.model.nv,
        plain.model.nbody,
        plain.model.nu,
    )
    _, infos = many_ant.reset(seed=4)
    state, _ = plain.reset(seed=4)
    np.testing.assert_array_equal(infos["agent_0"]["state"][:-2], state.astype(np.float32))
    act = np.random.default_rng(0).uniform(-1, 1, plain.action_space.shape).astype(np.float32)
    local = {aid: act[idx] for aid, idx in many_ant.robot.action_index.items()}
    for _ in range(10):
        _, _, _, _, infos = many_ant.step(local)
        state, *_ = plain.step(act)
    np.testing.assert_array_equal(infos["agent_0"]["state"][:-2], state.astype(np.float32))
    # MaMuJoCo's own factorization of this robot gives the same index arrays as ours (minus the 2 features).
    from gymnasium_robotics.envs.multiagent_mujoco.mujoco_multi import MultiAgentMujocoEnv

    ma = MultiAgentMujocoEnv("ManySegmentAnt", "2x3", gym_env=plain)
    for aid in many_ant.possible_agents:
        np.testing.assert_array_equal(many_ant.robot.obs_index[aid], ma.observation_factorization[aid])


# ----------------------------------------------------------------------------------------------------------------
# Corridor cost (Eq. 36 as MACPO computes it; planar distance to the wall segments).
# ----------------------------------------------------------------------------------------------------------------
def yc(x):
    """The centre line, by hand: +30° up to x=20, -30° to 60, +30° to 100, flat after."""
    if x <= 20:
        return x * T30
    if x <= 60:
        return 20 * T30 - (x - 20) * T30
    if x <= 100:
        return -20 * T30 + (x - 60) * T30
    return 20 * T30


@pytest.mark.parametrize(
    ("xy", "expected_distance", "cost"),
    [
        ((0.0, 0.0), 5 * COS30, 0.0),  # centre of the first segment: 4.33 m from both walls
        ((0.0, 3.3), 1.7 * COS30, 1.0),  # the y=5 wall (left) at 1.47 m
        ((0.0, -3.3), 1.7 * COS30, 1.0),  # the right wall
        ((40.0, -3.0), 2.0 * COS30, 1.0),  # x=40: centre 0, right wall y=-5; 1.73 m (MACPO's y-only rule: 2 m, no cost)
        ((40.0, -2.8), 2.2 * COS30, 0.0),  # 1.91 m
        ((20.0, yc(20) + 5 - 1.9), 1.9 * COS30, 1.0),  # under the left wall's fold (a 240° corner seen from inside)
        ((20.0, yc(20) - 5 + 1.7), 1.7, 1.0),  # above the right wall's fold vertex, which juts into the corridor
        ((20.0, yc(20) - 5 + 1.9), 1.9, 0.0),
        ((150.0, yc(150) + 5 - 1.0), 1.0, 1.0),  # straight part after x=100
    ],
)
def test_corridor_cost_from_placed_states(ant, xy, expected_distance, cost):
    from rllib_safe.envs.obstacles import corridor_wall_distance

    x, y = xy
    assert corridor_wall_distance(x, y, 5.0) == pytest.approx(expected_distance, abs=1e-9)
    place(ant, (x, y, 0.55))
    assert ant.current_cost() == cost


@pytest.mark.parametrize(
    ("z", "quat", "cost"),
    [
        (0.55, (1.0, 0.0, 0.0, 0.0), 0.0),
        (0.15, (1.0, 0.0, 0.0, 0.0), 1.0),  # below the healthy range [0.2, 1.0]
        (1.05, (1.0, 0.0, 0.0, 0.0), 1.0),  # above it
        (0.55, (0.0, 1.0, 0.0, 0.0), 1.0),  # upside down: z_up = -1 < -0.7
        (0.55, (math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0), 0.0),  # on its side: z_up = 0
        (0.55, (math.cos(1.2), 0.0, math.sin(1.2), 0.0), 1.0),  # tilted by 137.5°: z_up = cos(2.4) = -0.737
    ],
)
def test_fall_and_topple_cost(ant, z, quat, cost):
    place(ant, (0.0, 0.0, z), quat)
    assert ant.current_cost() == cost


def test_cost_arrives_in_step_info_and_topple_terminates():
    env = make("SafeAnt4x2-v0")
    env.reset(seed=0)
    place(env, (0.0, 3.3, 0.55))
    _, _, term, _, infos = env.step(zero_actions(env))
    assert all(infos[a]["cost"] == 1.0 for a in env.possible_agents) and not term["__all__"]
    env.reset(seed=0)
    place(env, (0.0, 0.0, 0.55))
    _, _, term, _, infos = env.step(zero_actions(env))
    assert infos["agent_0"]["cost"] == 0.0 and not term["__all__"]
    env.reset(seed=0)
    place(env, (0.0, 0.0, 0.55), (0.0, 1.0, 0.0, 0.0))  # upside down, inside the healthy height range
    _, _, term, _, infos = env.step(zero_actions(env))
    assert infos["agent_0"]["cost"] == 1.0 and term["__all__"]


def test_many_agent_corridor_is_9_m_wide(many_ant):
    place(many_ant, (0.0, 2.8, 0.55))  # 1.7 m from the y=4.5 wall along y: 1.47 m
    assert many_ant.current_cost() == 1.0
    place(many_ant, (0.0, 2.4, 0.55))  # 2.1 m along y: 1.82 m
    assert many_ant.current_cost() == 0.0
    place(many_ant, (40.0, -1.5, 0.55))  # x=40, right wall at y=-4.5: 3 m along y, 2.6 m
    assert many_ant.current_cost() == 0.0


def test_corridor_features_in_observation(ant):
    ant.reset(seed=0)
    place(ant, (40.0, -1.0, 0.55))
    obs, _, _, _, infos = ant.step(zero_actions(ant))
    x, y = ant.robot.env.data.qpos[:2]
    expected = np.array([x / 5.0, y - yc(x)], dtype=np.float32)
    np.testing.assert_allclose(infos["agent_0"]["state"][-2:], expected, rtol=1e-6)
    for aid in ant.possible_agents:
        np.testing.assert_array_equal(obs[aid][-2:], infos[aid]["state"][-2:])


# ----------------------------------------------------------------------------------------------------------------
# Walls and the obstacle are real bodies.
# ----------------------------------------------------------------------------------------------------------------
def throw_ant_at_left_wall(env, steps=20):
    """Throws the torso sideways at 6 m/s from (0, 4) towards the left wall y = 5 + x·tan30; returns (touched the
    wall geoms, max torso y)."""
    env.reset(seed=0)
    data = env.robot.env.data
    walls = {env.robot.env.model.geom(g).id for g in ("wall_left_0", "wall1") if _has_geom(env, g)}
    place(env, (0.0, 4.0, 0.6), vel=[0.0, 6.0])
    touched, max_y = False, -np.inf
    for _ in range(steps):
        env.step(zero_actions(env))
        touched |= any(c.geom1 in walls or c.geom2 in walls for c in data.contact[: data.ncon])
        max_y = max(max_y, data.qpos[1])
    return touched, max_y


def _has_geom(env, name):
    try:
        env.robot.env.model.geom(name)
        return True
    except KeyError:
        return False


def test_static_walls_are_geoms_that_stop_the_ant():
    env = make("SafeAnt2x4-v0")
    touched, max_y = throw_ant_at_left_wall(env)
    assert touched
    assert max_y < 5.0 + env.robot.env.data.qpos[0] * T30 - 0.25  # the torso sphere (r=0.25) never reaches the face


def test_macpo_walls_are_light_free_bodies_the_ant_pushes_away():
    """MACPO's ant.xml walls: six free boxes (20 x 0.01 x 0.7 half sizes, density 1e-6) in three segments per side,
    ending at x = 80 + 20·cos30 = 97.3; the Ant pushes through them."""
    env = make("SafeAnt2x4-v0", walls="macpo")
    model = env.robot.env.model
    assert model.nq == 15 + 6 * 7 and model.nv == 14 + 6 * 6  # the robot first, then the six free joints
    ends = []
    for i, (x, y, yaw) in enumerate([(0, 5, 30), (0, -5, 30), (40, 5, -30), (40, -5, -30), (80, 5, 30), (80, -5, 30)]):
        body, geom = model.body(f"b{i + 1}"), model.geom(f"wall{i + 1}")
        assert model.jnt_type[body.jntadr[0]] == mujoco.mjtJoint.mjJNT_FREE
        np.testing.assert_allclose(model.geom_size[geom.id], [20.0, 0.01, 0.7])
        assert body.mass[0] == pytest.approx(1e-6 * 40 * 0.02 * 1.4)
        np.testing.assert_allclose(env.robot.env.init_qpos[model.jnt_qposadr[body.jntadr[0]] :][:3], [x, y, 1.0])
        ends.append(x + 20 * math.cos(math.radians(yaw)))
    assert max(ends) == pytest.approx(97.32, abs=0.01)
    touched, max_y = throw_ant_at_left_wall(env)
    assert touched and max_y > 5.5  # through the wall's line
    b1 = env.robot.env.data.body("b1").xpos
    assert b1[1] > 5.1  # the wall was shoved outwards


def test_macpo_walls_reset_to_their_start_and_leave_the_robot_view_unchanged():
    static, macpo = make("SafeAnt2x4-v0"), make("SafeAnt2x4-v0", walls="macpo")
    assert static.observation_spaces == macpo.observation_spaces and static.state_space == macpo.state_space
    sim = macpo.robot.env
    for seed in (0, 1):
        macpo.reset(seed=seed)
        np.testing.assert_array_equal(sim.data.qpos[15:], sim.init_qpos[15:])
        np.testing.assert_array_equal(sim.data.qvel[14:], 0.0)
    many = make("SafeManyAgentAnt2x3-v0", walls="macpo")
    model = many.robot.env.model
    assert [model.body(f"b{i}").id > 0 for i in (1, 2)] == [True, True]
    with pytest.raises(KeyError):
        model.body("b3")  # MACPO's ManyAgent Ant template has one segment per side, at y = +-4.5
    np.testing.assert_allclose(many.robot.env.init_qpos[-14:-11], [0.0, 4.5, 1.0])
    np.testing.assert_allclose(many.robot.env.init_qpos[-7:-4], [0.0, -4.5, 1.0])


@pytest.mark.parametrize(
    ("xy", "distance", "cost"),
    [
        ((40.0, -3.0), 2.0, 0.0),  # 2 m along y (planar 1.73 m: the static rule's cost 1)
        ((0.0, 3.3), 1.7, 1.0),
        ((0.0, 6.5), 1.5, 1.0),  # outside the corridor, 1.5 m beyond the wall: still near it
        ((0.0, 7.0), 2.0, 0.0),  # 2 m beyond the wall: no cost (MACPO's walls can be pushed away)
        ((20.0, 20 * T30 + 3.3), 1.7, 1.0),
        ((60.0, 20 * T30 + 3.3), 1.7, 1.0),  # MACPO's branches: at exactly x = 60 the centre is 20·tan30
        ((150.0, 20 * T30 - 3.4), 1.6, 1.0),  # beyond the walls' end, the rule goes on
    ],
)
def test_macpo_wall_rule_is_the_y_offset(xy, distance, cost):
    assert macpo_wall_distance(*xy, 5.0) == pytest.approx(distance, abs=1e-9)
    env = make("SafeAnt2x4-v0", walls="macpo")
    env.reset(seed=0)
    place(env, (*xy, 0.55))
    assert env.current_cost() == cost


def test_macpo_many_agent_wall_rule_uses_4_5_m():
    env = make("SafeManyAgentAnt2x3-v0", walls="macpo")
    env.reset(seed=0)
    place(env, (40.0, -2.8, 0.55))  # 1.7 m along y from the wall at y = -4.5
    assert env.current_cost() == 1.0
    place(env, (40.0, -2.6, 0.55))  # 1.9 m
    assert env.current_cost() == 0.0


def test_obstacle_is_a_light_body_the_cheetah_pushes():
    env = make("SafeHalfCheetah2x3-v0")
    env.reset(seed=0)
    sim = env.robot.env
    data = sim.data
    box = sim.model.geom("obstacle_geom").id
    place(env, None, x=env.obstacle_x - 2.0, vel=[10.0])
    touched, x_start = False, env.obstacle_x
    for _ in range(20):
        env.step(zero_actions(env))
        touched |= any(box in (c.geom1, c.geom2) for c in data.contact[: data.ncon])
    assert touched
    # Its own drive moves it at most 9.6 m/s x 1 s; pushed by the cheetah it went further or the cheetah got past.
    assert env.obstacle_x - x_start > 0.0 and (env.obstacle_x - x_start > 3.0 or data.qpos[0] > env.obstacle_x)


# ----------------------------------------------------------------------------------------------------------------
# The moving obstacle (Eq. 37 and MACPO's motor).
# ----------------------------------------------------------------------------------------------------------------
def obstacle_speed_ode(t_end, dt, m):
    """The obstacle's speed at every control step: m dv/dt = 120·u(t) - 0.2·v, v(0) = 0, by RK4 with 1 ms steps."""

    def f(t, v):
        return (120.0 * (0.02 * math.sin(t / 3) ** 2 - 0.004) - 0.2 * v) / m

    h, v, t, out = 1e-3, 0.0, 0.0, []
    per_step = round(dt / h)
    for k in range(round(t_end / h)):
        k1 = f(t, v)
        k2 = f(t + h / 2, v + h / 2 * k1)
        k3 = f(t + h / 2, v + h / 2 * k2)
        k4 = f(t + h, v + h * k3)
        v, t = v + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + h
        if (k + 1) % per_step == 0:
            out.append(v)
    return np.array(out)


def test_obstacle_moves_as_macpo_motor_drives_it(cheetah):
    """Start at x = 10; speed = the ODE of MACPO's motor (gear 120, damping 0.2, armature 0.1 + the box's mass),
    between -2.4 and 9.6 m/s, 3.6 m/s on average over whole periods (3π s) once settled."""
    cheetah.reset(seed=0)
    sim = cheetah.robot.env
    dof = sim.model.joint("obstacle_joint").dofadr[0]
    qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
    qpos[9], qvel[9] = 0.0, 0.0  # no reset noise on the obstacle, for the comparison with the ODE
    sim.set_state(qpos, qvel)
    assert cheetah.obstacle_x == 10.0
    m = 0.1 + sim.model.body_mass[sim.model.body("obstacle").id]
    steps = 1000
    expected = obstacle_speed_ode(steps * 0.05, 0.05, m)
    speeds, xs = [], [cheetah.obstacle_x]
    for _ in range(steps):
        _, _, _, _, infos = cheetah.step(zero_actions(cheetah))
        speeds.append(sim.data.qvel[dof])
        xs.append(cheetah.obstacle_x)
    speeds = np.array(speeds)
    np.testing.assert_allclose(speeds, expected, atol=0.15)  # MuJoCo's Euler at 0.01 s: ~1% of the swing
    assert -2.4 < speeds.min() < -2.0 and 9.0 < speeds.max() < 9.6
    period = round(3 * math.pi / 0.05 * 3)  # three whole periods of sin²(t/3), after the first
    late = np.diff(xs)[-period:] / 0.05
    assert late.mean() == pytest.approx(3.6, abs=0.1)
    # The obstacle features (MACPO's _get_obs): its velocity, the coming step's drive, the gap / 10 clipped to +-5.
    state = infos["agent_0"]["state"]
    t = sim.data.time
    gap = (cheetah.obstacle_x - sim.data.qpos[0]) / 10
    np.testing.assert_allclose(
        state[-3:], [speeds[-1], 0.02 * math.sin(t / 3) ** 2 - 0.004, np.clip(gap, -5, 5)], rtol=1e-5, atol=1e-7
    )
    assert t == pytest.approx(steps * 0.05)


def test_obstacle_reset_noise_like_macpo():
    env = make("SafeHalfCheetah6x1-v0")
    starts = []
    for seed in range(5):
        env.reset(seed=seed)
        starts.append(env.obstacle_x)
        assert abs(env.obstacle_x - 10.0) <= 0.1  # MACPO's reset_model: uniform(-0.1, 0.1) on every qpos
    assert len(set(starts)) == 5


@pytest.mark.parametrize(("offset", "cost"), [(8.9, 1.0), (9.1, 0.0), (0.0, 1.0), (-8.0, 1.0), (-9.5, 0.0)])
def test_obstacle_cost_from_placed_states(cheetah, offset, cost):
    """Cost 1 iff |x_obstacle - x_torso| < 9 m (offset = x_obstacle - x_torso; negative: the robot is past it)."""
    cheetah.reset(seed=0)
    place(cheetah, None, x=cheetah.obstacle_x - offset)
    assert cheetah.current_cost() == cost


def test_obstacle_cost_in_step_info():
    env = make("SafeHalfCheetah3x2-v0")
    env.reset(seed=0)
    place(env, None, x=env.obstacle_x - 12.0)
    _, _, _, _, infos = env.step(zero_actions(env))
    assert infos["agent_0"]["cost"] == 0.0
    place(env, None, x=env.obstacle_x - 5.0)
    _, _, _, _, infos = env.step(zero_actions(env))
    assert {infos[a]["cost"] for a in env.possible_agents} == {1.0}


# ----------------------------------------------------------------------------------------------------------------
# MACPO's observations (obs_mode="macpo").
# ----------------------------------------------------------------------------------------------------------------
# (MACPO's single-agent vector length, agents): Ant qpos[2:15] + qvel[:14] + 2 features; HalfCheetah 17 + 3;
# ManyAgent Ant qpos[2:-42] + qvel[:-36] of a model with two wall bodies, i.e. torso z (+ segment 0's 4 joints with
# 8 segments), the 6 torso velocities (+ 8 joint velocities), + 2 features.
MACPO_OBS = {
    "SafeAnt2x4-v0": (29, 2),
    "SafeAnt8x1-v0": (29, 8),
    "SafeHalfCheetah3x2-v0": (20, 3),
    "SafeManyAgentAnt2x3-v0": (1 + 6 + 2, 2),
    "SafeManyAgentAnt8x1-v0": (9 + 14 + 2, 8),
}


def macpo_get_obs(env):
    """MACPO's ``_get_obs`` of the task env (ant.py / manyagent_ant.py / half_cheetah.py), written out."""
    sim = env.robot.env
    qpos, qvel = sim.data.qpos, sim.data.qvel
    if env.spec_.scenario == "HalfCheetah":
        gap = (sim.data.geom("obstacle_geom").xpos[0] - qpos[0]) / 10
        wall_f = 0.02 * math.sin(sim.data.time / 3) ** 2 - 0.004
        return np.concatenate([qpos[1:9], qvel[:9], [qvel[9], wall_f, np.clip(gap, -5, 5)]])
    nq, nv = sim.robot_size.nq, sim.robot_size.nv
    walls = 6 if env.spec_.scenario == "Ant" else 2  # MACPO's ant.xml / manyagent_ant.xml.template
    full_qpos = np.concatenate([qpos[:nq], np.zeros(7 * walls)])
    full_qvel = np.concatenate([qvel[:nv], np.zeros(6 * walls)])
    x, y = qpos[0], qpos[1]
    return np.concatenate([full_qpos[2:-42], full_qvel[:-36], [x / 5, y - yc(x)]])


@pytest.mark.parametrize("name", sorted(MACPO_OBS))
def test_macpo_observation_mode(name):
    """MACPO's mujoco_multi.get_obs: agent i sees (s ++ one_hot(i) - mean) / std, s = the task env's _get_obs."""
    dim, n = MACPO_OBS[name]
    env = make(name, obs_mode="macpo")
    check_contract_and_shapes(env, n, [dim + n] * n, EXPECTED_SHAPES[name][2], dim)
    obs, infos = env.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(5):
        s = macpo_get_obs(env)
        assert s.shape == (dim,)
        for i, aid in enumerate(env.possible_agents):
            o = np.concatenate([s, np.eye(n)[i]])
            np.testing.assert_allclose(obs[aid], (o - o.mean()) / o.std(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(infos["agent_0"]["state"], (s - s.mean()) / (s.std() + 1e-8), rtol=1e-5, atol=1e-5)
        obs, _, _, _, infos = env.step(random_actions(env, rng))


def test_obs_modes_by_family_and_unchanged_default():
    assert make("SafeAnt2x4-v0").obs_mode == "local"
    with pytest.raises(ValueError, match="obs_mode.*'local', 'global', 'macpo'"):
        make("SafeHalfCheetah2x3-v0", obs_mode="safepo")


# ----------------------------------------------------------------------------------------------------------------
# Two costs: corridor + speed.
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("xy", "vel", "expected"),
    [
        ((0.0, 0.0), (0.0, 0.0), [0.0, 0.0]),
        ((0.0, 3.3), (0.0, 0.0), [1.0, 0.0]),  # near the wall, still
        ((0.0, 0.0), (6.0, 0.0), [0.0, 1.0]),  # in the middle, fast
        ((0.0, 3.3), (0.0, -6.0), [1.0, 1.0]),  # near the wall, fast (towards the middle, still near after a step)
    ],
)
def test_two_cost_corridor_with_speed_limit(xy, vel, expected):
    env = make("SafeAnt2x4WallSpeed-v0")
    assert env.num_costs == 2 and env.cost_limit == (50.0, 25.0)
    env.reset(seed=0)
    place(env, (*xy, 0.6), vel=vel)
    before = env.robot.env.data.qpos[:2].copy()
    _, _, _, _, infos = env.step(zero_actions(env))
    cost = infos["agent_0"]["cost"]
    assert cost.shape == (2,) and cost.dtype == np.float32
    speed = np.linalg.norm(env.robot.env.data.qpos[:2] - before) / env.dt
    assert cost[1] == float(speed > 2.522)  # safety-gymnasium's Ant 2x4 rule on the step's mean velocity
    assert cost[0] == env.current_cost()
    np.testing.assert_array_equal(cost, expected)


def test_two_cost_limits_as_list_or_number():
    assert make("SafeAnt2x4WallSpeed-v0", cost_limit=[10, 5.5]).cost_limit == (10.0, 5.5)
    assert make("SafeAnt2x4WallSpeed-v0", cost_limit=7).cost_limit == (7.0, 7.0)
    with pytest.raises(ValueError, match="cost_limit"):
        make("SafeAnt2x4WallSpeed-v0", cost_limit=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"cost_limit\[1\]"):
        make("SafeAnt2x4WallSpeed-v0", cost_limit=[1.0, -2.0])


# ----------------------------------------------------------------------------------------------------------------
# Headless rendering.
# ----------------------------------------------------------------------------------------------------------------
RENDER_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from rllib_safe.envs.obstacles import SafeMAMuJoCoObstacle
    print("IMPORTED", flush=True)
    for name in ("SafeAnt2x4-v0", "SafeHalfCheetah2x3-v0"):
        env = SafeMAMuJoCoObstacle(name, render_mode="rgb_array")
        env.reset(seed=0)
        img = env.render()
        assert img.shape == (480, 480, 3) and img.dtype == np.uint8 and img.std() > 5, (img.shape, img.std())
        env.close()
    print("RENDER_OK")
    """
)


def test_rgb_array_frame_headless():
    render_headless(RENDER_SCRIPT)
