"""The measured episode cost J_c is exact in both runner modes, and the duals step once per fresh measurement.

Issue 8, bugs 1 and 2. The reference is independent of :class:`~rllib_safe.callbacks.SafeCostCallback`'s chunk
arithmetic: a callback that adds up every step's cost as the step happens (``on_episode_step``), in the episode's
``custom_data`` (which RLlib carries over when it cuts an episode at an iteration boundary).
"""

from __future__ import annotations

import numpy as np
import pytest

from rllib_safe.algorithms.registry import get_config
from rllib_safe.callbacks import SafeCostCallback

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ("agent_0", "agent_1")


def reference_callback() -> type:
    """A SafeCostCallback that also logs ``reference_cost_sum``/``reference_cost_count`` from per-step costs."""

    class StepByStepCosts(SafeCostCallback):
        def on_episode_step(self, *, episode, **kwargs) -> None:
            totals = episode.custom_data.setdefault("reference_cost", {})
            for aid, sa_episode in episode.agent_episodes.items():
                totals[aid] = totals.get(aid, 0.0) + float(np.sum(sa_episode.get_infos(-1)["cost"]))

        def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
            super().on_episode_end(episode=episode, metrics_logger=metrics_logger, **kwargs)
            for aid, total in episode.custom_data["reference_cost"].items():
                metrics_logger.log_value(("reference_cost_sum", aid), total, reduce="sum")
                metrics_logger.log_value(("reference_cost_count", aid), 1, reduce="sum")

    return StepByStepCosts


def config(num_env_runners: int, **training):
    return (
        get_config("MAPPOLagrangian")
        .environment("SafeMAToy-v0", env_config={"max_episode_steps": 30})
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=1,
            batch_mode="truncate_episodes",
            rollout_fragment_length=20,
        )
        .callbacks(reference_callback())
        .training(
            train_batch_size_per_learner=20 * max(1, num_env_runners),
            minibatch_size=20,
            num_epochs=1,
            actor_hiddens=[8],
            critic_hiddens=[8],
            init_log_std=0.0,  # wide actions: most steps cost something
            **training,
        )
        .debugging(seed=1)
    )


@pytest.mark.parametrize("num_env_runners", [0, 2])
def test_episode_cost_is_the_sum_of_step_costs_of_the_episodes_that_ended(num_env_runners):
    """30-step episodes in 20-step iterations: every episode spans two or three chunks, cut at iteration boundaries.

    With a local EnvRunner (0) the Learner's connector used to append a bootstrap step to the very chunks that the
    EnvRunner keeps for its metrics, so the last cost of every earlier chunk was counted twice.
    """
    algo = config(num_env_runners).build_algo()
    measured = 0
    try:
        for _ in range(8):
            result = algo.train()
            env = result["env_runners"]
            count = env.get("episode_cost_count", {}).get("agent_0", float("nan"))
            if not count > 0:
                continue
            measured += 1
            for aid in AGENTS:
                assert env["episode_cost_count"][aid] == env["reference_cost_count"][aid]
                assert env["episode_cost_sum"][aid] == pytest.approx(env["reference_cost_sum"][aid], rel=1e-9)
                assert env["reference_cost_sum"][aid] > 0
                # J_c, as the Learner used it: the exact mean over the episodes that ended.
                jc = env["reference_cost_sum"][aid] / env["reference_cost_count"][aid]
                assert result["learners"][aid]["episode_cost"] == pytest.approx(jc, rel=1e-9)
    finally:
        algo.stop()
    assert measured >= 3


def test_duals_step_once_per_fresh_measurement():
    """30-step episodes in 20-step iterations: some iterations end no episode. Their dual must not move again on the
    last known cost (that doubled the dual learning rate, and Adam saw the same gradient twice); the logged
    ``episode_cost`` may still show the last known value."""
    lr, limit = 0.05, 0.5
    algo = config(0, dual_rule="projected_gradient", dual_lr=lr, dual_init=0.0, cost_limit=limit).build_algo()
    expected = dict.fromkeys(AGENTS, 0.0)
    fresh, stale = 0, 0
    try:
        for _ in range(8):
            result = algo.train()
            env, learners = result["env_runners"], result["learners"]
            is_fresh = env.get("episode_cost_count", {}).get("agent_0", float("nan")) > 0
            fresh, stale = fresh + is_fresh, stale + (not is_fresh and "episode_cost" in learners["agent_0"])
            for aid in AGENTS:
                if is_fresh:  # Eq. 10 / projected gradient by hand, on this iteration's measurement only
                    jc = env["episode_cost_sum"][aid] / env["episode_cost_count"][aid]
                    expected[aid] = max(0.0, expected[aid] + lr * (jc - limit))
                assert learners[aid].get("lagrange_multiplier", 0.0) == pytest.approx(expected[aid], abs=1e-12)
                assert learners[aid].get("dual_updated", 0) == int(is_fresh)
        steps = {aid: dual.num_steps for aid, dual in algo.learner_group._learner.duals.items()}
    finally:
        algo.stop()
    assert fresh >= 3 and stale >= 2  # both kinds of iteration happened
    assert steps == dict.fromkeys(AGENTS, fresh)
