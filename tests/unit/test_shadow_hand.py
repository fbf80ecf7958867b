"""Safe ShadowHand tasks: contract, shapes, exact cost rules, a stable start, episode ends, reward, rendering."""

import math

import mujoco
import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from rllib_safe.envs import NonFiniteError, make, task_names
from rllib_safe.envs.shadow_hand import (
    ACTUATED_JOINTS,
    COST_RULES,
    FALL_HEIGHT,
    SHADOW_HAND_TASKS,
    SafeShadowHand,
    random_rotation,
    rotation_distance,
    shadow_hand_cost,
)
from tests.helpers import random_actions, render_headless

HANDOVER = "SafeShadowHandOver-v0"
REORIENT = "SafeShadowHandReOrientation-v0"
TASKS = [HANDOVER, REORIENT]
# (obs dim per agent, state dim, episode length, default cost limit), written out independently of the implementation.
EXPECTED = {HANDOVER: (211, 398, 75, 15.0), REORIENT: (235, 422, 600, 110.0)}
HAND = 187  # Isaac's per-hand observation block


def zeros(env):
    return {aid: np.zeros(20, np.float32) for aid in env.possible_agents}


def object_positions(env):
    return np.stack([env.data.qpos[q : q + 3].copy() for q in env._obj_q])


@pytest.fixture(scope="module", params=TASKS)
def env(request):
    e = make(request.param)
    yield e
    e.close()


def test_registry_lists_the_tasks():
    assert set(TASKS) <= set(task_names())
    assert set(SHADOW_HAND_TASKS) == set(TASKS)
    assert isinstance(make(HANDOVER), SafeShadowHand)


def test_rllib_env_checker_and_shapes(env):
    check_multiagent_environments(env)
    obs_dim, state_dim, episode, limit = EXPECTED[env.task_name]
    assert env.possible_agents == ["agent_0", "agent_1"]
    assert env.max_episode_steps == episode and env.cost_limit == limit
    assert env.state_space.shape == (state_dim,)
    for aid in env.possible_agents:
        assert env.observation_spaces[aid].shape == (obs_dim,)
        space = env.action_spaces[aid]
        assert space.shape == (20,) and space.dtype == np.float32
        assert np.all(space.low == -1.0) and np.all(space.high == 1.0)
    obs, infos = env.reset(seed=1)
    for aid in env.possible_agents:
        assert env.observation_spaces[aid].contains(obs[aid])
        assert infos[aid]["state"].shape == (state_dim,)
        assert "cost" not in infos[aid]
    obs, rew, term, trunc, infos = env.step(random_actions(env, np.random.default_rng(0)))
    assert len({infos[aid]["cost"] for aid in env.possible_agents}) == 1
    assert infos["agent_0"]["cost"] in (0.0, 1.0)
    assert len({rew[aid] for aid in env.possible_agents}) == 1
    state = env.state()
    np.testing.assert_array_equal(infos["agent_1"]["state"], state)
    # MACPO's MultiVecTask split: agent i sees its own hand block and the shared object block.
    np.testing.assert_array_equal(obs["agent_0"], np.r_[state[:HAND], state[2 * HAND :]])
    np.testing.assert_array_equal(obs["agent_1"], np.r_[state[HAND : 2 * HAND], state[2 * HAND :]])


def test_determinism_under_seed(env):
    other = make(env.task_name)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    obs_a, _ = env.reset(seed=11)
    obs_b, _ = other.reset(seed=11)
    for aid in env.possible_agents:
        np.testing.assert_array_equal(obs_a[aid], obs_b[aid])
    for _ in range(10):
        out_a = env.step(random_actions(env, rng_a))
        out_b = other.step(random_actions(other, rng_b))
        for aid in env.possible_agents:
            np.testing.assert_array_equal(out_a[0][aid], out_b[0][aid])
            assert out_a[1][aid] == out_b[1][aid]
            assert out_a[4][aid]["cost"] == out_b[4][aid]["cost"]
    obs_c, _ = other.reset(seed=12)
    assert not np.array_equal(obs_a["agent_0"], obs_c["agent_0"])


