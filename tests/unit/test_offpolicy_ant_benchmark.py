"""Small pieces of benchmarks/offpolicy_ant.py: reading RLlib's item series and choosing the binding limit. No Ray."""

import numpy as np

from tests.helpers import load_benchmark

bench = load_benchmark("offpolicy_ant")


def test_an_iteration_without_ended_episodes_adds_no_item():
    """RLlib returns NaN for an empty item series (the crash of a 300k run); a list stays a list."""
    assert bench._items(np.nan) == [] and bench._items(None) == []
    assert bench._items([3.0, 4.5]) == [3.0, 4.5]


def test_binding_limit_is_half_of_hasacs_cost_or_the_tasks_limit_without_cost(capsys):
    assert bench.binding_limit(30.0, "Safety2x4AntVelocity-v0") == 15.0
    assert bench.binding_limit(0.0, "Safety2x4AntVelocity-v0") == 25.0  # SafePO's velocity limit
    assert "no limit binds" in capsys.readouterr().out
