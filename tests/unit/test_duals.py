"""Unit tests of rllib_safe.duals against hand-computed numbers."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest

from rllib_safe.duals import (
    RULES,
    AdamDual,
    DualVariable,
    PIDDual,
    ProjectedGradientDual,
    dual_from_state_dict,
    make_dual,
)

# ----------------------------------------------------------------------------------------------------------------
# Projected gradient (MAFOCOPS Eq. 10).
# ----------------------------------------------------------------------------------------------------------------


def test_projected_gradient_steps_and_both_bounds():
    dual = make_dual("projected_gradient", lr=0.1, init=0.5, upper=2.0)
    assert isinstance(dual, ProjectedGradientDual)
    assert dual.value == 0.5
    # 0.5 + 0.1 * (30 - 25) = 1.0
    assert dual.update(30.0, 25.0) == pytest.approx(1.0, abs=1e-15)
    # 1.0 + 0.1 * (40 - 25) = 2.5 -> projected onto upper = 2.0
    assert dual.update(40.0, 25.0) == 2.0
    # 2.0 + 0.1 * (0 - 25) = -0.5 -> projected onto lower = 0.0
    assert dual.update(0.0, 25.0) == 0.0
    # 0.0 + 0.1 * (27 - 25) = 0.2
    assert dual.update(27.0, 25.0) == pytest.approx(0.2, abs=1e-15)
    assert dual.num_steps == 4


def test_projected_gradient_is_eq10_with_nu_max():
    # Eq. 10: nu <- proj_[0, nu_max](nu - alpha * (b - J)); alpha = 0.01, nu_max = 1.3, b = 25, J = 60.
    dual = make_dual("projected_gradient", lr=0.01, init=1.0, upper=1.3)
    assert dual.update(60.0, 25.0) == pytest.approx(1.3)  # 1.0 - 0.01 * (25 - 60) = 1.35 -> 1.3
    assert dual.update(5.0, 25.0) == pytest.approx(1.1)  # 1.3 - 0.01 * (25 - 5) = 1.1


def test_lower_bound_above_zero():
    dual = make_dual("projected_gradient", lr=1.0, init=0.5, lower=0.25, upper=1.0)
    assert dual.update(0.0, 10.0) == 0.25


@pytest.mark.parametrize("rule", ["projected_gradient", "adam", "pid"])
def test_monotone_up_above_limit_down_below(rule):
    kwargs = {"kd": 0.0} if rule == "pid" else {}
    up = make_dual(rule, init=0.5, **kwargs)
    down = make_dual(rule, init=0.5, **kwargs)
    assert up.update(30.0, 25.0) > 0.5
    assert down.update(20.0, 25.0) < 0.5


def test_projected_gradient_unchanged_at_limit():
    dual = make_dual("projected_gradient", lr=0.3, init=0.7)
    assert dual.update(25.0, 25.0) == 0.7
    assert dual.update(np.float32(3.0), 3) == 0.7


def test_zero_lr_freezes():
    dual = make_dual("projected_gradient", lr=0.0, init=0.4)
    assert dual.update(100.0, 1.0) == 0.4


# ----------------------------------------------------------------------------------------------------------------
# Adam (OmniSafe / SafePO Lagrange).
# ----------------------------------------------------------------------------------------------------------------


def test_adam_three_steps_by_hand():
    dual = make_dual("adam", lr=0.1, betas=(0.9, 0.999), eps=1e-8, init=1.0)
    assert isinstance(dual, AdamDual)
    # Step 1: g = -(27 - 25) = -2; m = 0.1 * -2 = -0.2; v = 0.001 * 4 = 0.004;
    # m_hat = -0.2 / 0.1 = -2; v_hat = 0.004 / 0.001 = 4; lambda = 1 - 0.1 * (-2) / (2 + 1e-8) = 1.0999999995.
    assert dual.update(27.0, 25.0) == pytest.approx(1.0999999995, abs=1e-12)
    # Step 2: g = +1; m = 0.9 * -0.2 + 0.1 * 1 = -0.08; v = 0.999 * 0.004 + 0.001 * 1 = 0.004996;
    # m_hat = -0.08 / 0.19 = -0.4210526316; v_hat = 0.004996 / 0.001999 = 2.4992496248, sqrt 1.5809015228;
    # lambda = 1.0999999995 + 0.1 * 0.4210526316 / 1.5809015228 = 1.1266337033. Momentum still pushes up.
    assert dual.update(24.0, 25.0) == pytest.approx(1.1266337033, abs=1e-10)
    # Step 3: g = +10; m = 0.9 * -0.08 + 0.1 * 10 = 0.928; v = 0.999 * 0.004996 + 0.001 * 100 = 0.104991004;
    # m_hat = 0.928 / 0.271 = 3.4243542435; v_hat = 0.104991004 / 0.002997001 = 35.0320216777, sqrt 5.9187854901;
    # lambda = 1.1266337033 - 0.1 * 3.4243542435 / 5.9187854901 = 1.0687780124.
    assert dual.update(15.0, 25.0) == pytest.approx(1.0687780124, abs=1e-9)
    state = dual.state_dict()
    assert state["exp_avg"] == pytest.approx([0.928], abs=1e-15)
    assert state["exp_avg_sq"] == pytest.approx([0.104991004], abs=1e-15)
    assert state["num_steps"] == 3


@pytest.mark.parametrize("upper", [math.inf, 0.2])
def test_adam_matches_torch_adam_with_a_clamp(upper):
    """The OmniSafe Lagrange module, run with torch: Adam on the loss −λ·(J_c − d), then λ clamped to [0, upper]."""
    import torch

    costs = [30.0, 31.0, 20.0, 26.0, 10.0, 40.0, 24.0, 25.0]
    dual = make_dual("adam", lr=0.035, init=0.001, upper=upper)
    lam = torch.nn.Parameter(torch.tensor(0.001, dtype=torch.float64))
    optimizer = torch.optim.Adam([lam], lr=0.035)
    for cost in costs:
        optimizer.zero_grad()
        loss = -lam * (cost - 25.0)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            lam.clamp_(0.0, upper)
        assert dual.update(cost, 25.0) == pytest.approx(lam.item(), abs=1e-12)


def test_adam_projects_and_keeps_moments():
    dual = make_dual("adam", lr=1.0, init=0.0, upper=0.3)
    assert dual.update(30.0, 25.0) == 0.3  # 0 + 1.0 (a first Adam step is lr * sign) -> 0.3
    assert dual.update(0.0, 25.0) == 0.0  # 0.3 - 1.0 * 10.79 / 18.03 < 0 -> lower bound
    assert dual.state_dict()["exp_avg"][0] != 0.0


def test_adam_defaults_are_omnisafe():
    dual = make_dual("adam")
    assert dual.lr == 0.035 and dual.betas == (0.9, 0.999) and dual.eps == 1e-8 and dual.value == 0.001


# ----------------------------------------------------------------------------------------------------------------
# PID Lagrangian (Stooke et al. 2020).
# ----------------------------------------------------------------------------------------------------------------


def test_pid_four_steps_by_hand():
    dual = make_dual("pid", kp=0.5, ki=0.1, kd=0.2)
    assert isinstance(dual, PIDDual)
    # e = 4, I = 0.4, D = max(0, 14 - 0) = 14: 0.5 * 4 + 0.4 + 0.2 * 14 = 5.2
    assert dual.update(14.0, 10.0) == pytest.approx(5.2, abs=1e-12)
    # e = 2, I = 0.6, D = max(0, 12 - 14) = 0: 1.0 + 0.6 = 1.6
    assert dual.update(12.0, 10.0) == pytest.approx(1.6, abs=1e-12)
    # e = -5, I = 0.1, D = 0: -2.5 + 0.1 = -2.4 -> 0
    assert dual.update(5.0, 10.0) == 0.0
    # e = -1, I = max(0, 0.1 - 0.1) = 0, D = 9 - 5 = 4: -0.5 + 0 + 0.8 = 0.3
    assert dual.update(9.0, 10.0) == pytest.approx(0.3, abs=1e-12)
    state = dual.state_dict()
    assert state["integral"] == pytest.approx([0.0], abs=1e-15)
    assert state["d_cost"] == [9.0]


def test_pid_integral_never_negative():
    dual = make_dual("pid", kp=0.0, ki=1.0, kd=0.0)
    dual.update(0.0, 10.0)  # I = max(0, -10) = 0
    assert dual.state_dict()["integral"] == [0.0]
    assert dual.update(13.0, 10.0) == 3.0  # I = 3, not -7


def test_pid_ema_two_steps_by_hand():
    dual = make_dual("pid", kp=1.0, ki=0.0, kd=1.0, p_ema_alpha=0.5, d_ema_alpha=0.5, init=0.2)
    assert dual.value == 0.2
    # e = 4: e_hat = 0.5 * 0 + 0.5 * 4 = 2; J_hat = 0.5 * 14 = 7; D = 7; I = 0.2: 2 + 0.2 + 7 = 9.2
    assert dual.update(14.0, 10.0) == pytest.approx(9.2, abs=1e-12)
    # e = 2: e_hat = 0.5 * 2 + 0.5 * 2 = 2; J_hat = 0.5 * 7 + 0.5 * 12 = 9.5; D = 2.5: 2 + 0.2 + 2.5 = 4.7
    assert dual.update(12.0, 10.0) == pytest.approx(4.7, abs=1e-12)


def test_pid_upper_bound():
    dual = make_dual("pid", kp=1.0, ki=0.0, kd=0.0, upper=2.0)
    assert dual.update(50.0, 10.0) == 2.0


# ----------------------------------------------------------------------------------------------------------------
# Vectors (m = 2).
# ----------------------------------------------------------------------------------------------------------------


def test_vector_projected_gradient_with_broadcast_limit():
    dual = make_dual("projected_gradient", lr=0.5, init=[0.0, 1.0], upper=3.0, num_costs=2)
    out = dual.update([12.0, 8.0], 10.0)  # [0 + 1, 1 - 1]
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, [1.0, 0.0])
    out = dual.update(np.array([12.0, 8.0]), [5.0, 10.0])  # [1 + 3.5 -> 3, 0 - 1 -> 0]
    np.testing.assert_allclose(out, [3.0, 0.0])
    np.testing.assert_allclose(dual.values, [3.0, 0.0])
    out[0] = 99.0  # value is a copy
    assert dual.value[0] == 3.0


@pytest.mark.parametrize("rule", ["adam", "pid"])
def test_vector_matches_independent_scalars(rule):
    costs = [(30.0, 1.0), (20.0, 4.0), (27.0, 2.5), (10.0, 0.5)]
    limits = [25.0, 2.0]
    vec = make_dual(rule, num_costs=2, init=[0.3, 0.6])
    first = make_dual(rule, init=0.3)
    second = make_dual(rule, init=0.6)
    for c in costs:
        out = vec.update(list(c), limits)
        assert out[0] == first.update(c[0], limits[0])
        assert out[1] == second.update(c[1], limits[1])


def test_scalar_value_and_values():
    dual = make_dual("pid")
    assert isinstance(dual.value, float)
    assert dual.values.shape == (1,)
    assert dual.update(np.array([3.0]), np.array([1.0])) == pytest.approx(0.1 * 2 + 0.01 * 2 + 0.01 * 3)


# ----------------------------------------------------------------------------------------------------------------
# State round trip.
# ----------------------------------------------------------------------------------------------------------------

ROUND_TRIP_CASES = [
    ("projected_gradient", {"lr": 0.07, "upper": 2.0}),
    ("adam", {"lr": 0.05, "upper": 5.0}),
    ("pid", {"kp": 0.3, "ki": 0.05, "kd": 0.1, "p_ema_alpha": 0.9, "d_ema_alpha": 0.95}),
    ("adam", {"num_costs": 2, "init": [0.1, 0.2]}),
    ("pid", {"num_costs": 2}),
]


@pytest.mark.parametrize(("rule", "kwargs"), ROUND_TRIP_CASES)
def test_state_round_trip_exact(rule, kwargs):
    m = kwargs.get("num_costs", 1)
    rng = np.random.default_rng(0)
    dual = make_dual(rule, **kwargs)
    for _ in range(5):
        dual.update(rng.uniform(0, 50, size=m), 25.0)
    state = dual.state_dict()
    # Plain Python values: survives JSON and pickle unchanged.
    state = json.loads(json.dumps(state))
    assert state == dual.state_dict()
    assert pickle.loads(pickle.dumps(state)) == state

    fresh = make_dual(rule, **kwargs)
    fresh.load_state_dict(copy.deepcopy(state))
    rebuilt = dual_from_state_dict(state)
    assert fresh.num_steps == rebuilt.num_steps == dual.num_steps == 5
    for _ in range(3):
        cost = rng.uniform(0, 50, size=m)
        expected = dual.update(cost, 25.0)
        np.testing.assert_array_equal(fresh.update(cost, 25.0), expected)
        np.testing.assert_array_equal(rebuilt.update(cost, 25.0), expected)
    assert fresh.state_dict() == dual.state_dict() == rebuilt.state_dict()


def test_state_dict_is_a_snapshot():
    dual = make_dual("adam")
    state = dual.state_dict()
    dual.update(40.0, 25.0)
    assert state["num_steps"] == 0 and state["exp_avg"] == [0.0]


# ----------------------------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------------------------


def test_bad_rule_names_allowed_values():
    with pytest.raises(ValueError, match=r"rule must be one of \['adam', 'macpo', 'pid', 'projected_gradient'\]"):
        make_dual("sgd")
    assert sorted(RULES) == ["adam", "macpo", "pid", "projected_gradient"]


def test_unknown_argument():
    with pytest.raises(ValueError, match=r"Unknown argument\(s\) \['kp'\].*allowed: \['lr', 'init'"):
        make_dual("projected_gradient", kp=1.0)


@pytest.mark.parametrize(
    ("rule", "kwargs", "name"),
    [
        ("projected_gradient", {"lr": -0.1}, "lr"),
        ("projected_gradient", {"lr": float("nan")}, "lr"),
        ("adam", {"lr": -1.0}, "lr"),
        ("adam", {"lr": math.inf}, "lr"),
        ("adam", {"betas": (0.9, 1.0)}, r"betas\[1\]"),
        ("adam", {"betas": (-0.1, 0.9)}, r"betas\[0\]"),
        ("adam", {"betas": 0.9}, "betas"),
        ("adam", {"eps": 0.0}, "eps"),
        ("pid", {"kp": -1.0}, "kp"),
        ("pid", {"ki": -1.0}, "ki"),
        ("pid", {"kd": float("nan")}, "kd"),
        ("pid", {"p_ema_alpha": 1.0}, "p_ema_alpha"),
        ("pid", {"d_ema_alpha": -0.5}, "d_ema_alpha"),
        ("projected_gradient", {"init": -0.1}, "init"),
        ("projected_gradient", {"init": 3.0, "upper": 2.0}, "init"),
        ("adam", {"init": [0.1, 5.0], "upper": 2.0, "num_costs": 2}, "init"),
        ("adam", {"init": float("nan")}, "init"),
        ("pid", {"init": [0.1, 0.2, 0.3], "num_costs": 2}, "init"),
        ("projected_gradient", {"lower": 1.0, "upper": 0.5, "init": 1.0}, "upper must be >= lower"),
        ("projected_gradient", {"lower": -1.0}, "lower"),
        ("projected_gradient", {"upper": float("nan")}, "upper"),
        ("projected_gradient", {"num_costs": 0}, "num_costs"),
        ("projected_gradient", {"num_costs": 1.5}, "num_costs"),
        ("projected_gradient", {"lr": "0.1"}, "lr"),
    ],
)
def test_bad_numbers(rule, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_dual(rule, **kwargs)


@pytest.mark.parametrize(
    ("cost", "limit", "name"),
    [
        (float("nan"), 25.0, "episode_cost"),
        (math.inf, 25.0, "episode_cost"),
        ([1.0, 2.0], 25.0, "episode_cost"),
        ("high", 25.0, "episode_cost"),
        (30.0, float("nan"), "cost_limit"),
        (30.0, [25.0, 20.0], "cost_limit"),
    ],
)
def test_bad_cost_or_limit(cost, limit, name):
    dual = make_dual("projected_gradient", lr=0.1, init=0.5)
    with pytest.raises(ValueError, match=name):
        dual.update(cost, limit)
    assert dual.value == 0.5 and dual.num_steps == 0  # nothing changed


def test_vector_dual_rejects_scalar_cost():
    dual = make_dual("adam", num_costs=2)
    with pytest.raises(ValueError, match="episode_cost must be a length-2 vector"):
        dual.update(30.0, 25.0)
    with pytest.raises(ValueError, match="episode_cost"):
        dual.update([30.0, float("nan")], 25.0)


def test_load_state_dict_errors():
    adam = make_dual("adam")
    with pytest.raises(ValueError, match="rule must be 'adam'"):
        adam.load_state_dict(make_dual("pid").state_dict())
    with pytest.raises(ValueError, match="num_costs must be 1"):
        adam.load_state_dict(make_dual("adam", num_costs=2).state_dict())
    state = adam.state_dict()
    del state["exp_avg"]
    with pytest.raises(ValueError, match="exp_avg"):
        adam.load_state_dict(state)
    state = make_dual("pid").state_dict()
    state["integral"] = [-1.0]
    with pytest.raises(ValueError, match="integral"):
        make_dual("pid").load_state_dict(state)
    with pytest.raises(ValueError, match="'rule' and 'config'"):
        dual_from_state_dict({"value": [0.0]})


def test_base_class_is_abstract():
    dual = DualVariable()
    with pytest.raises(NotImplementedError):
        dual.update(1.0, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# The MACPO code's MAPPO-Lagrangian rule (one step per minibatch).
# ----------------------------------------------------------------------------------------------------------------


def test_macpo_rule_by_hand():
    dual = make_dual("macpo", lr=0.1, constraint_scale=0.01, init=0.78)
    assert dual.per_minibatch and not make_dual("adam").per_minibatch
    # λ = 0.78 + 0.1 * ((30 - 25) * 0.01 + (-0.2)) = 0.78 + 0.1 * (0.05 - 0.2) = 0.765
    assert dual.update(30.0, 25.0, cost_surrogate=-0.2) == pytest.approx(0.765, abs=1e-15)
    # λ = 0.765 + 0.1 * ((20 - 25) * 0.01 + 0.35) = 0.765 + 0.1 * 0.3 = 0.795
    assert dual.update(20.0, 25.0, cost_surrogate=0.35) == pytest.approx(0.795, abs=1e-15)
    # λ = 0.795 + 0.1 * (0.0 - 9.0) = -0.105 -> ReLU -> 0
    assert dual.update(25.0, 25.0, cost_surrogate=-9.0) == 0.0
    assert dual.num_steps == 3


def test_macpo_rule_per_cost_index_and_defaults():
    dual = make_dual("macpo", num_costs=2)
    assert dual.config() == {
        "lr": 1e-7,
        "constraint_scale": 0.01,
        "init": [0.78, 0.78],
        "lower": 0.0,
        "upper": math.inf,
        "num_costs": 2,
    }
    dual = make_dual("macpo", lr=1.0, constraint_scale=0.5, init=[0.0, 1.0], num_costs=2)
    # index 0: 0 + (4 - 2) * 0.5 + 0.5 = 1.5; index 1: 1 + (1 - 3) * 0.5 - 0.25 = -0.25 -> 0
    np.testing.assert_allclose(dual.update([4.0, 1.0], [2.0, 3.0], cost_surrogate=[0.5, -0.25]), [1.5, 0.0])
    with pytest.raises(ValueError, match="cost_surrogate"):
        dual.update([4.0, 1.0], 2.0, cost_surrogate=0.5)  # one surrogate per cost index
    with pytest.raises(ValueError, match="constraint_scale"):
        make_dual("macpo", constraint_scale=0.0)
    restored = dual_from_state_dict(dual.state_dict())
    assert restored.config() == dual.config() and restored.values.tolist() == [1.5, 0.0]
