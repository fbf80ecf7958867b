"""MAFOCOPS without a Ray runtime: the loss gradient is Eq. 11 (hand-derived), the indicator, ν (Eq. 10), the KL
direction of the early stop, the config fields, their aliases, the Table 5 presets and the validation errors."""

import math

import numpy as np
import pytest
import torch
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian

from rllib_safe.algorithms.mafocops import PRESETS, MAFOCOPSConfig
from rllib_safe.algorithms.mafocops.torch.mafocops_torch_learner import MAFOCOPSTorchLearner, focops_loss
from rllib_safe.duals import ProjectedGradientDual, make_dual

D = torch.float64  # the hand-derived gradients are compared in double precision

# ----------------------------------------------------------------------------------------------------------------
# Eq. 11 by hand on a linear-mean diagonal Gaussian policy.
# ----------------------------------------------------------------------------------------------------------------
N, OBS, ACT, M_COSTS = 7, 3, 2, 2
LAMBDA, DELTA = 1.7, 0.05


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=D)

    s = randn(N, OBS)
    old = {"W": 0.5 * randn(ACT, OBS), "b": randn(ACT), "ls": torch.tensor([-0.3, 0.2], dtype=D)}
    new = {
        "W": old["W"] + 0.15 * randn(ACT, OBS),
        "b": old["b"] + 0.1 * randn(ACT),
        "ls": old["ls"] + torch.tensor([0.05, -0.08], dtype=D),
    }
    a = s @ old["W"].T + old["b"] + old["ls"].exp() * randn(N, ACT)  # actions sampled from the old policy
    data = {
        "s": s,
        "a": a,
        "A": randn(N),  # joint reward advantage
        "M": 0.8 + 0.4 * torch.rand(N, generator=g, dtype=D),  # HAPPO factor
        "C": randn(N, M_COSTS),  # the agent's cost advantages
        "nu": torch.tensor([0.7, 0.3], dtype=D),
        "mask": torch.tensor([True, True, True, True, True, True, False]),
    }
    return old, new, data


def _mean(p, s):
    return s @ p["W"].T + p["b"]


def _logp(p, s, a):
    mu, std = _mean(p, s), p["ls"].exp()
    return (-((a - mu) ** 2) / (2 * std**2) - p["ls"] - 0.5 * math.log(2 * math.pi)).sum(-1)


def _kl(p, q, s):
    """KL(N(p) ‖ N(q)) per state, summed over action dimensions (closed form)."""
    mp, mq, sp, sq = _mean(p, s), _mean(q, s), p["ls"].exp(), q["ls"].exp()
    return (q["ls"] - p["ls"] + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5).sum(-1)


def _autograd(old, new, data):
    params = {k: v.clone().requires_grad_(True) for k, v in new.items()}
    loss, terms = focops_loss(
        state_kl=_kl(params, old, data["s"]),
        ratio=torch.exp(_logp(params, data["s"], data["a"]) - _logp(old, data["s"], data["a"])),
        reward_advantage=data["A"],
        happo_factor=data["M"],
        cost_advantages=data["C"],
        nu=data["nu"],
        focops_lambda=LAMBDA,
        kl_threshold=DELTA,
        mask=data["mask"],
    )
    grads = torch.autograd.grad(loss, [params["W"], params["b"], params["ls"]])
    return loss, terms, grads


def _eq11_by_hand(old, new, data):
    """(1/N) Σ_j [∇KL(π_θ‖π_θk)[s_j] − ∇π_θ(a_j|s_j) / (λ π_θk(a_j|s_j)) · (M_j Â_j − Σ_k ν_k Â_c,jk)] · I(s_j)."""
    s, a = data["s"], data["a"]
    mu, mu0 = _mean(new, s), _mean(old, s)
    var, var0 = (2 * new["ls"]).exp(), (2 * old["ls"]).exp()
    # ∇ of the KL term with respect to the mean and the log-std, per state and action dimension.
    dkl_dmu = (mu - mu0) / var0
    dkl_dls = -1.0 + var / var0
    # ∇π_θ / π_θk = ratio · ∇ log π_θ.
    ratio = torch.exp(_logp(new, s, a) - _logp(old, s, a))
    dlogp_dmu = (a - mu) / var
    dlogp_dls = (a - mu) ** 2 / var - 1.0
    weight = (data["M"] * data["A"] - (data["C"] * data["nu"]).sum(-1)) / LAMBDA
    kl = _kl(new, old, s)
    indicator = ((kl <= DELTA) & data["mask"]).to(kl.dtype)
    n_valid = data["mask"].sum()
    g_mu = (dkl_dmu - (ratio * weight)[:, None] * dlogp_dmu) * indicator[:, None] / n_valid
    g_ls = (dkl_dls - (ratio * weight)[:, None] * dlogp_dls) * indicator[:, None] / n_valid
    return g_mu.T @ s, g_mu.sum(0), g_ls.sum(0), indicator


