"""MAPPO-Lagrangian with the MACPO code's λ rule (``dual_rule="macpo"``): one step per minibatch (issue 8, item 6)."""

from __future__ import annotations

import pytest

from rllib_safe.algorithms.mappo_lagrangian import MAPPOLagrangianConfig

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ("agent_0", "agent_1")


def config(**training):
    return (
        MAPPOLagrangianConfig()
        .environment("SafeMAToy-v0")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .training(
            train_batch_size_per_learner=100,
            minibatch_size=50,
            actor_hiddens=[8],
            critic_hiddens=[8],
            cost_limit=5.0,
            dual_rule="macpo",
            dual_init=0.78,
            dual_lr=1.0,
            **training,
        )
        .debugging(seed=2)
    )


def test_macpo_rule_once_per_minibatch_and_by_hand():
    """Two iterations of 3 epochs: 100 env steps in four 25-step episodes + 4 bootstrap rows = 104 rows, 3 minibatches
    of 50 per epoch, one λ step after each. Then one update of one epoch of one minibatch, with J_c given: the ratio is
    1 before the step (the EnvRunner has the Learner's weights) and the standardised Â_c has mean 0 over the valid
    rows, so λ moves by exactly 1.0 · (J_c − 5)(1 − 0.99): +0.07 for J_c = 12, −0.04 for J_c = 1."""
    algo = config(num_epochs=3).build_algo()
    try:
        learner = algo.learner_group._learner
        results = [algo.train()["learners"] for _ in range(2)]
        assert all(dual.num_steps == 2 * 3 * 3 for dual in learner.duals.values())
        assert all(r[aid]["dual_updated"] == 1 for r in results for aid in AGENTS)
        before = {aid: dual.value for aid, dual in learner.duals.items()}
        episodes = algo.env_runner.sample(num_timesteps=100, random_actions=False)
        learner.update(
            episodes=episodes,
            episode_costs={"agent_0": [12.0], "agent_1": [1.0]},
            num_epochs=1,
            minibatch_size=10_000,
        )
        after = {aid: dual.value for aid, dual in learner.duals.items()}
        assert all(dual.num_steps == 2 * 3 * 3 + 1 for dual in learner.duals.values())
    finally:
        algo.stop()
    assert before["agent_0"] > 0.07 and before["agent_1"] > 0.04  # no clipping at 0 below
    assert after["agent_0"] - before["agent_0"] == pytest.approx(0.07, abs=1e-6)  # float32 noise in r − 1: ~1e-7
    assert after["agent_1"] - before["agent_1"] == pytest.approx(-0.04, abs=1e-6)
