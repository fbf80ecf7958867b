"""Learning on SafeMAToy-v0 (fixed seeds): HASAC goes over the cost limit; Constrained-HASAC and WCMASAC end under it;
WCMASAC's episode-cost p90 is not above Constrained-HASAC's at the same limit.

The toy pays the team's mean speed m every step and costs ((m − 0.5)/0.5)² above 0.5 (limit 5 per 25-step episode;
unconstrained optimum: cost 25). Its reward and cost depend only on the current action, so a short discount
(γ = γ_c = 0.5) loses nothing and keeps the critics quick to learn. It also puts the toy in the regime where WCMASAC's
budget rule (WCSAC: d (1 − γ_c^T)/((1 − γ_c) T), see ``wcmasac.py``) is accurate: the episode (T = 25) is much longer
than the discount horizon 1/(1 − γ_c) = 2. After training, 100 episodes of the deterministic policy (the mean action,
as HARL and the paper evaluate) judge the limit, and 100 episodes of the stochastic policy (the one being trained)
give the spread whose tail CVaR looks at.
"""

import numpy as np
import pytest
import torch

from rllib_safe.algorithms.registry import get_config
from rllib_safe.callbacks import episode_costs
from rllib_safe.envs.toy import TOY_COST_LIMIT

pytestmark = [pytest.mark.learning, pytest.mark.usefixtures("ray_local")]

ITERATIONS = 20

TOY_TRAINING = dict(
    cost_limit=TOY_COST_LIMIT,
    gamma=0.5,
    cost_gamma=0.5,
    n_step=1,
    num_steps_sampled_before_learning_starts=500,
    env_steps_per_iteration=250,
    updates_per_env_step=0.15,
    train_batch_size_per_learner=64,
    replay_buffer_config={"capacity": 20_000},
    actor_hiddens=[32, 32],
    critic_hiddens=[32, 32],
    actor_lr=3e-3,
    critic_lr=3e-3,
    cost_critic_lr=3e-3,
    auto_alpha=True,
    initial_alpha=0.05,
    target_entropy=0.3,  # a policy that stays stochastic: its cost has a spread for CVaR to look at
    dual_rule="projected_gradient",  # plain dual ascent for both (no momentum to overshoot with)
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The Learner runs in this process; on a loaded 2-core machine two torch threads make it many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_and_sample(algo: str, iterations: int, **training) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Trains on the toy (seed 0); returns the training history and the episode costs of 100 episodes of the
    trained policy, acting deterministically (the mean action, as deployed and as HARL evaluates) and stochastically.
    """
    settings = {**TOY_TRAINING, **training}
    if algo == "WCMASAC":
        settings.update(attention_dim=16, attention_heads=2, num_quantiles=16, cost_critic_hiddens=[32])
    config = (
        get_config(algo)
        .environment("SafeMAToy-v0")
        .env_runners(num_env_runners=0, batch_mode="complete_episodes")
        .training(**settings)
        .debugging(seed=0)
    )
    a = config.build_algo()
    try:
        history = [a.train() for _ in range(iterations)]
        costs = [
            np.array([episode_costs(e)["agent_0"][0] for e in a.env_runner.sample(num_episodes=100, explore=explore)])
            for explore in (False, True)
        ]
    finally:
        a.stop()
    return history, *costs


def test_hasac_goes_over_the_limit_and_the_constrained_variants_end_under_it():
    runs = {
        "HASAC": train_and_sample("HASAC", 5),
        # Constrained-HASAC: one step per iteration on the episode cost (scale ~ d = 5); WCMASAC: one step per
        # gradient update (37 or 38 per iteration) on CVaR on the critic's scale (budget b = 0.4 here), omega = 0.1.
        "ConstrainedHASAC": train_and_sample("ConstrainedHASAC", ITERATIONS, dual_lr=0.02),
        "WCMASAC": train_and_sample("WCMASAC", ITERATIONS, dual_lr=0.05, risk_level=0.1),
    }
    mean = {name: run[1].mean() for name, run in runs.items()}  # deterministic policy
    p90 = {name: np.percentile(run[2], 90) for name, run in runs.items()}  # stochastic policy: the spread
    for name, run in runs.items():
        print(
            f"{name}: deterministic cost {mean[name]:.2f}; stochastic cost {run[2].mean():.2f}, p90 {p90[name]:.2f} "
            f"(limit {TOY_COST_LIMIT})"
        )
    assert mean["HASAC"] > 2 * TOY_COST_LIMIT
    assert mean["ConstrainedHASAC"] < TOY_COST_LIMIT
    assert mean["WCMASAC"] < TOY_COST_LIMIT
    assert p90["WCMASAC"] <= p90["ConstrainedHASAC"]
    # WCMASAC's multipliers were needed: they rose above zero at some point of training.
    history = runs["WCMASAC"][0]
    assert max(h["learners"]["agent_0"]["lagrange_multiplier"] for h in history if "learners" in h) > 0.05