def test_autograd_gradient_of_the_loss_is_eq11_by_hand():
    old, new, data = _problem()
    _, terms, (g_w, g_b, g_ls) = _autograd(old, new, data)
    h_w, h_b, h_ls, indicator = _eq11_by_hand(old, new, data)
    # The case is non-trivial: some valid states are rejected, some accepted, ratios differ from 1.
    valid = data["mask"]
    assert 0 < indicator[valid].sum() < valid.sum()
    torch.testing.assert_close(g_w, h_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_b, h_b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_ls, h_ls, rtol=1e-10, atol=1e-12)
    assert float(terms["accept_fraction"]) == pytest.approx(float(indicator[valid].mean()))


def test_at_the_old_policy_the_gradient_is_the_weighted_score_function():
    """At θ = θ_k every state is accepted, ∇KL = 0 and ratio = 1: ∇L = −(1/(λN)) Σ_j ∇log π(a_j|s_j)·(η̂_j − νÂ_c,j)."""
    old, _, data = _problem(seed=1)
    data["mask"] = torch.ones(N, dtype=torch.bool)
    _, terms, grads = _autograd(old, old, data)
    h_w, h_b, h_ls, indicator = _eq11_by_hand(old, old, data)
    assert bool(indicator.all()) and float(terms["accept_fraction"]) == 1.0
    for got, want in zip(grads, (h_w, h_b, h_ls)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_happo_factor_multiplies_the_reward_advantage_only():
    """Changing M by a factor on a row with Â = 0 changes nothing; the cost advantage is never multiplied by M."""
    old, new, data = _problem(seed=2)
    data["A"] = torch.zeros(N, dtype=D)
    base = _autograd(old, new, data)[2]
    data["M"] = data["M"] * 3.0
    for got, want in zip(_autograd(old, new, data)[2], base):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_indicator_drops_exactly_the_states_whose_kl_exceeds_delta():
    delta = 0.0125
    state_kl = torch.tensor([0.0, 0.001, 0.0125, 0.01251, 0.3, 2.0], requires_grad=True)
    ratio = torch.tensor([1.0, 0.9, 1.1, 1.2, 0.5, 2.0], requires_grad=True)
    advantage = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 4.0])
    loss, terms = focops_loss(
        state_kl=state_kl,
        ratio=ratio,
        reward_advantage=advantage,
        happo_factor=torch.ones(6),
        cost_advantages=torch.zeros(6, 1),
        nu=torch.zeros(1),
        focops_lambda=2.0,
        kl_threshold=delta,
    )
    d_kl, d_ratio = torch.autograd.grad(loss, [state_kl, ratio])
    accepted = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # KL == δ is accepted, KL > δ rejected
    torch.testing.assert_close(d_kl, accepted / 6)
    torch.testing.assert_close(d_ratio, -accepted * advantage / (2.0 * 6))
    assert float(terms["accept_fraction"]) == 0.5
    # The loss value is the mean of the accepted per-state terms over all six states.
    per_state = state_kl - ratio * advantage / 2.0
    assert float(loss.detach()) == pytest.approx(float((per_state * accepted).sum().detach() / 6))


def test_several_cost_indices_are_penalised_by_their_own_nu():
    cost = torch.tensor([[1.0, 10.0], [2.0, -5.0]])
    args = dict(
        state_kl=torch.zeros(2),
        reward_advantage=torch.zeros(2),
        happo_factor=torch.ones(2),
        cost_advantages=cost,
        focops_lambda=1.0,
        kl_threshold=1.0,
    )
    ratio = torch.ones(2, requires_grad=True)
    loss, _ = focops_loss(ratio=ratio, nu=torch.tensor([0.5, 0.1]), **args)
    (d_ratio,) = torch.autograd.grad(loss, ratio)
    # d/d ratio_j of −(1/N)·ratio_j·(0 − Σ_k ν_k C_jk) = (1/N) Σ_k ν_k C_jk
    torch.testing.assert_close(d_ratio, torch.tensor([0.5 * 1 + 0.1 * 10, 0.5 * 2 + 0.1 * -5]) / 2)