# ---------------------------------------------------------------------------------------------------------------
# Cost rules (MAFOCOPS Eq. 38 with the MACPO code's strict ">"; safety-gymnasium's joint/finger variants).
# ---------------------------------------------------------------------------------------------------------------
def step_cost(env, agent, index, value):
    env.reset(seed=0)
    actions = zeros(env)
    actions[agent][index] = value
    _, _, _, _, infos = env.step(actions)
    costs = {infos[aid]["cost"] for aid in env.possible_agents}
    assert len(costs) == 1  # a team cost
    return costs.pop()


# (task, rule, agent, action index, value, expected cost)
COST_CASES = [
    (HANDOVER, "macpo", "agent_0", 4, 0.0999, 0.0),
    (HANDOVER, "macpo", "agent_0", 4, 0.1001, 1.0),
    (HANDOVER, "macpo", "agent_0", 4, -0.0999, 0.0),
    (HANDOVER, "macpo", "agent_0", 4, -0.1001, 1.0),
    (HANDOVER, "macpo", "agent_0", 4, 0.1, 0.0),  # exactly at the threshold: strict comparison
    (HANDOVER, "macpo", "agent_0", 4, -0.1, 0.0),
    (HANDOVER, "macpo", "agent_0", 4, 7.0, 1.0),  # clipped to 1 first
    (HANDOVER, "macpo", "agent_0", 3, 1.0, 0.0),  # other indices do not matter
    (HANDOVER, "macpo", "agent_0", 5, -1.0, 0.0),
    (HANDOVER, "macpo", "agent_1", 4, 1.0, 0.0),  # HandOver watches the first hand only
    (REORIENT, "macpo", "agent_0", 4, 0.1001, 1.0),
    # MACPO's ReOrientation compute_cost also watches actions[:, 4 + 24] = hand 1's index 8 (A_RFJ3), not its index 4.
    (REORIENT, "macpo", "agent_1", 8, 0.1001, 1.0),
    (REORIENT, "macpo", "agent_1", 8, -0.1001, 1.0),
    (REORIENT, "macpo", "agent_1", 8, 0.0999, 0.0),
    (REORIENT, "macpo", "agent_1", 8, 0.1, 0.0),
    (REORIENT, "macpo", "agent_1", 4, 1.0, 0.0),
    (REORIENT, "macpo", "agent_0", 8, 1.0, 0.0),
    (REORIENT, "macpo", "agent_1", 2, 1.0, 0.0),
    (HANDOVER, "ffj1", "agent_0", 4, 0.1001, 1.0),
    (HANDOVER, "ffj1", "agent_1", 4, 1.0, 0.0),
    (REORIENT, "ffj1", "agent_0", 4, 0.1001, 1.0),
    (REORIENT, "ffj1", "agent_1", 4, 0.1001, 1.0),  # index 4 of each hand
    (REORIENT, "ffj1", "agent_1", 4, 0.1, 0.0),
    (REORIENT, "ffj1", "agent_1", 8, 1.0, 0.0),
    (HANDOVER, "safe_joint", "agent_0", 4, 0.4999, 0.0),
    (HANDOVER, "safe_joint", "agent_0", 4, 0.5001, 1.0),
    (HANDOVER, "safe_joint", "agent_0", 4, -0.5001, 1.0),
    (HANDOVER, "safe_joint", "agent_0", 4, 0.5, 0.0),
    (HANDOVER, "safe_joint", "agent_0", 3, 1.0, 0.0),
    (HANDOVER, "safe_joint", "agent_1", 4, 1.0, 0.0),
    (REORIENT, "safe_joint", "agent_1", 4, 0.5001, 1.0),
    (HANDOVER, "safe_finger", "agent_0", 2, 0.5001, 1.0),
    (HANDOVER, "safe_finger", "agent_0", 3, -0.5001, 1.0),
    (HANDOVER, "safe_finger", "agent_0", 4, 0.5001, 1.0),
    (HANDOVER, "safe_finger", "agent_0", 2, 0.4999, 0.0),
    (HANDOVER, "safe_finger", "agent_0", 3, 0.5, 0.0),
    (HANDOVER, "safe_finger", "agent_0", 1, 1.0, 0.0),
    (HANDOVER, "safe_finger", "agent_0", 5, 1.0, 0.0),
    (HANDOVER, "safe_finger", "agent_1", 2, 1.0, 0.0),
    (REORIENT, "safe_finger", "agent_1", 3, 0.5001, 1.0),
]


