"""Unit tests of the SafeMAToy-v0 task."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from rllib_safe.envs import make, task_names
from rllib_safe.envs.toy import SafeMAToy, SafeMAToy2Cost, analytic_optimum, analytic_optimum_two_costs, step_cost


def _act(env: SafeMAToy, values) -> dict[str, np.ndarray]:
    return {aid: np.array([v], dtype=np.float32) for aid, v in zip(env.possible_agents, values)}


def _episode(env: SafeMAToy, values, seed: int = 0) -> tuple[float, float, int]:
    """Runs one episode with constant actions; returns (episode reward, episode cost, steps)."""
    env.reset(seed=seed)
    reward = cost = 0.0
    steps = 0
    while True:
        _, rew, term, trunc, info = env.step(_act(env, values))
        reward += rew["agent_0"]
        cost += info["agent_0"]["cost"]
        steps += 1
        if term["__all__"] or trunc["__all__"]:
            return reward, cost, steps


def test_registered_and_built_by_name():
    assert "SafeMAToy-v0" in task_names()
    env = make("SafeMAToy-v0", num_agents=3, max_episode_steps=10, cost_limit=2.0)
    assert isinstance(env, SafeMAToy)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert env.max_episode_steps == 10 and env.cost_limit == 2.0 and env.team_size == 3
    with pytest.raises(ValueError, match="Invalid option"):
        make("SafeMAToy-v0", speed=3)


@pytest.mark.parametrize("num_agents", [1, 2, 3])
def test_rllib_env_checker(num_agents):
    env = SafeMAToy(num_agents=num_agents)
    check_multiagent_environments(env)


def test_spaces_and_defaults():
    env = SafeMAToy()
    assert env.task_name == "SafeMAToy-v0"
    assert env.possible_agents == ["agent_0", "agent_1"]
    assert env.max_episode_steps == 25 and env.cost_limit == 5.0 and env.speed_threshold == 0.5
    assert env.num_costs == 1
    for aid in env.possible_agents:
        act = env.action_spaces[aid]
        assert act.shape == (1,) and act.dtype == np.float32
        np.testing.assert_array_equal(act.low, [-1.0])
        np.testing.assert_array_equal(act.high, [1.0])
        obs_space = env.observation_spaces[aid]
        assert obs_space.shape == (4,) and obs_space.dtype == np.float32
    assert env.state_space.shape == (4,) and env.state_space.dtype == np.float32


def test_reset_contract():
    env = SafeMAToy()
    obs, info = env.reset(seed=7)
    for aid in env.possible_agents:
        assert obs[aid][0] == 0.0 and obs[aid][3] == 0.0  # t/T and cumulative cost
        assert "cost" not in info[aid]
        np.testing.assert_array_equal(info[aid]["state"], env.state())
    # Initial "previous speeds" are random in [0, 1); agent_0's own speed is agent_1's "others" entry.
    assert obs["agent_0"][1] == obs["agent_1"][2] and obs["agent_1"][1] == obs["agent_0"][2]
    np.testing.assert_array_equal(env.state()[1:3], [obs["agent_0"][1], obs["agent_1"][1]])


def test_reward_cost_and_observations_on_hand_chosen_actions():
    env = SafeMAToy()
    env.reset(seed=0)
    # a = (1, 0) -> s = (1, 0.5), m = 0.75: reward 0.75, cost ((0.75 - 0.5) / 0.5)^2 = 0.25.
    obs, rew, term, trunc, info = env.step(_act(env, [1.0, 0.0]))
    assert rew == {"agent_0": 0.75, "agent_1": 0.75}
    for aid in env.possible_agents:
        assert info[aid]["cost"] == 0.25 and isinstance(info[aid]["cost"], float)
        assert info[aid]["mean_speed"] == 0.75
        np.testing.assert_array_equal(info[aid]["state"], env.state())
    np.testing.assert_allclose(obs["agent_0"], [1 / 25, 1.0, 0.5, 0.25 / 25], rtol=1e-6)
    np.testing.assert_allclose(obs["agent_1"], [1 / 25, 0.5, 1.0, 0.25 / 25], rtol=1e-6)
    np.testing.assert_allclose(env.state(), [1 / 25, 1.0, 0.5, 0.25 / 25], rtol=1e-6)
    # Out-of-range actions are clipped: a = (2, -3) -> s = (1, 0), m = 0.5: reward 0.5, cost 0.
    obs, rew, _, _, info = env.step(_act(env, [2.0, -3.0]))
    assert rew["agent_0"] == 0.5 and info["agent_0"]["cost"] == 0.0
    # a = (0.6, 0.6) -> s = 0.8, m = 0.8: cost (0.3 / 0.5)^2 = 0.36; cumulative cost 0.61.
    obs, rew, _, _, info = env.step(_act(env, [0.6, 0.6]))
    assert rew["agent_0"] == pytest.approx(0.8, abs=1e-6)
    assert info["agent_1"]["cost"] == pytest.approx(0.36, abs=1e-6)
    np.testing.assert_allclose(obs["agent_1"], [3 / 25, 0.8, 0.8, 0.61 / 25], rtol=1e-5)
    # a = (-1, -1) -> standing still: reward 0, cost 0.
    _, rew, _, _, info = env.step(_act(env, [-1.0, -1.0]))
    assert rew["agent_1"] == 0.0 and info["agent_0"]["cost"] == 0.0


def test_step_cost_rule():
    assert step_cost(0.0) == 0.0
    assert step_cost(0.5) == 0.0
    assert step_cost(0.75) == pytest.approx(0.25)
    assert step_cost(1.0) == 1.0
    assert step_cost(0.6, speed_threshold=0.2) == pytest.approx(0.25)  # ((0.6 - 0.2) / 0.8)^2


def test_truncation_at_max_episode_steps():
    env = SafeMAToy(max_episode_steps=3)
    env.reset(seed=1)
    for t in range(1, 4):
        obs, _, term, trunc, _ = env.step(_act(env, [0.0, 0.0]))
        assert term == {"agent_0": False, "agent_1": False, "__all__": False}
        assert trunc["__all__"] is (t == 3) and trunc["agent_0"] is (t == 3)
        assert obs["agent_0"][0] == pytest.approx(t / 3)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_act(env, [0.0, 0.0]))
    env.reset()
    assert env.agents == ["agent_0", "agent_1"]


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        SafeMAToy().step({"agent_0": np.zeros(1, np.float32), "agent_1": np.zeros(1, np.float32)})


def test_bad_action_shape():
    env = SafeMAToy()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="agent_1 must hold one number"):
        env.step({"agent_0": np.zeros(1, np.float32), "agent_1": np.zeros(2, np.float32)})


def test_deterministic_with_seed():
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1.2, 1.2, size=(30, 2)).astype(np.float32)

    def rollout(seed):
        env = SafeMAToy()
        out = [env.reset(seed=seed)[0]]
        for a in actions:
            obs, rew, term, trunc, info = env.step(_act(env, a))
            out.append((obs, rew, info["agent_0"]["cost"]))
            if trunc["__all__"]:
                out.append(env.reset()[0])  # next reset continues the seeded generator
        return out

    first, second, other = rollout(11), rollout(11), rollout(12)
    assert repr(first) == repr(second)
    assert repr(first) != repr(other)


def test_observations_stay_in_spaces():
    env = SafeMAToy(num_agents=3, max_episode_steps=10)
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(25):
        obs, _, _, trunc, info = env.step(_act(env, rng.uniform(-1.5, 1.5, size=3)))
        for aid in env.possible_agents:
            assert env.observation_spaces[aid].contains(obs[aid])
        assert env.state_space.contains(info["agent_0"]["state"])
        if trunc["__all__"]:
            obs, _ = env.reset()


def test_analytic_optimum_numbers():
    opt = SafeMAToy().analytic_optimum()
    assert opt["safe_speed"] == pytest.approx(0.5 + 0.5 * math.sqrt(0.2))
    assert opt["safe_reward"] == pytest.approx(18.0901699, abs=1e-7)
    assert opt["safe_cost"] == pytest.approx(5.0)
    assert opt["unconstrained_reward"] == 25.0 and opt["unconstrained_cost"] == 25.0
    # A budget that allows full speed: T = 10, d = 20 -> m* = 1.
    assert analytic_optimum(10, 20.0, 0.2)["safe_reward"] == pytest.approx(10.0)
    # d = 0 -> m* = tau.
    assert analytic_optimum(25, 0.0, 0.5)["safe_reward"] == pytest.approx(12.5)


def test_constant_action_episodes_match_the_documented_numbers():
    env = SafeMAToy()
    # Unconstrained optimum: full speed -> reward 25, cost 25.
    assert _episode(env, [1.0, 1.0]) == (25.0, 25.0, 25)
    # a = 0 -> speed 0.5 -> reward 12.5, cost 0.
    assert _episode(env, [0.0, 0.0]) == (12.5, 0.0, 25)
    # The best safe policy: speed m* = 0.7236, a* = 2 m* - 1 -> reward 18.09, cost 5.
    a_star = 2 * env.analytic_optimum()["safe_speed"] - 1
    reward, cost, _ = _episode(env, [a_star, a_star])
    assert reward == pytest.approx(18.0901699, rel=1e-6)
    assert cost == pytest.approx(5.0, rel=1e-5)
    # Asymmetric agents with the same mean speed earn and cost the same.
    reward2, cost2, _ = _episode(env, [1.0, 2 * a_star - 1])
    assert reward2 == pytest.approx(reward, rel=1e-6) and cost2 == pytest.approx(cost, rel=1e-5)


def test_time_varying_policies_do_not_beat_the_safe_optimum():
    # "Sprint then cruise": 5 steps at full speed (cost 5) + 20 at speed 0.5 (cost 0) -> reward 15 < 18.09.
    env = SafeMAToy()
    env.reset(seed=0)
    reward = cost = 0.0
    for t in range(25):
        a = 1.0 if t < 5 else 0.0
        _, rew, _, _, info = env.step(_act(env, [a, a]))
        reward += rew["agent_0"]
        cost += info["agent_0"]["cost"]
    assert cost == 5.0 and reward == 15.0 < env.analytic_optimum()["safe_reward"]
    # Random speed profiles, each rescaled onto the cost limit, stay below the optimum (Jensen).
    rng = np.random.default_rng(0)
    for _ in range(20):
        excess = rng.uniform(0.0, 1.0, size=25)
        excess *= math.sqrt(5.0 / np.sum((excess / 0.5) ** 2))  # sum of per-step costs = 5
        speeds = 0.5 + excess
        if speeds.max() > 1.0:
            continue
        assert sum(step_cost(s) for s in speeds) == pytest.approx(5.0)
        assert speeds.sum() <= env.analytic_optimum()["safe_reward"] + 1e-9


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_agents": 0}, "num_agents"),
        ({"num_agents": 1.5}, "num_agents"),
        ({"num_agents": True}, "num_agents"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"max_episode_steps": 2.0}, "max_episode_steps"),
        ({"cost_limit": -1.0}, "cost_limit"),
        ({"cost_limit": float("nan")}, "cost_limit"),
        ({"cost_limit": math.inf}, "cost_limit"),
        ({"cost_limit": "5"}, "cost_limit"),
        ({"speed_threshold": 1.0}, "speed_threshold"),
        ({"speed_threshold": -0.1}, "speed_threshold"),
    ],
)
def test_invalid_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SafeMAToy(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# SafeMAToy2Cost-v0: two costs (team speed, lead speed), per-cost limits.
# ----------------------------------------------------------------------------------------------------------------


def test_two_cost_variant_registered_with_per_cost_limits():
    assert "SafeMAToy2Cost-v0" in task_names()
    env = make("SafeMAToy2Cost-v0")
    assert isinstance(env, SafeMAToy2Cost) and env.task_name == "SafeMAToy2Cost-v0"
    assert env.num_costs == 2 and env.cost_limit == (5.0, 2.5) and env.lead_speed_threshold == 0.3
    assert make("SafeMAToy2Cost-v0", cost_limit=[4.0, 1.0]).cost_limit == (4.0, 1.0)
    assert make("SafeMAToy2Cost-v0", cost_limit=3).cost_limit == (3.0, 3.0)
    assert env.observation_spaces["agent_0"].shape == (5,) and env.state_space.shape == (5,)
    check_multiagent_environments(SafeMAToy2Cost())


def test_two_cost_variant_costs_by_hand():
    env = SafeMAToy2Cost()
    env.reset(seed=0)
    # a = (0, 1) -> s = (0.5, 1), m = 0.75: cost 0 = ((0.75 - 0.5) / 0.5)^2 = 0.25, cost 1 = ((0.5 - 0.3) / 0.7)^2.
    obs, rew, _, _, info = env.step(_act(env, [0.0, 1.0]))
    assert rew["agent_0"] == 0.75
    for aid in env.possible_agents:
        cost = info[aid]["cost"]
        assert cost.dtype == np.float32 and cost.shape == (2,)
        np.testing.assert_allclose(cost, [0.25, (0.2 / 0.7) ** 2], rtol=1e-6)
    np.testing.assert_allclose(obs["agent_1"], [1 / 25, 1.0, 0.5, 0.25 / 25, (0.2 / 0.7) ** 2 / 25], rtol=1e-5)
    np.testing.assert_allclose(env.state(), [1 / 25, 0.5, 1.0, 0.25 / 25, (0.2 / 0.7) ** 2 / 25], rtol=1e-5)
    # The lead standing still and the other at full speed: m = 0.5, no cost at all.
    _, _, _, _, info = env.step(_act(env, [-1.0, 1.0]))
    np.testing.assert_array_equal(info["agent_0"]["cost"], [0.0, 0.0])


def test_two_cost_optimum_needs_an_asymmetric_team():
    opt = SafeMAToy2Cost().analytic_optimum()
    assert opt == analytic_optimum_two_costs()
    assert opt["lead_max_speed"] == pytest.approx(0.3 + 0.7 * math.sqrt(0.1))
    assert opt["safe_speed"] == pytest.approx(0.5 + 0.5 * math.sqrt(0.2))  # cost 0 binds, as in the one-cost task
    assert opt["symmetric_lead_cost"] == pytest.approx(9.1552408, abs=1e-6)  # 25 · ((0.7236 − 0.3) / 0.7)² > 2.5
    # Both limits met exactly: the lead at s_0^max, the other agent making up the team speed.
    env = SafeMAToy2Cost()
    lead, other = opt["lead_max_speed"], 2 * opt["safe_speed"] - opt["lead_max_speed"]
    env.reset(seed=0)
    totals = np.zeros(2)
    reward = 0.0
    for _ in range(25):
        _, rew, _, _, info = env.step(_act(env, [2 * lead - 1, 2 * other - 1]))
        totals += info["agent_0"]["cost"]
        reward += rew["agent_0"]
    np.testing.assert_allclose(totals, [5.0, 2.5], rtol=1e-5)
    assert reward == pytest.approx(opt["safe_reward"], rel=1e-6)
    # A lead budget so small that the others cannot make up for it: m* = (s_0^max + 1) / 2 < the team's bound.
    small = analytic_optimum_two_costs(cost_limits=(5.0, 0.0))
    assert small["safe_speed"] == pytest.approx((0.3 + 1.0) / 2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"cost_limit": [1.0]}, "cost_limit"),
        ({"cost_limit": [1.0, -1.0]}, "cost_limit\\[1\\]"),
        ({"cost_limit": "5"}, "cost_limit"),
        ({"lead_speed_threshold": 1.0}, "lead_speed_threshold"),
    ],
)
def test_two_cost_invalid_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SafeMAToy2Cost(**kwargs)
