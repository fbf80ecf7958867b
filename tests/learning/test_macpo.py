"""MACPO learns a safe policy on SafeMAToy-v0: it ends under the cost limit, close to the analytic best safe return."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rllib_safe.algorithms.macpo import MACPOConfig
from rllib_safe.envs.toy import TOY_COST_LIMIT, analytic_optimum

pytestmark = [pytest.mark.learning, pytest.mark.usefixtures("ray_local")]

ITERATIONS = 20


@pytest.fixture
def one_torch_thread():
    """The Learner runs in this process; on a loaded 2-core machine two torch threads make it ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_macpo_ends_under_the_cost_limit_near_the_best_safe_return(one_torch_thread):
    config = (
        MACPOConfig()
        .environment("SafeMAToy-v0")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .training(
            train_batch_size_per_learner=1000,
            critic_lr=3e-3,
            actor_hiddens=[32, 32],
            critic_hiddens=[32, 32],
            # Try the full CPO step first (OmniSafe CPO starts its line search at 1.0); the paper's 0.3 needs ~40
            # iterations here instead of ~15.
            fraction_coef=1.0,
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    rewards, costs, accepted = [], [], 0
    try:
        for _ in range(ITERATIONS):
            result = algo.train()
            rewards.append(result["env_runners"]["episode_return_mean"] / 2)  # team reward, counted once per agent
            costs.append(result["learners"]["agent_0"]["episode_cost"])
            for aid in ("agent_0", "agent_1"):
                if result["learners"][aid]["line_search_accepted"]:
                    accepted += 1
                    assert 0.0 < result["learners"][aid]["kl_after_step"] <= config.kl_threshold
    finally:
        algo.stop()
    best = analytic_optimum()["safe_reward"]  # 18.09 at cost 5
    print(
        f"MACPO on SafeMAToy-v0: rewards {np.round(rewards, 2)}, costs {np.round(costs, 2)}, best safe {best:.2f}, "
        f"{accepted} of {2 * ITERATIONS} steps accepted"
    )
    assert accepted >= ITERATIONS  # most agent steps were real steps (each one within the trust region)
    assert costs[0] < TOY_COST_LIMIT and rewards[0] < 0.75 * best  # starts slow and safe
    final_cost, final_reward = float(np.mean(costs[-5:])), float(np.mean(rewards[-5:]))
    # Ends under the limit (up to the sampling noise of 40 episodes per iteration) and close to the safe optimum.
    assert final_cost <= TOY_COST_LIMIT * 1.02
    assert max(costs[-5:]) <= TOY_COST_LIMIT * 1.1
    assert final_reward >= 0.9 * best