@pytest.fixture(scope="module")
def cost_envs():
    envs = {}

    def get(task, rule, threshold=None):
        key = (task, rule, threshold)
        if key not in envs:
            envs[key] = make(task, cost_rule=rule, cost_threshold=threshold)
        return envs[key]

    return get


@pytest.mark.parametrize("task,rule,agent,index,value,expected", COST_CASES)
def test_cost_rules_exact(cost_envs, task, rule, agent, index, value, expected):
    assert step_cost(cost_envs(task, rule), agent, index, value) == expected


def test_cost_threshold_override(cost_envs):
    env = cost_envs(HANDOVER, "macpo", 0.3)
    assert env.cost_threshold == 0.3
    assert step_cost(env, "agent_0", 4, 0.2999) == 0.0
    assert step_cost(env, "agent_0", 4, 0.3) == 0.0
    assert step_cost(env, "agent_0", 4, 0.3001) == 1.0
    env = cost_envs(HANDOVER, "safe_finger", 0.2)
    assert step_cost(env, "agent_0", 2, 0.2001) == 1.0
    assert step_cost(env, "agent_0", 2, 0.1999) == 0.0


def test_cost_rule_table_and_function():
    # Watched entries of the 40 actions (hand 0's, then hand 1's), HandOver / ReOrientation.
    assert COST_RULES["macpo"].watched(False) == (4,) and COST_RULES["macpo"].watched(True) == (4, 28)
    assert COST_RULES["ffj1"].watched(True) == (4, 24) and COST_RULES["ffj1"].threshold == 0.1
    assert COST_RULES["safe_joint"].watched(False) == (4,) and COST_RULES["safe_joint"].threshold == 0.5
    assert COST_RULES["safe_finger"].watched(True) == (2, 3, 4, 22, 23, 24)
    assert COST_RULES["safe_finger"].threshold == 0.5
    assert ACTUATED_JOINTS[8] == "RFJ3" and ACTUATED_JOINTS[4] == "FFJ1"
    assert make(REORIENT).cost_indices == (4, 28) and make(REORIENT, cost_rule="ffj1").cost_indices == (4, 24)
    a = np.zeros((2, 20), np.float32)
    assert shadow_hand_cost(a, (24,), 0.1) == 0.0
    a[1, 4] = 0.1  # float32(0.1) equals the threshold taken to float32
    assert shadow_hand_cost(a, (24,), 0.1) == 0.0
    a[1, 4] = np.nextafter(np.float32(0.1), np.float32(1.0))
    assert shadow_hand_cost(a, (24,), 0.1) == 1.0
    assert shadow_hand_cost(a, (4, 28), 0.1) == 0.0
    assert shadow_hand_cost(np.array([0.0, 0.0, 0.0, 0.0, 0.1] + [0.0] * 35), (4,), 0.1) == 0.0  # float64 input


def test_default_and_overridden_cost_limit():
    assert make(HANDOVER).cost_limit == 15.0
    assert make(REORIENT).cost_limit == 110.0
    assert make(HANDOVER, cost_limit=3.5).cost_limit == 3.5