# ----------------------------------------------------------------------------------------------------------------
# The early-stop statistic is KL(π_θ ‖ π_θk) (Sec. 4.3), not the base's KL(π_θk ‖ π_θ).
# ----------------------------------------------------------------------------------------------------------------
class _LearnerStub:
    """Just the methods of MAFOCOPSTorchLearner that compute the KL, on fixed old/new distributions."""

    state_kl = MAFOCOPSTorchLearner.state_kl
    mean_kl = MAFOCOPSTorchLearner.mean_kl

    def __init__(self, old, new):
        self.old, self.new = old, new

    def _dists(self, module_id, batch):
        return self.old, self.new


def test_early_stop_statistic_is_kl_of_new_from_old():
    old_inputs = torch.tensor([[0.0, 0.0, -0.5, 0.1], [1.0, -1.0, 0.0, 0.0], [0.5, 0.5, 0.2, -0.2]])
    new_inputs = torch.tensor([[0.3, -0.2, 0.1, -0.4], [1.5, -1.0, 0.5, -0.3], [9.0, 9.0, 2.0, 2.0]])
    old, new = TorchDiagGaussian.from_logits(old_inputs), TorchDiagGaussian.from_logits(new_inputs)
    batch = {"loss_mask": torch.tensor([True, True, False])}
    stub = _LearnerStub(old, new)
    forward = torch.distributions.kl_divergence(
        torch.distributions.Normal(new_inputs[:, :2], new_inputs[:, 2:].exp()),
        torch.distributions.Normal(old_inputs[:, :2], old_inputs[:, 2:].exp()),
    ).sum(-1)
    torch.testing.assert_close(stub.state_kl("a", batch), forward)
    torch.testing.assert_close(stub.mean_kl("a", batch), forward[:2].mean())
    reverse = old.kl(new)[:2].mean()
    assert abs(float(reverse) - float(forward[:2].mean())) > 1e-3  # the two directions really differ here


# ----------------------------------------------------------------------------------------------------------------
# ν: Eq. 10 through the config's dual fields.
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nu_max", [1.3, float("inf")])
def test_nu_up_above_the_limit_down_below_and_inside_its_bounds(nu_max):
    config = MAFOCOPSConfig().training(nu_lr=0.02, nu_init=0.4, nu_max=nu_max)
    config._validate_safe_fields()
    nu = make_dual(config.dual_rule, **config.dual_kwargs(num_costs=1))
    assert isinstance(nu, ProjectedGradientDual) and nu.value == 0.4 and nu.upper == nu_max
    rng = np.random.default_rng(0)
    limit = 5.0
    for cost in rng.uniform(0.0, 200.0, size=300):
        before = nu.value
        after = nu.update(cost, limit)
        expected = min(max(before - 0.02 * (limit - cost), 0.0), nu_max)  # Eq. 10 with α = 0.02
        assert after == pytest.approx(expected, abs=1e-12)
        assert 0.0 <= after <= nu_max
        if cost > limit:
            assert after > before or after == nu_max
        elif cost < limit:
            assert after < before or after == 0.0
    if math.isfinite(nu_max):
        assert nu.update(1e6, limit) == nu_max
    assert nu.update(0.0, 1e6) == 0.0


def test_nu_per_cost_index():
    config = MAFOCOPSConfig().training(nu_lr=0.1, nu_init=0.5, nu_max=1.0)
    nu = make_dual(config.dual_rule, **config.dual_kwargs(num_costs=2))
    np.testing.assert_allclose(nu.update([8.0, 2.0], [5.0, 5.0]), [0.8, 0.2])


# ----------------------------------------------------------------------------------------------------------------
# Config: defaults (Table 5), presets, aliases, validation.
# ----------------------------------------------------------------------------------------------------------------
def test_defaults_are_table5_safe_mamujoco_and_preset_switches_to_safe_maig():
    c = MAFOCOPSConfig()
    assert (c.kl_threshold, c.focops_lambda, c.nu_max, c.nu_lr, c.minibatch_size, c.num_epochs) == (
        0.0125,
        2.2,
        1.3,
        0.00005,
        256,
        5,
    )
    assert (c.nu_init, c.critic_loss, c.dual_rule, c.entropy_coeff, c.sequential) == (
        0.0,
        "mse",
        "projected_gradient",
        0.0,
        True,
    )
    c.preset("safe_maig")
    assert (c.kl_threshold, c.focops_lambda, c.nu_max, c.nu_lr, c.minibatch_size, c.num_epochs) == (
        0.01,
        2.0,
        1.4,
        0.001,
        8192,
        3,
    )
    assert c.preset("safe_mamujoco").kl_threshold == PRESETS["safe_mamujoco"]["kl_threshold"]
    with pytest.raises(ValueError, match="`preset`.*safe_maig"):
        c.preset("isaac")


