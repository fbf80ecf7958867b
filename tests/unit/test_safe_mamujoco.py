"""Safe MAMuJoCo velocity tasks: contract, exact cost rule, thresholds, determinism, episode ends, bad input."""

import math

import mujoco
import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from rllib_safe.envs import NonFiniteError, make, task_names
from rllib_safe.envs.safe_mamujoco import VELOCITY_TASKS, SafeMAMuJoCoVelocity, safepo_vector, velocity_cost
from tests.helpers import check_contract_and_shapes, random_actions, zero_actions

VELOCITY_NAMES = sorted(VELOCITY_TASKS)

# safety-gymnasium TASK_VELCITY_THRESHOLD, written out independently of the implementation's table.
EXPECTED_THRESHOLDS = {
    "Safety2x4AntVelocity-v0": 2.522,
    "Safety4x2AntVelocity-v0": 2.418,
    "Safety2x3HalfCheetahVelocity-v0": 3.227,
    "Safety6x1HalfCheetahVelocity-v0": 2.932,
    "Safety3x1HopperVelocity-v0": 0.9613,
    "Safety2x3Walker2dVelocity-v0": 1.641,
    "Safety2x1SwimmerVelocity-v0": 0.04891,
    "Safety9|8HumanoidVelocity-v0": 0.58,
}
# (agents, obs dims with agent_obsk=1, action dims, state dim) as MaMuJoCo v1 defines them.
EXPECTED_SHAPES = {
    "Safety2x4AntVelocity-v0": (2, [63, 63], [4, 4], 105),
    "Safety4x2AntVelocity-v0": (4, [42] * 4, [2] * 4, 105),
    "Safety2x3HalfCheetahVelocity-v0": (2, [12, 12], [3, 3], 17),
    "Safety6x1HalfCheetahVelocity-v0": (6, [9, 9, 8, 9, 9, 8], [1] * 6, 17),
    "Safety3x1HopperVelocity-v0": (3, [8, 9, 8], [1, 1, 1], 11),
    "Safety2x3Walker2dVelocity-v0": (2, [12, 12], [3, 3], 17),
    "Safety2x1SwimmerVelocity-v0": (2, [6, 6], [1, 1], 8),
    "Safety9|8HumanoidVelocity-v0": (2, [242, 170], [9, 8], 348),
}


def test_registry_lists_all_velocity_tasks():
    assert set(EXPECTED_THRESHOLDS) <= set(task_names())


@pytest.mark.parametrize("name", VELOCITY_NAMES)
def test_threshold_table(name):
    assert VELOCITY_TASKS[name].threshold == EXPECTED_THRESHOLDS[name]
    assert VELOCITY_TASKS[name].planar is (name != "Safety2x1SwimmerVelocity-v0")


@pytest.mark.parametrize("name", VELOCITY_NAMES)
def test_rllib_env_checker_and_shapes(name):
    env = make(name)
    n, obs_dims, act_dims, state_dim = EXPECTED_SHAPES[name]
    check_contract_and_shapes(env, n, obs_dims, act_dims, state_dim)
    obs, infos = env.reset(seed=1)
    for aid in env.possible_agents:
        assert env.observation_spaces[aid].contains(obs[aid])
        assert infos[aid]["state"].shape == (state_dim,)
        assert "cost" not in infos[aid]  # the reset info carries no transition cost
    obs, rew, term, trunc, infos = env.step(random_actions(env, np.random.default_rng(0)))
    costs = {infos[aid]["cost"] for aid in env.possible_agents}
    assert len(costs) == 1 and costs <= {0.0, 1.0}  # the team cost, copied to every agent
    assert len({rew[aid] for aid in env.possible_agents}) == 1
    np.testing.assert_array_equal(infos["agent_0"]["state"], env.state())


