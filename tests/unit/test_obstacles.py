"""MACPO Safe MAMuJoCo obstacle tasks: contract, shapes, exact cost rules, real walls/obstacle, motion, rendering."""

import math
import os
import tempfile
import textwrap

import mujoco
import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from rllib_safe.envs import make, task_names
from rllib_safe.envs.obstacles import OBSTACLE_TASKS, SafeMAMuJoCoObstacle
from rllib_safe.envs.safe_mamujoco import SafeMAMuJoCoVelocity
from tests.helpers import check_contract_and_shapes, random_actions, render_headless, zero_actions

NAMES = sorted(OBSTACLE_TASKS)
T30 = math.tan(math.radians(30.0))
COS30 = math.cos(math.radians(30.0))

# (agents, local obs dims with agent_obsk=1 incl. the 2 task features, action dims, state dim), written out from
# MaMuJoCo's factorization rule: own qpos/qvel(/cfrc_ext) + neighbours' qpos + the global root, plus 2 features.
EXPECTED_SHAPES = {
    "SafeAnt2x4-v0": (2, [65, 65], [4, 4], 107),
    "SafeAnt2x4d-v0": (2, [65, 65], [4, 4], 107),
    "SafeAnt4x2-v0": (4, [44] * 4, [2] * 4, 107),
    "SafeAnt8x1-v0": (8, [31, 34] * 4, [1] * 8, 107),
    "SafeHalfCheetah2x3-v0": (2, [14, 14], [3, 3], 19),
    "SafeHalfCheetah3x2-v0": (3, [12, 14, 13], [2, 2, 2], 19),
    "SafeHalfCheetah6x1-v0": (6, [11, 11, 10, 11, 11, 10], [1] * 6, 19),
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


def place(env, xyz, quat=(1.0, 0.0, 0.0, 0.0), x=None):
    """Puts the robot's root at ``xyz`` (Ant) or its root x at ``x`` (HalfCheetah), at rest, and runs mj_forward."""
    sim = env.robot.env
    qpos, qvel = sim.init_qpos.copy(), np.zeros(sim.model.nv)
    if x is not None:
        qpos[0] = x
    else:
        qpos[0:3] = xyz
        qpos[3:7] = quat
    sim.set_state(qpos, qvel)  # calls mj_forward
    mujoco.mj_forward(sim.model, sim.data)


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
    obs, infos = env.reset(seed=1)
    for aid in env.possible_agents:
        assert env.observation_spaces[aid].contains(obs[aid])
        assert infos[aid]["state"].shape == (state_dim,)
        assert "cost" not in infos[aid]
    obs, rew, term, trunc, infos = env.step(random_actions(env, np.random.default_rng(0)))
    costs = {infos[aid]["cost"] for aid in env.possible_agents}
    assert len(costs) == 1 and costs <= {0.0, 1.0}
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
            assert a[1] == b[1] and a[2] == b[2] and a[4] == b[4]
            np.testing.assert_array_equal(a[3], b[3])


def test_cost_limit_override_and_registry_options():
    assert make("SafeAnt4x2-v0", cost_limit=12.5).cost_limit == 12.5
    env = make("SafeHalfCheetah6x1-v0", obs_mode="global")
    check_multiagent_environments(env)
    obs, infos = env.reset(seed=0)
    for i, aid in enumerate(env.possible_agents):
        assert obs[aid].shape == (19 + 6,)
        np.testing.assert_array_equal(obs[aid][:19], infos[aid]["state"])
        assert obs[aid][19 + i] == 1.0 and obs[aid][19:].sum() == 1.0
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
    ],
)
def test_bad_options_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make("SafeAnt2x4-v0", **kwargs)
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
@pytest.mark.parametrize(
    ("name", "plain"),
    [("SafeAnt2x4-v0", "Safety2x4AntVelocity-v0"), ("SafeHalfCheetah6x1-v0", "Safety6x1HalfCheetahVelocity-v0")],
)
def test_robot_and_local_observations_identical_to_plain_mamujoco(name, plain):
    """Walls/obstacle add no qpos/qvel: the first entries of every observation are MaMuJoCo's, bit for bit."""
    env, ref = make(name), SafeMAMuJoCoVelocity(plain)
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


