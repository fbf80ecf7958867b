"""Learning on SafeMAToy-v0 (fixed seeds): MAPPO-Lagrangian brings the episode cost under its limit, MAPPO does not.

The toy's unconstrained optimum earns team reward 25 per agent at episode cost 25; the best policy with episode cost
<= 5 earns 18.09 per agent (``rllib_safe.envs.toy.analytic_optimum``). ``episode_return_mean`` sums both agents.
The learned policies are judged by a deterministic evaluation (the mean action, as deployed), 20 episodes.
"""

import pytest

from rllib_safe.algorithms.registry import get_config
from rllib_safe.envs.toy import analytic_optimum
from tests.helpers import TOY_LEARNING, train_and_evaluate_on_toy

pytestmark = [pytest.mark.learning, pytest.mark.usefixtures("ray_local")]

COST_LIMIT = 5.0
BEST_SAFE_RETURN = 2 * analytic_optimum()["safe_reward"]  # two agents share the team reward
#: Fraction of the best safe return that MAPPO-Lagrangian must reach (measured: about 0.95).
MIN_RETURN_FRACTION = 0.8

TOY_TRAINING = dict(
    **TOY_LEARNING,
    entropy_coeff=0.0,
    init_log_std=-0.5,  # σ_0 ≈ 0.61 for every algorithm here (MAPPO-L's own default is SafePO's 0.37, for MuJoCo)
)


def train_and_evaluate(algo: str, iterations: int, **training):
    return train_and_evaluate_on_toy(get_config(algo).training(**TOY_TRAINING, **training), iterations)


def test_mappo_lagrangian_respects_the_limit_and_mappo_does_not():
    history, evaluation = train_and_evaluate(
        "MAPPOLagrangian",
        30,
        cost_limit=COST_LIMIT,
        dual_rule="pid",
        dual_init=0.0,
        dual_options={"kp": 0.05, "ki": 0.01, "kd": 0.0},
    )
    print(
        f"MAPPOLagrangian: max training cost {max(h['episode_cost_mean'] for h in history):.2f}, "
        f"deterministic evaluation cost {evaluation['episode_cost_mean']:.2f} (limit {COST_LIMIT}), "
        f"return {evaluation['episode_return_mean']:.2f} (best safe {BEST_SAFE_RETURN:.2f})"
    )
    # Training started above the limit (the initial policy drifts to speed > 0.5) and the multipliers pulled it back.
    assert max(h["episode_cost_mean"] for h in history) > COST_LIMIT
    assert evaluation["episode_cost_mean"] < COST_LIMIT
    assert evaluation["episode_return_mean"] >= MIN_RETURN_FRACTION * BEST_SAFE_RETURN

    history, evaluation = train_and_evaluate("MAPPO", 20)
    print(
        f"MAPPO: evaluation cost {evaluation['episode_cost_mean']:.2f}, return {evaluation['episode_return_mean']:.2f}"
    )
    assert evaluation["episode_cost_mean"] > 2 * COST_LIMIT
    assert evaluation["episode_return_mean"] > BEST_SAFE_RETURN  # unconstrained: more reward, at a cost
