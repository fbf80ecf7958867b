"""MAFOCOPS learns a safe policy on SafeMAToy-v0: the cost rises above the limit, ν reacts, the cost ends under it.

The untrained policy is already safe (cost ≈ 2 < 5) and earns ≈ 12.5 per agent; the best safe policy earns 18.09
(:func:`rllib_safe.envs.toy.analytic_optimum`). The test needs the constraint to become active (ν > 0 at some
iteration), then three consecutive iterations under the limit with a return well above the untrained policy's.
"""

import numpy as np
import pytest

from rllib_safe.algorithms.mafocops import MAFOCOPSConfig
from rllib_safe.envs.toy import analytic_optimum
from tests.helpers import TOY_LEARNING

pytestmark = [pytest.mark.learning, pytest.mark.usefixtures("ray_local")]

COST_LIMIT = 5.0
MAX_ITERATIONS = 25


def test_mafocops_ends_under_the_cost_limit_on_the_toy_task():
    config = (
        MAFOCOPSConfig()
        .environment("SafeMAToy-v0")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .training(
            **TOY_LEARNING,
            cost_limit=COST_LIMIT,
            # Table 5 values except: a larger ν step (the toy's episodes are 25 steps, 40 per iteration) and λ = 1.
            # ν steps after each of the ≈ 20 minibatch steps per agent and iteration (the default nu_schedule):
            # 0.005 per step is about 0.1 per iteration.
            focops_lambda=1.0,
            nu_lr=0.005,
            reseed_each_iteration=True,
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    costs, returns, nus = [], [], []
    try:
        for _ in range(MAX_ITERATIONS):
            result = algo.train()
            costs.append(result["env_runners"]["episode_cost_mean"])
            returns.append(result["env_runners"]["episode_return_mean"] / 2)  # the team reward, counted per agent
            nus.append(result["learners"]["agent_0"]["nu"])
            if max(nus) > 0 and len(costs) >= 3 and max(costs[-3:]) < COST_LIMIT:
                break
    finally:
        algo.stop()
    history = " | ".join(
        f"{i + 1}: C {c:.2f} R {r:.2f} nu {n:.2f}" for i, (c, r, n) in enumerate(zip(costs, returns, nus))
    )
    print(f"MAFOCOPS on SafeMAToy-v0 (safe optimum R {analytic_optimum()['safe_reward']:.2f}): {history}")
    assert max(costs) > COST_LIMIT and max(nus) > 0, history  # the constraint was active at some point
    assert max(costs[-3:]) < COST_LIMIT, history
    assert np.mean(returns[-3:]) > 14.0, history  # untrained ≈ 12.5, best safe 18.09