@pytest.mark.parametrize("name", VELOCITY_NAMES)
def test_local_observations_match_mamujoco(name):
    """The fast index gather gives exactly MaMuJoCo's own local observations.

    Exception, by design: Gymnasium's Hopper-v5 and Walker2d-v5 clip joint velocities to [-10, 10] in the state our
    observations are gathered from, where MaMuJoCo's ``build_obs`` reads the raw ``qvel``.
    """
    from gymnasium_robotics import mamujoco_v1

    task = VELOCITY_TASKS[name]
    ours = make(name)
    ref = mamujoco_v1.parallel_env(task.scenario, task.agent_conf, agent_obsk=1)
    obs, _ = ours.reset(seed=3)
    ref_obs, _ = ref.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        actions = random_actions(ours, rng)
        obs, rew, *_ = ours.step(actions)
        ref_obs, ref_rew, *_ = ref.step(actions)
        for aid in ours.possible_agents:
            expected = ref_obs[aid]
            if task.scenario in ("Hopper", "Walker2d"):
                expected = np.clip(expected, -10.0, 10.0)
            np.testing.assert_allclose(obs[aid], expected.astype(np.float32), rtol=1e-6)
            assert rew[aid] == pytest.approx(ref_rew[aid])


def test_velocity_cost_rule_on_infos():
    assert velocity_cost({"x_velocity": 2.0, "y_velocity": 1.5}, 2.5) == 0.0  # hypot = 2.5 -> not above
    assert velocity_cost({"x_velocity": 2.0, "y_velocity": 1.5}, 2.4999) == 1.0
    assert velocity_cost({"x_velocity": 2.0, "y_velocity": 1.5}, 2.5001) == 0.0
    assert velocity_cost({"x_velocity": 2.0}, 1.9) == 1.0  # no y_velocity (HalfCheetah, Hopper, Walker2d)
    assert velocity_cost({"x_velocity": 0.3, "y_velocity": 5.0}, 0.5, planar=False) == 0.0  # Swimmer: vx only
    assert velocity_cost({"x_velocity": -3.0, "y_velocity": 0.0}, 2.5) == 1.0  # speed, not forward velocity


def test_velocity_cost_boundary_is_strict():
    # hypot(3, 4) == 5 exactly: "exceeds" means strictly greater.
    assert velocity_cost({"x_velocity": 3.0, "y_velocity": 4.0}, 5.0) == 0.0
    assert velocity_cost({"x_velocity": 3.0, "y_velocity": 4.0}, math.nextafter(5.0, 0.0)) == 1.0


@pytest.mark.parametrize("name", VELOCITY_NAMES)
def test_cost_from_physics_above_and_below_threshold(name):
    """Drive the robot's root along x by setting the MuJoCo velocity state, then step with zero actions."""
    env = make(name)
    threshold = VELOCITY_TASKS[name].threshold
    sim = env.robot.env

    env.reset(seed=0)
    sim.set_state(sim.data.qpos.copy(), np.zeros_like(sim.data.qvel))  # reset noise includes velocities
    *_, infos = env.step(zero_actions(env))
    assert infos["agent_0"]["cost"] == 0.0, "a robot at rest must not cost"

    env.reset(seed=0)
    qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
    qvel[:] = 0.0
    qvel[0] = 4.0 * threshold  # root x velocity (free joint or root slider)
    sim.set_state(qpos, qvel)
    mujoco.mj_forward(sim.model, sim.data)
    *_, infos = env.step(zero_actions(env))
    assert infos["agent_0"]["cost"] == 1.0

    # Below the threshold by the same construction.
    env.reset(seed=0)
    qpos, qvel = sim.data.qpos.copy(), np.zeros_like(sim.data.qvel)
    qvel[0] = 0.25 * threshold
    sim.set_state(qpos, qvel)
    mujoco.mj_forward(sim.model, sim.data)
    x0 = sim.data.qpos[0]
    *_, infos = env.step(zero_actions(env))
    vx = (sim.data.qpos[0] - x0) / sim.dt
    assert vx < threshold
    assert infos["agent_0"]["cost"] == 0.0


@pytest.mark.parametrize("name", ["Safety2x4AntVelocity-v0", "Safety3x1HopperVelocity-v0"])
def test_determinism_under_seed(name):
    def rollout(seed):
        env = make(name)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(7)
        trace = [np.concatenate([obs[a] for a in env.possible_agents])]
        for _ in range(30):
            obs, rew, term, trunc, infos = env.step(random_actions(env, rng))
            trace.append(
                np.concatenate([obs[a] for a in env.possible_agents] + [[rew["agent_0"]], [infos["agent_0"]["cost"]]])
            )
            if term["__all__"]:
                break
        return np.concatenate(trace)

    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


