"""MACPO with a real local Ray: one iteration on the Safe MAMuJoCo velocity tasks logs a valid CPO step, the
infeasible branch recovers, and two Learners (DDP) take the same step."""

from __future__ import annotations

import numpy as np
import pytest

from rllib_safe.algorithms.macpo import MACPOConfig

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ("agent_0", "agent_1")
STEP_KEYS = {
    "cpo_case",
    "line_search_accepted",
    "line_search_backtracks",
    "step_size",
    "kl_after_step",
    "surrogate_improvement",
    "cost_surrogate_change",
    "constraint_value",
    "cpo_lambda",
    "cpo_nu",
    "direction_norm",
}


def tiny_config(env: str = "Safety2x4AntVelocity-v0", **training) -> MACPOConfig:
    return (
        MACPOConfig()
        .environment(env, env_config={"max_episode_steps": 50})
        # The fused runner: its actions do not depend on PYTHONHASHSEED (RLlib's runner, and the lock-step one that
        # copies it bit for bit, draw the agents' actions in the iteration order of a set), so "seed 3" means the
        # same data in every process.
        .env_runners(
            num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes", env_runner_cls="fused"
        )
        .training(
            train_batch_size_per_learner=200,
            minibatch_size=100,
            num_epochs=1,
            actor_hiddens=[32, 32],
            critic_hiddens=[32, 32],
            **training,
        )
        .debugging(seed=3)
    )


def actor_weights(algo, aid: str) -> dict[str, np.ndarray]:
    module = algo.learner_group._learner.module[aid].unwrapped()
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    "accepted, options",
    [
        (True, {}),  # the defaults: both agents' first trial passes (seed 3)
        # A trust region of 50 with one trial of the full step: the step overshoots and is refused (seed 3).
        (False, {"kl_threshold": 50.0, "fraction_coef": 1.0, "line_search_steps": 1, "max_step_norm": None}),
    ],
)
def test_one_iteration_on_ant_logs_a_valid_cpo_step(accepted, options):
    config = tiny_config(**options)
    algo = config.build_algo()
    try:
        before = {aid: actor_weights(algo, aid) for aid in AGENTS}
        result = algo.train()
        after = {aid: actor_weights(algo, aid) for aid in AGENTS}
    finally:
        algo.stop()
    learners = result["learners"]
    for aid in AGENTS:
        stats = learners[aid]
        assert STEP_KEYS <= set(stats), STEP_KEYS - set(stats)
        assert int(stats["cpo_case"]) in range(5)
        # c = (J_c − d)(1 − γ) with the task's limit d = 25.
        assert stats["constraint_value"] == pytest.approx((stats["episode_cost"] - 25.0) * (1 - config.gamma))
        changed = any(not np.array_equal(before[aid][k], after[aid][k]) for k in before[aid])
        assert stats["line_search_accepted"] == float(accepted)
        if accepted:
            assert 0.0 < stats["kl_after_step"] <= config.kl_threshold
            assert stats["step_size"] == pytest.approx(0.3 * 0.5 ** stats["line_search_backtracks"])
            assert stats["cost_surrogate_change"] <= max(-stats["constraint_value"], 0.0) + 1e-9
            assert changed
        else:
            assert stats["line_search_backtracks"] == 1
            assert stats["step_size"] == 0.0 and stats["kl_after_step"] == 0.0
            assert not changed  # parameters restored bit for bit


def test_infeasible_agents_take_recovery_steps():
    # Random play on Swimmer costs (agent_0/agent_1 share the team cost); with d = 0 every agent is infeasible.
    config = tiny_config("Safety2x1SwimmerVelocity-v0", cost_limit=0.0)
    algo = config.build_algo()
    try:
        learners = algo.train()["learners"]
    finally:
        algo.stop()
    for aid in AGENTS:
        stats = learners[aid]
        assert stats["episode_cost"] > 0 and stats["constraint_value"] > 0
        assert int(stats["cpo_case"]) in (0, 1)  # the infeasible cases
        assert stats["line_search_accepted"] == 1.0  # a recovery step was taken (seed 3), not a restore
        assert stats["cost_surrogate_change"] < 0.0 and 0.0 < stats["kl_after_step"] <= config.kl_threshold


def test_two_learners_take_the_same_step():
    config = tiny_config("Safety2x3HalfCheetahVelocity-v0").learners(num_learners=2, num_cpus_per_learner=1)
    algo = config.build_algo()
    try:
        result = algo.train()
        weights = algo.learner_group.foreach_learner(
            lambda learner: {
                aid: {k: v.numpy().copy() for k, v in learner.module[aid].unwrapped().state_dict().items()}
                for aid in AGENTS
            }
        )
    finally:
        algo.stop()
    w0, w1 = [w.get() if hasattr(w, "get") else w for w in weights]
    learners = result["learners"]  # averaged over the two Learners: integers only if both decided alike
    assert all(learners[aid]["cpo_case"] in range(5) for aid in AGENTS)
    assert all(learners[aid]["line_search_accepted"] in (0.0, 1.0) for aid in AGENTS)
    assert any(learners[aid]["line_search_accepted"] == 1.0 for aid in AGENTS)  # a real step, not two restores
    for aid in AGENTS:
        for key in w0[aid]:
            np.testing.assert_array_equal(w0[aid][key], w1[aid][key])
