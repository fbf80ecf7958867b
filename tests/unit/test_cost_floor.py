"""benchmarks/cost_floor.py: episode costs of policies that need no learning, against hand-computed values on the toy
tasks, and the fact about the moving-obstacle task that the README and issue 13's note rest on. No Ray."""

import numpy as np
import pytest

from rllib_safe.envs import make
from tests.helpers import load_benchmark

cf = load_benchmark("cost_floor")


def test_zero_actions_on_the_toy_task_earn_half_speed_at_no_cost():
    """a_i = 0 → speed 0.5 = τ every step: reward 0.5 x 25 steps = 12.5, cost 0 (toy docstring)."""
    env = make("SafeMAToy-v0")
    episode = cf.rollout(env, cf.reference_policy(env, "zero", np.random.default_rng(0)), seed=3)
    assert episode == cf.Episode(team_return=12.5, costs=(0.0,), length=25)


def test_full_speed_costs_one_per_step_and_both_costs_are_summed_separately():
    """a_i = 1 → m = 1: reward 25, cost 25; on the two-cost task, zero actions cost 0 on the team speed cost and
    ((0.5 − 0.3) / 0.7)² x 25 = 2.0408 on the lead's cost (τ_2 = 0.3)."""
    env = make("SafeMAToy-v0")
    full = cf.rollout(env, lambda t: {a: np.ones(1, np.float32) for a in env.possible_agents}, seed=0)
    assert full.team_return == pytest.approx(25.0) and full.costs == pytest.approx((25.0,))
    env2 = make("SafeMAToy2Cost-v0")
    zero = cf.rollout(env2, cf.reference_policy(env2, "zero", np.random.default_rng(0)), seed=0)
    assert zero.costs == pytest.approx((0.0, (0.2 / 0.7) ** 2 * 25))


def test_table_gives_median_min_max_and_the_verdict_per_limit():
    rows = [cf.Row("a", [cf.Episode(1.0, (c, 3.0), 10) for c in (4.0, 9.0, 5.0)])]
    table = cf.markdown("T", (5.0, 2.5), rows)
    assert "| a | 5.0 [4.0, 9.0] | 3.0 [3.0, 3.0] | 1.0 [1.0, 1.0] | 10 [10, 10] | yes | no |" in table
    assert table.splitlines()[2] == "|---" * 7 + "|"


def test_bad_policy_names_and_tasks_are_refused_with_the_known_ones():
    env = make("SafeMAToy-v0")
    with pytest.raises(ValueError, match="known: 'zero', 'uniform'"):
        cf.reference_policy(env, "walk", np.random.default_rng(0))
    with pytest.raises(ValueError, match="σ must be a positive number"):
        cf.reference_policy(env, "gauss:-1", np.random.default_rng(0))
    with pytest.raises(SystemExit):
        cf.parse_args(["--env", "NoSuchTask-v0"])
    with pytest.raises(SystemExit, match="--policies"):
        cf.main(["--env", "SafeMAToy-v0", "--policies", "gauss:x"])


def test_main_prints_one_row_per_policy_and_the_probe(capsys):
    table = cf.main(["--env", "SafeMAToy-v0", "--seeds", "0", "1", "--policies", "zero", "uniform", "--probe", "3"])
    assert table == capsys.readouterr().out.strip()
    assert "| zero | 0.0 [0.0, 0.0] | 12.5 [12.5, 12.5] | 25 [25, 25] | yes |" in table
    assert "probe: best of 3 gaits" in table


def test_a_standing_cheetah_exceeds_the_obstacle_limit_but_an_early_retreat_meets_it():
    """SafeHalfCheetah2x3-v0 (limit 30): the obstacle first drives back towards the start, so a cheetah that does
    nothing pays 33 (seed 0); the limit is reachable only by moving away early. Gait #7 of the probe's seed 0 (the one
    the module docstring's command finds) backs off in its first 60 steps and pays 0."""
    env = make("SafeHalfCheetah2x3-v0")
    zero = cf.rollout(env, cf.reference_policy(env, "zero", np.random.default_rng(0)), seed=0)
    assert zero.costs[0] > env.cost_limit == 30.0
    best = cf.probe(env, 8, 60, seeds=[0], probe_seed=0)
    assert best.episodes[0].costs[0] <= 30.0 and "#7" in best.policy