def test_truncation_at_time_limit_is_not_termination():
    env = make("Safety2x3HalfCheetahVelocity-v0", max_episode_steps=7)  # HalfCheetah never falls
    env.reset(seed=0)
    for t in range(1, 8):
        obs, rew, term, trunc, infos = env.step(zero_actions(env))
        assert term["__all__"] is False
        assert trunc["__all__"] is (t == 7)
    assert env.agents == []


def test_default_episode_is_1000_steps():
    assert make("Safety2x1SwimmerVelocity-v0").max_episode_steps == 1000


def test_fall_is_termination_not_truncation():
    env = make("Safety3x1HopperVelocity-v0", max_episode_steps=1000)
    env.reset(seed=0)
    sim = env.robot.env
    qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
    qpos[1] = 0.3  # torso height far below Hopper's healthy range (z > 0.7)
    sim.set_state(qpos, qvel)
    obs, rew, term, trunc, infos = env.step(zero_actions(env))
    assert term["__all__"] is True and trunc["__all__"] is False
    assert all(term[a] for a in env.possible_agents)


def test_global_observation_mode():
    env = make("Safety4x2AntVelocity-v0", obs_mode="global")
    check_multiagent_environments(env)
    obs, infos = env.reset(seed=0)
    for i, aid in enumerate(env.possible_agents):
        assert obs[aid].shape == (105 + 4,)
        np.testing.assert_array_equal(obs[aid][:105], infos[aid]["state"])
        np.testing.assert_array_equal(obs[aid][105:], np.eye(4)[i])


# SafePO's observation sizes: the Gymnasium *-v4 observation (Ant without contact forces: 27; Humanoid with the world
# body and the root's dofs: 376) plus the one-hot agent id.
SAFEPO_STATE_DIMS = {
    "Safety2x4AntVelocity-v0": 27,
    "Safety4x2AntVelocity-v0": 27,
    "Safety2x3HalfCheetahVelocity-v0": 17,
    "Safety6x1HalfCheetahVelocity-v0": 17,
    "Safety3x1HopperVelocity-v0": 11,
    "Safety2x3Walker2dVelocity-v0": 17,
    "Safety2x1SwimmerVelocity-v0": 8,
    "Safety9|8HumanoidVelocity-v0": 376,
}


def safepo_share_env_obs(v4_obs, n):
    """SafePO's ShareEnv._get_obs / _get_share_obs, written out: per agent (s ++ one_hot - mean) / std; the shared
    observation (s - mean) / (std + 1e-8)."""
    obs = []
    for i in range(n):
        o = np.concatenate([v4_obs, np.eye(n, dtype=np.float32)[i]])
        obs.append((o - np.mean(o)) / np.std(o))
    return obs, (v4_obs - np.mean(v4_obs)) / (np.std(v4_obs) + 1e-8)


@pytest.mark.parametrize("scenario", ["Ant", "HalfCheetah", "Hopper", "Walker2d", "Swimmer", "Humanoid"])
def test_safepo_vector_is_the_gymnasium_v4_observation(scenario):
    """safepo_vector reads from MuJoCo data exactly what Gymnasium's ``*-v4`` ``_get_obs`` returns (SafePO's state)."""
    import gymnasium as gym

    v4 = gym.make(f"{scenario}-v4").unwrapped
    v4.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        obs, *_ = v4.step(rng.uniform(-0.4, 0.4, v4.action_space.shape))
        np.testing.assert_array_equal(safepo_vector(scenario, v4.data), obs)


