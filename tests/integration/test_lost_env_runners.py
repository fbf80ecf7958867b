"""Every EnvRunner lost: the iteration waits a bounded time, then stops with a clear error and a checkpoint that
resumes the run (real local Ray; the EnvRunner actor is killed for good with ``ray.kill(..., no_restart=True)``, as
when its node is gone and no other node can host it)."""

import time

import numpy as np
import pytest
import ray
from ray.rllib.algorithms.algorithm import Algorithm

from rllib_safe.algorithms.sequential.lost_env_runners import CHECKPOINT_NAME, EnvRunnersLostError
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_local")

TIMEOUT_S = 4.0


def kill_for_good(env_runner):
    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def actor_weights(algo):
    state = algo.learner_group.get_state()["learner"]["rl_module"]["agent_0"]
    return np.concatenate([np.asarray(v).ravel() for v in state.values()])


def test_all_env_runners_lost_raises_after_the_timeout_with_a_checkpoint_that_resumes(tmp_path):
    config = (
        small_config("MAPPOLagrangian", env="SafeMAToy-v0", batch=100, cost_limit=1.0)
        .env_runners(num_env_runners=1)
        .fault_tolerance(lost_env_runners_timeout_s=TIMEOUT_S, env_runner_health_probe_timeout_s=2)
    )
    algo = config.build_algo()
    try:
        first = algo.train()
        weights, dual = actor_weights(algo), first["learners"]["agent_0"]["lagrange_multiplier"]
        algo.env_runner_group.foreach_env_runner(kill_for_good, local_env_runner=False, timeout_seconds=10)
        start = time.monotonic()
        with pytest.raises(EnvRunnersLostError) as error:
            algo.train()
        waited = time.monotonic() - start
    finally:
        algo.stop()
    message = str(error.value)
    assert f"`lost_env_runners_timeout_s` = {TIMEOUT_S:g}" in message and "0 of 1 EnvRunners are healthy" in message
    assert TIMEOUT_S <= waited < TIMEOUT_S + 30  # bounded: the timeout plus at most one health probe and a retry
    checkpoint = error.value.checkpoint
    assert checkpoint.endswith(CHECKPOINT_NAME) and f"Algorithm.from_checkpoint('{checkpoint}')" in message

    resumed = Algorithm.from_checkpoint(checkpoint)
    try:
        assert resumed.iteration == 1
        np.testing.assert_array_equal(actor_weights(resumed), weights)
        result = resumed.train()  # a fresh EnvRunner samples again
    finally:
        resumed.stop()
    assert result["training_iteration"] == 2 and result["env_runners"]["num_episodes"] > 0
    # The multiplier went on from the checkpointed value (cost above the limit of 1 -> it grows).
    assert result["learners"]["agent_0"]["lagrange_multiplier"] > dual


def test_lost_env_runners_timeout_must_be_positive():
    config = small_config("MAPPO", env="SafeMAToy-v0").fault_tolerance(lost_env_runners_timeout_s=0)
    with pytest.raises(ValueError, match="`lost_env_runners_timeout_s` must be a positive number"):
        config.validate()