def test_many_segment_ant_robot_identical_to_generated_asset(many_ant):
    """The ManySegmentAnt robot is MaMuJoCo's generated one (built here in a private dir), walls aside."""
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium_robotics.envs.multiagent_mujoco.many_segment_ant import gen_asset

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "msa.xml")
        gen_asset(n_segs=6, asset_path=path)
        plain = AntEnv(xml_file=path)
    sim = many_ant.robot.env
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
# Walls and the obstacle are real geoms.
# ----------------------------------------------------------------------------------------------------------------
def test_walls_are_geoms_that_stop_the_ant():
    env = make("SafeAnt2x4-v0")
    env.reset(seed=0)
    sim = env.robot.env
    model, data = sim.model, sim.data
    wall = model.geom("wall_left_0").id  # the left wall from x=-50 to the first fold
    qpos, qvel = sim.init_qpos.copy(), np.zeros(model.nv)
    qpos[0:3] = [0.0, 4.0, 0.6]
    qvel[1] = 6.0  # thrown sideways at 6 m/s towards the wall face at y = 5 + x·tan30
    sim.set_state(qpos, qvel)
    touched, max_y = False, -np.inf
    for _ in range(20):
        env.step(zero_actions(env))
        touched |= any(wall in (c.geom1, c.geom2) for c in data.contact[: data.ncon])
        max_y = max(max_y, data.qpos[1])
    assert touched
    assert max_y < 5.0 + data.qpos[0] * T30 - 0.25  # the torso sphere (r=0.25) never reaches the wall face


def test_obstacle_is_a_geom_the_cheetah_cannot_pass():
    env = make("SafeHalfCheetah2x3-v0")
    env.reset(seed=0)
    sim = env.robot.env
    model, data = sim.model, sim.data
    box = model.geom("obstacle_geom").id
    qpos, qvel = sim.init_qpos.copy(), np.zeros(model.nv)
    qpos[0] = env.obstacle_x - 2.0
    qvel[0] = 10.0
    sim.set_state(qpos, qvel)
    touched = False
    for _ in range(20):
        env.step(zero_actions(env))
        touched |= any(box in (c.geom1, c.geom2) for c in data.contact[: data.ncon])
        assert data.qpos[0] < env.obstacle_x - 0.25
    assert touched


# ----------------------------------------------------------------------------------------------------------------
# The moving obstacle (Eq. 37 and the MACPO drive).
# ----------------------------------------------------------------------------------------------------------------
def test_obstacle_moves_by_the_macpo_drive(cheetah):
    cheetah.reset(seed=0)
    assert cheetah.obstacle_x == 20.0
    dt = 0.05  # HalfCheetah-v5: 5 frames of 0.01 s
    assert cheetah.dt == pytest.approx(dt)
    x, k = 20.0, 0
    for steps in (1, 10, 60, 200):
        while k < steps:
            _, _, _, _, infos = cheetah.step(zero_actions(cheetah))
            x += 0.02 * math.sin(k * dt / 3) ** 2 - 0.004  # the drive at t_k = k·dt, applied as displacement
            k += 1
        assert cheetah.obstacle_x == pytest.approx(x, abs=1e-12)
        state = infos["agent_0"]["state"]
        torso_x = cheetah.robot.env.data.qpos[0]
        assert state[-2] == pytest.approx(x - torso_x, rel=1e-6)
        assert state[-1] == pytest.approx((0.02 * math.sin(k * dt / 3) ** 2 - 0.004) / dt, rel=1e-6)
    # Over one period (3π s) the obstacle creeps forward; over a whole episode about 6 m.
    assert cheetah.obstacle_x > 20.0
    cheetah.reset(seed=1)
    assert cheetah.obstacle_x == 20.0


@pytest.mark.parametrize(("offset", "cost"), [(8.9, 1.0), (9.1, 0.0), (0.0, 1.0), (-8.0, 1.0), (-9.5, 0.0)])
def test_obstacle_cost_from_placed_states(cheetah, offset, cost):
    """Cost 1 iff |x_obstacle - x_torso| < 9 m (offset = x_obstacle - x_torso; negative: the robot is past it)."""
    cheetah.reset(seed=0)
    place(cheetah, None, x=cheetah.obstacle_x - offset)
    assert cheetah.current_cost() == cost


def test_obstacle_cost_in_step_info():
    env = make("SafeHalfCheetah3x2-v0")
    env.reset(seed=0)
    _, _, _, _, infos = env.step(zero_actions(env))  # the robot starts 20 m behind the obstacle
    assert infos["agent_0"]["cost"] == 0.0
    place(env, None, x=env.obstacle_x - 5.0)
    _, _, _, _, infos = env.step(zero_actions(env))
    assert {infos[a]["cost"] for a in env.possible_agents} == {1.0}


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
