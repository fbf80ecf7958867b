"""The logged team return is the team reward of each ended episode counted once, never summed over the agents.

Every rllib_safe task gives each agent the team reward, so RLlib's ``episode_return_mean`` (the sum over agents) is
n times the team reward. ``env_runners/episode_return_team`` (:class:`~rllib_safe.callbacks.SafeCostCallback`) must
equal the team reward summed over each ended episode, whatever the EnvRunner (rllib_safe's lock-step runner or
RLlib's ``MultiAgentEnvRunner``, local or remote), also when an episode spans several chunks (``truncate_episodes``)
and in a deterministic evaluation.

The reference is independent of the callback's chunk arithmetic: at the end of every ``sample()`` call it adds up the
rewards of each chunk as it leaves the EnvRunner (before any learner connector touches the chunks), checks that both
agents received the same reward at every step, adds that team reward once per step to its episode's total, and logs
the exact sum and count of the totals of the episodes that ended in the iteration. The windowed metrics that reach
the driver (``episode_return_team`` as RLlib's own ``episode_return_mean``) hold the episodes that ended in the
iteration (fewer than the window of 100 here), so ``episode_return_team`` is the reference's ``sum / count``.
"""

from __future__ import annotations

import numpy as np
import pytest

from rllib_safe.callbacks import SafeCostCallback
from tests.integration.test_cost_measurement import AGENTS
from tests.integration.test_cost_measurement import config as cost_measurement_config

pytestmark = pytest.mark.usefixtures("ray_local")


class TeamRewardReference(SafeCostCallback):
    """Adds the team reward of every sampled step once to its episode's total; logs the totals of ended episodes."""

    def __init__(self) -> None:
        super().__init__()
        self._totals: dict[str, float] = {}

    def on_sample_end(self, *, samples: list, metrics_logger=None, **kwargs) -> None:
        super().on_sample_end(samples=samples, metrics_logger=metrics_logger, **kwargs)
        for chunk in samples:
            rewards = [np.asarray(chunk.agent_episodes[aid].get_rewards(), dtype=np.float64) for aid in AGENTS]
            np.testing.assert_array_equal(rewards[0], rewards[1])  # one team reward, given to each agent
            total = self._totals.pop(chunk.id_, 0.0) + float(rewards[0].sum())
            if chunk.is_done:
                metrics_logger.log_value("reference_team_return_sum", total, reduce="sum")
                metrics_logger.log_value("reference_team_return_count", 1, reduce="sum")
            else:
                self._totals[chunk.id_] = total


def config(num_env_runners: int, env_runner_cls: str):
    """The cost-measurement test's setting (30-step episodes in 20-step chunks) with the reference and an evaluation."""
    return (
        cost_measurement_config(num_env_runners)
        .env_runners(env_runner_cls=env_runner_cls)
        .callbacks(TeamRewardReference)
        .evaluation(
            evaluation_interval=10_000,  # only the explicit evaluate() below
            evaluation_duration=3,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False},
        )
    )


def assert_team_return(env: dict) -> bool:
    """``episode_return_team`` is the reference mean, and half RLlib's sum over the 2 agents; False if none ended."""
    count = env.get("reference_team_return_count")
    if not count or np.isnan(count):  # no episode ended in this iteration
        return False
    assert count < 100  # within the window
    expected = env["reference_team_return_sum"] / count
    assert expected > 0
    assert env["episode_return_team"] == pytest.approx(expected, rel=1e-9)
    assert env["episode_return_mean"] == pytest.approx(2 * expected, rel=1e-6)  # RLlib's: n = 2 times larger
    return True


@pytest.mark.parametrize(
    ("num_env_runners", "env_runner_cls"), [(0, "lockstep"), (2, "lockstep"), (0, "stock")], ids=str
)
def test_team_return_is_the_team_reward_of_the_ended_episodes_counted_once(num_env_runners, env_runner_cls):
    algo = config(num_env_runners, env_runner_cls).build_algo()
    try:
        measured = sum(assert_team_return(algo.train()["env_runners"]) for _ in range(5))
        # Deterministic evaluation (explore=False): whole episodes on the evaluation EnvRunner.
        evaluation = algo.evaluate()["env_runners"]
        assert assert_team_return(evaluation) and evaluation["reference_team_return_count"] >= 3
    finally:
        algo.stop()
    assert measured >= 3  # iterations in which episodes (each of two or three chunks) ended