# ---------------------------------------------------------------------------------------------------------------
# The scene: a stable start, falls, time limits.
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["zero", "hold"])
def test_object_stays_in_the_palm(env, mode):
    for seed in (0, 1, 2):
        env.reset(seed=seed)
        start = object_positions(env)
        assert np.all(np.abs(start - env._obj_start) <= 0.0100001)
        actions = env.hold_actions() if mode == "hold" else zeros(env)
        for _ in range(30):
            _, rew, term, trunc, _ = env.step(actions)
            assert not term["__all__"] and not trunc["__all__"]
            assert math.isfinite(rew["agent_0"])
            pos = object_positions(env)
            assert np.all(pos[:, 2] > 0.45)  # well above the fall height, at palm level (the palm is at z = 0.49)
            assert np.all(np.linalg.norm(pos - env._obj_start, axis=1) < 0.07)  # still in its hand


def test_hold_actions_are_the_start_targets(env):
    env.reset(seed=4)
    hold = env.hold_actions()
    targets = env.data.ctrl[env._act].copy()
    np.testing.assert_allclose(env._ctrl_center + np.r_[hold["agent_0"], hold["agent_1"]] * env._ctrl_half, targets)
    np.testing.assert_allclose(env.data.qpos[env._act_q], targets)
    assert all(np.all(np.abs(a) <= 0.2) for a in hold.values())


@pytest.mark.parametrize("task,which", [(HANDOVER, 0), (REORIENT, 0), (REORIENT, 1)])
def test_dropped_object_terminates(task, which):
    env = make(task)
    env.reset(seed=3)
    q = env._obj_q[which]
    env.data.qpos[q : q + 3] = [0.0, -0.5, FALL_HEIGHT / 2]
    env.data.qvel[env._obj_d[which] : env._obj_d[which] + 6] = 0.0
    mujoco.mj_forward(env.model, env.data)
    _, _, term, trunc, _ = env.step(env.hold_actions())
    assert term["__all__"] and term["agent_0"] and term["agent_1"]
    assert not trunc["__all__"]
    assert env.agents == []


def test_handover_truncates_at_75_steps():
    env = make(HANDOVER)
    env.reset(seed=0)
    hold = env.hold_actions()
    for t in range(1, 76):
        _, _, term, trunc, _ = env.step(hold)
        assert not term["__all__"]
        assert trunc["__all__"] == (t == 75)
    assert env.agents == []


def test_reorientation_truncates_at_max_episode_steps():
    env = make(REORIENT, max_episode_steps=5)
    env.reset(seed=0)
    for t in range(1, 6):
        _, _, term, trunc, _ = env.step(zeros(env))
        assert not term["__all__"] and trunc["__all__"] == (t == 5)


# ---------------------------------------------------------------------------------------------------------------
# Observations and reward.
# ---------------------------------------------------------------------------------------------------------------
def test_observation_layout(env):
    env.reset(seed=2)
    actions = random_actions(env, np.random.default_rng(3))
    actions["agent_1"][7] = 3.0  # clipped in the observed last action
    env.step(actions)
    s = env.state()
    for h, aid in enumerate(env.possible_agents):
        block = s[h * HAND : (h + 1) * HAND]
        assert np.all(np.abs(block[:24]) <= 1.0 + 1e-3)  # unscaled joint positions
        expected = np.clip(actions[aid], -1, 1)
        np.testing.assert_array_equal(block[167:187], expected)
        tips = block[72:137].reshape(5, 13)
        for k, tip in enumerate(("ffdistal", "mfdistal", "rfdistal", "lfdistal", "thdistal")):
            body = env.data.body(f"hand{h}/robot0:{tip}")
            np.testing.assert_allclose(tips[k, :3], body.xpos, atol=1e-6)  # the state reached, not a substep before
            np.testing.assert_allclose(np.abs(tips[k, 3:7] @ body.xquat), 1.0, atol=1e-5)
    for j in range(env.spec_.num_objects):
        obj = s[2 * HAND + 24 * j : 2 * HAND + 24 * (j + 1)]
        np.testing.assert_allclose(obj[:3], object_positions(env)[j], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(obj[3:7]), 1.0, atol=1e-5)
        np.testing.assert_allclose(obj[13:16], env._goal_pos[j], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(obj[16:20]), 1.0, atol=1e-5)