def test_base_names_are_aliases_of_the_mafocops_fields():
    c = MAFOCOPSConfig().training(target_kl=0.03, dual_lr=0.2, dual_init=0.1, dual_max=3.0)
    assert (c.kl_threshold, c.nu_lr, c.nu_init, c.nu_max) == (0.03, 0.2, 0.1, 3.0)
    c.training(kl_threshold=0.04, nu_lr=0.3, nu_init=0.2, nu_max=float("inf"))
    assert (c.target_kl, c.dual_lr, c.dual_init, c.dual_max) == (0.04, 0.3, 0.2, float("inf"))
    d = c.to_dict()
    assert d["kl_threshold"] == 0.04 and "target_kl" not in d and "dual_lr" not in d
    restored = MAFOCOPSConfig.from_dict(d)
    assert (restored.kl_threshold, restored.nu_lr, restored.nu_max, restored.focops_lambda) == (
        0.04,
        0.3,
        float("inf"),
        2.2,
    )
    assert MAFOCOPSConfig.from_state(c.get_state()).target_kl == 0.04


@pytest.mark.parametrize(
    "field, bad",
    [
        ("focops_lambda", 0.0),
        ("focops_lambda", -2.2),
        ("focops_lambda", float("nan")),
        ("focops_lambda", float("inf")),
        ("focops_lambda", "2.2"),
        ("kl_threshold", 0.0),
        ("kl_threshold", None),
        ("kl_threshold", -0.01),
        ("nu_lr", -1e-5),
        ("nu_lr", float("inf")),
        ("nu_init", -0.1),
        ("nu_init", True),
        ("nu_max", float("nan")),
        ("nu_max", -1.0),
        ("nu_schedule", "per_epoch"),
        ("nu_schedule", None),
    ],
)
def test_bad_values_raise_naming_the_field(field, bad):
    c = MAFOCOPSConfig().training(**{field: bad})
    with pytest.raises(ValueError, match=f"`{field}`"):
        c._validate_safe_fields()


def test_nu_max_below_nu_init_names_nu_max():
    c = MAFOCOPSConfig().training(nu_init=0.5, nu_max=0.4)
    with pytest.raises(ValueError, match="`nu_max`"):
        c._validate_safe_fields()


def test_full_validate_runs_and_checks_base_fields_too():
    c = MAFOCOPSConfig().environment("SafeMAToy-v0").training(nu_max=float("inf"), train_batch_size_per_learner=1000)
    c.validate()
    with pytest.raises(ValueError, match="`focops_lambda`"):
        MAFOCOPSConfig().environment("SafeMAToy-v0").training(focops_lambda=0).validate()
    with pytest.raises(ValueError, match="`critic_loss`"):
        MAFOCOPSConfig().environment("SafeMAToy-v0").training(critic_loss="l1").validate()


def test_macpo_code_base_preset_is_its_learning_rates_and_initial_sigma():
    c = MAFOCOPSConfig().preset("macpo_code_base")
    assert (c.lr, c.critic_lr) == (9e-5, 5e-3)
    # MACPO's σ_0 = std_y_coef · sigmoid(log_std / std_x_coef) with log_std = std_x_coef = 1, std_y_coef = 0.5.
    assert math.exp(c.init_log_std) == pytest.approx(0.5 * 0.7310585786, abs=1e-10)
    assert c.kl_threshold == 0.0125  # Table 5's column stays
    assert (MAFOCOPSConfig().lr, MAFOCOPSConfig().critic_lr, MAFOCOPSConfig().init_log_std) == (5e-4, 5e-4, -0.5)


def test_nu_steps_per_minibatch_by_default_and_the_literal_reading_is_selectable():
    """MAFOCOPS' ν steps after every minibatch (issue 13); ``nu_schedule="per_iteration"`` is Algorithm 1 line 9
    read literally. The base (MAPPO-L and the others) keeps one step per iteration; a wrong value names the field."""
    from rllib_safe.algorithms.mappo_lagrangian import MAPPOLagrangianConfig

    c = MAFOCOPSConfig()
    assert c.nu_schedule == c.dual_schedule == "per_minibatch"
    c.training(nu_schedule="per_iteration")
    assert c.dual_schedule == "per_iteration"
    assert MAFOCOPSConfig.from_dict(c.to_dict()).nu_schedule == "per_iteration"
    assert MAFOCOPSConfig.from_state(c.get_state()).nu_schedule == "per_iteration"
    assert MAPPOLagrangianConfig().dual_schedule == "per_iteration"
    with pytest.raises(ValueError, match="`dual_schedule`.*per_minibatch"):
        MAPPOLagrangianConfig().training(dual_schedule="sometimes")._validate_safe_fields()
