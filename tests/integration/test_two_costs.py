"""m = 2 constraints end to end on SafeMAToy2Cost-v0 with per-cost limits ``cost_limit=[d_1, d_2]`` (issue 8).

The limits [100, 0] make cost 0 always satisfied and cost 1 always violated: one iteration must move each agent's
two multipliers in opposite directions, each by its own rule on its own measured cost, and every metric must come
per cost index (``episode_cost_sum/agent_i/k``, ``episode_cost_mean_k``, ``episode_cost_k``, ``<dual>_k``).
"""

from __future__ import annotations

import pytest

from rllib_safe.algorithms.macpo import MACPOConfig
from rllib_safe.algorithms.registry import get_config

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ("agent_0", "agent_1")


@pytest.mark.parametrize("algo, dual_name", [("MAPPOLagrangian", "lagrange_multiplier"), ("MAFOCOPS", "nu")])
def test_two_costs_two_multipliers_per_agent(algo, dual_name):
    config = (
        get_config(algo)
        .environment("SafeMAToy2Cost-v0")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2, batch_mode="complete_episodes")
        .training(
            train_batch_size_per_learner=100,
            minibatch_size=50,
            num_epochs=1,
            actor_hiddens=[8],
            critic_hiddens=[8],
            cost_limit=[100.0, 0.0],
            dual_rule="projected_gradient",
            dual_lr=0.1,
            dual_init=0.5,
            dual_max=float("inf"),
            dual_schedule="per_iteration",  # one step per fresh J_c, checked by hand below (MAFOCOPS' default differs)
        )
        .debugging(seed=5)
    )
    assert config.cost_limits()["agent_1"].tolist() == [100.0, 0.0]
    algo_ = config.build_algo()
    try:
        result = algo_.train()
    finally:
        algo_.stop()
    env, learners = result["env_runners"], result["learners"]
    count = env["episode_cost_count"]["agent_0"]
    assert count == env["num_episodes"] >= 4
    assert set(env["episode_cost_sum"]) == {f"{aid}/{k}" for aid in AGENTS for k in (0, 1)}
    for k in (0, 1):
        assert env[f"episode_cost_mean_{k}"] == pytest.approx(env["episode_cost_sum"][f"agent_0/{k}"] / count)
    assert env["episode_cost_mean"] == pytest.approx(env["episode_cost_mean_0"] + env["episode_cost_mean_1"])
    for aid in AGENTS:
        j = [env["episode_cost_sum"][f"{aid}/{k}"] / count for k in (0, 1)]
        assert j[1] > 0  # the lead's speed cost under the initial policy
        assert learners[aid]["episode_cost_0"] == pytest.approx(j[0]) and learners[aid]["episode_cost_1"] == j[1]
        assert learners[aid][f"{dual_name}_0"] == pytest.approx(max(0.0, 0.5 + 0.1 * (j[0] - 100.0)), abs=1e-12)
        assert learners[aid][f"{dual_name}_1"] == pytest.approx(0.5 + 0.1 * (j[1] - 0.0), abs=1e-12)
        assert learners[aid][f"{dual_name}_0"] == 0.0 < 0.5 < learners[aid][f"{dual_name}_1"]


def test_macpo_rejects_two_costs_with_a_clear_error():
    with pytest.raises(ValueError, match=r"MACPO supports one cost index: the task has m = 2 costs"):
        MACPOConfig().environment("SafeMAToy2Cost-v0").validate()