@pytest.mark.parametrize("name", VELOCITY_NAMES)
def test_safepo_mode_steps_like_safepo_on_gymnasium_v4(name):
    """``obs_mode="safepo"`` gives, step by step, SafePO's ShareEnv observations of a Gymnasium ``*-v4`` env driven
    with the same seed and actions (same robot XML; Walker2d-v5 has other foot frictions, so only its reset)."""
    import gymnasium as gym

    task = VELOCITY_TASKS[name]
    env = make(name, obs_mode="safepo")
    n, dim = len(env.possible_agents), SAFEPO_STATE_DIMS[name]
    check_contract_and_shapes(env, n, [dim + n] * n, EXPECTED_SHAPES[name][2], dim)
    v4 = gym.make(f"{task.scenario}-v4").unwrapped
    obs, infos = env.reset(seed=11)
    v4_obs, _ = v4.reset(seed=11)
    rng = np.random.default_rng(2)
    for _ in range(1 if task.scenario == "Walker2d" else 20):
        expected_obs, expected_state = safepo_share_env_obs(v4_obs, n)
        for i, aid in enumerate(env.possible_agents):
            assert obs[aid].dtype == np.float32
            np.testing.assert_allclose(obs[aid], expected_obs[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(infos["agent_0"]["state"], expected_state, rtol=1e-5, atol=1e-5)
        act = random_actions(env, rng)
        obs, _, term, _, infos = env.step(act)
        v4_obs, *_ = v4.step(env.robot.global_action(act))
        if term["__all__"]:
            break


def test_obs_modes_by_family():
    for mode in ("local", "global", "safepo"):
        assert make("Safety2x3HalfCheetahVelocity-v0", obs_mode=mode).obs_mode == mode
    with pytest.raises(ValueError, match="obs_mode.*'local', 'global', 'safepo'"):
        make("Safety2x3HalfCheetahVelocity-v0", obs_mode="macpo")
    assert make("Safety2x3HalfCheetahVelocity-v0").obs_mode == "local"  # the default is unchanged


def test_agent_obsk_changes_local_view():
    assert make("Safety2x4AntVelocity-v0", agent_obsk=0).observation_spaces["agent_0"].shape == (61,)
    assert make("Safety2x4AntVelocity-v0", agent_obsk=2).observation_spaces["agent_0"].shape == (65,)


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError, match="Safety2x4AntVelocity-v0") as e:
        make("Safety2x4AntVelocty-v0")
    assert "Unknown task" in str(e.value)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"obs_mode": "full"}, "obs_mode"),
        ({"agent_obsk": -1}, "agent_obsk"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"cost_limit": -1.0}, "cost_limit"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_options_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make("Safety2x4AntVelocity-v0", **kwargs)


def test_nan_action_and_nan_state_are_caught_with_location():
    env = make("Safety2x4AntVelocity-v0")
    env.reset(seed=0)
    actions = zero_actions(env)
    actions["agent_1"] = np.array([0.0, np.nan, 0.0, 0.0], np.float32)
    with pytest.raises(NonFiniteError, match=r"Safety2x4AntVelocity-v0.*agent_1.*step 1"):
        env.step(actions)

    env.reset(seed=0)
    env.step(zero_actions(env))
    sim = env.robot.env
    qpos = sim.data.qpos.copy()
    qpos[2] = np.nan
    sim.set_state(qpos, sim.data.qvel.copy())
    with pytest.raises(NonFiniteError, match=r"Safety2x4AntVelocity-v0.*step 2.*mjWARN_BADQPOS"):
        env.step(zero_actions(env))


class _NaNRewardEnv(SafeMAMuJoCoVelocity):
    def _step(self, actions):
        obs, state, reward, cost, terminated, extra = super()._step(actions)
        return obs, state, float("nan") if self._t == 2 else reward, cost, terminated, extra


def test_nan_reward_is_caught_with_task_and_step():
    env = _NaNRewardEnv("Safety2x3HalfCheetahVelocity-v0")
    env.reset(seed=0)
    env.step(zero_actions(env))
    env.step(zero_actions(env))
    with pytest.raises(NonFiniteError, match=r"Safety2x3HalfCheetahVelocity-v0: non-finite reward nan at step 3"):
        env.step(zero_actions(env))


def test_missing_agent_action_is_an_error():
    env = make("Safety2x4AntVelocity-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="agent_1"):
        env.step({"agent_0": np.zeros(4, np.float32)})


def test_tune_registry_builds_tasks_from_env_context():
    from ray.rllib.env.env_context import EnvContext
    from ray.tune.registry import ENV_CREATOR, _global_registry

    import rllib_safe

    rllib_safe.register()
    rllib_safe.register()  # idempotent
    creator = _global_registry.get(ENV_CREATOR, "Safety2x3Walker2dVelocity-v0")
    env = creator(EnvContext({"max_episode_steps": 11}, worker_index=3, num_workers=4))
    assert isinstance(env, SafeMAMuJoCoVelocity) and env.max_episode_steps == 11