def test_reward_formulas(env):
    env.reset(seed=6)
    rng = np.random.default_rng(1)
    for _ in range(3):
        actions = random_actions(env, rng)
        _, rew, _, _, infos = env.step(actions)
        s = env.state().astype(np.float64)
        dist, rot = [], []
        for j in range(env.spec_.num_objects):
            obj = s[2 * HAND + 24 * j : 2 * HAND + 24 * (j + 1)]
            dist.append(np.linalg.norm(obj[13:16] - obj[:3]))
            rot.append(2 * math.asin(min(np.linalg.norm(obj[21:24]), 1.0)))
        if env.task_name == HANDOVER:
            expected = math.exp(-0.2 * (50 * dist[0] + rot[0]))
        else:
            a = np.concatenate([actions["agent_0"], actions["agent_1"]])
            # MACPO shadow_hand_re_orientation.yaml: distRewardScale -10, rotRewardScale 1.5, rotEps 0.1.
            expected = -10 * sum(dist) + sum(1.5 / (abs(r) + 0.1) for r in rot) - 0.0002 * float(a @ a)
        assert rew["agent_0"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(infos["agent_0"]["goal_dist"], dist, rtol=1e-4, atol=1e-6)


def test_rotation_helpers():
    q = random_rotation(np.random.default_rng(0), 100)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0)
    assert rotation_distance(np.array([1.0, 0.0, 0.0, 0.0])) == 0.0
    half = math.sqrt(0.5)
    assert rotation_distance(np.array([half, half, 0.0, 0.0])) == pytest.approx(math.pi / 2)


# ---------------------------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options,name",
    [
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"max_episode_steps": 2.5}, "max_episode_steps"),
        ({"cost_limit": -1.0}, "cost_limit"),
        ({"cost_limit": float("nan")}, "cost_limit"),
        ({"cost_rule": "joint"}, "cost_rule"),
        ({"cost_threshold": -0.1}, "cost_threshold"),
        ({"cost_threshold": "0.1"}, "cost_threshold"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_options_raise(options, name):
    with pytest.raises(ValueError, match=name):
        make(HANDOVER, **options)


def test_unknown_task_and_option():
    with pytest.raises(ValueError, match="Unknown ShadowHand task"):
        SafeShadowHand("SafeShadowHandCatch-v0")
    with pytest.raises(ValueError, match="obs_mode"):
        make(HANDOVER, obs_mode="global")


def test_non_finite_action_raises():
    env = make(HANDOVER)
    env.reset(seed=0)
    actions = zeros(env)
    actions["agent_1"][0] = np.nan
    with pytest.raises(NonFiniteError, match="agent_1"):
        env.step(actions)


# ---------------------------------------------------------------------------------------------------------------
# Rendering (headless). MuJoCo picks its GL backend at import, so each backend is tried in a fresh process.
# ---------------------------------------------------------------------------------------------------------------
RENDER_SCRIPT = """
import numpy as np
from rllib_safe.envs import make
print("IMPORTED", flush=True)
for name in {tasks!r}:
    env = make(name, render_mode="rgb_array")
    env.reset(seed=0)
    env.step({{aid: np.zeros(20, np.float32) for aid in env.possible_agents}})
    img = env.render()
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8, (img.shape, img.dtype)
    assert img.std() > 5.0, "blank image"
    env.close()
print("RENDER_OK")
"""


def test_render_rgb_array_headless():
    render_headless(RENDER_SCRIPT.format(tasks=TASKS))
