"""Unit tests of MACPO's second-order step (pure torch, no Ray runtime) and of its config validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rllib_safe.algorithms.macpo import MACPOConfig
from rllib_safe.algorithms.macpo.torch.cpo import (
    CASE_FEASIBLE_INTERSECTS,
    CASE_FEASIBLE_NO_COST_GRADIENT,
    CASE_FEASIBLE_TRUST_REGION,
    CASE_INFEASIBLE_INTERSECTS,
    CASE_INFEASIBLE_RECOVERY,
    accept_step,
    backtracking_line_search,
    conjugate_gradient,
    cpo_step_direction,
    fisher_vector_product,
    flat_params,
    set_flat_params,
)
from rllib_safe.envs.toy import SafeMAToy

# ---------------------------------------------------------------------------------------------------------------
# Fisher-vector products.
# ---------------------------------------------------------------------------------------------------------------


class TinyGaussianPolicy(nn.Module):
    """Diagonal Gaussian policy: a tanh MLP mean and a free log-std (the layout of SafeActorTorchRLModule)."""

    def __init__(self, obs_dim: int = 3, act_dim: int = 2, hidden: int = 4) -> None:
        super().__init__()
        self.pi = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, act_dim))
        self.log_std = nn.Parameter(torch.full((act_dim,), -0.3))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.pi(obs)
        return mean, self.log_std.expand_as(mean)


def gaussian_kl(mu0, log_std0, mu1, log_std1) -> torch.Tensor:
    """KL(N(mu0, s0²) ‖ N(mu1, s1²)) summed over action dims (closed form, written out)."""
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mu0 - mu1) ** 2) / (2 * var1) - 0.5).sum(-1)


def _unflatten(policy: nn.Module, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    for name, p in policy.named_parameters():
        out[name] = theta[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return out


def test_fisher_vector_product_equals_explicit_kl_hessian_times_vector():
    torch.manual_seed(0)
    policy = TinyGaussianPolicy().double()
    obs = torch.randn(20, 3, dtype=torch.float64)
    params = list(policy.parameters())
    theta0 = flat_params(params)
    with torch.no_grad():
        mu_fixed, log_std_fixed = policy(obs)

    def mean_kl_of(theta: torch.Tensor) -> torch.Tensor:
        mu, log_std = torch.func.functional_call(policy, _unflatten(policy, theta), (obs,))
        return gaussian_kl(mu_fixed, log_std_fixed, mu, log_std).mean()

    hessian = torch.autograd.functional.hessian(mean_kl_of, theta0)
    mu, log_std = policy(obs)
    damping = 0.1
    fvp = fisher_vector_product(gaussian_kl(mu.detach(), log_std.detach(), mu, log_std).mean(), params, damping)
    for _ in range(3):
        v = torch.randn_like(theta0)
        torch.testing.assert_close(fvp(v), hessian @ v + damping * v, rtol=1e-9, atol=1e-10)


def test_fisher_vector_product_equals_analytic_gaussian_fisher_of_a_linear_policy():
    # Mean μ = W o + w₀, log-std ℓ: the Fisher of a diagonal Gaussian is J_μᵀ diag(1/σ²) J_μ ⊕ 2·I for ℓ.
    torch.manual_seed(1)
    obs_dim, act_dim, n = 3, 2, 16
    linear = nn.Linear(obs_dim, act_dim).double()
    log_std = nn.Parameter(torch.tensor([-0.2, 0.4], dtype=torch.float64))
    params = [linear.weight, linear.bias, log_std]
    obs = torch.randn(n, obs_dim, dtype=torch.float64)
    mu = linear(obs)
    ls = log_std.expand_as(mu)
    fvp = fisher_vector_product(gaussian_kl(mu.detach(), ls.detach(), mu, ls).mean(), params, damping=0.0)

    features = torch.cat([obs, torch.ones(n, 1, dtype=torch.float64)], dim=1)  # [o, 1] per row
    second_moment = features.T @ features / n
    inv_var = torch.exp(-2 * log_std.detach())
    size = act_dim * obs_dim + act_dim + act_dim
    fisher = torch.zeros(size, size, dtype=torch.float64)
    for a in range(act_dim):
        # Indices of row a of W and of bias a in the flat vector [W (row-major), bias, log_std].
        idx = [a * obs_dim + j for j in range(obs_dim)] + [act_dim * obs_dim + a]
        fisher[torch.tensor(idx)[:, None], torch.tensor(idx)[None, :]] = inv_var[a] * second_moment
    offset = act_dim * obs_dim + act_dim
    fisher[offset:, offset:] = 2.0 * torch.eye(act_dim, dtype=torch.float64)
    v = torch.randn(size, dtype=torch.float64)
    torch.testing.assert_close(fvp(v), fisher @ v, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Conjugate gradient.
# ---------------------------------------------------------------------------------------------------------------


def test_conjugate_gradient_solves_a_random_spd_system():
    torch.manual_seed(2)
    n = 12
    q = torch.randn(n, n, dtype=torch.float64)
    a = q.T @ q + 0.5 * torch.eye(n, dtype=torch.float64)
    rhs = torch.randn(n, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, rhs, iters=3 * n, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(a, rhs), rtol=1e-8, atol=1e-8)
    # A zero right-hand side needs no iteration and returns zero.
    zero = torch.zeros(n, dtype=torch.float64)
    assert torch.equal(conjugate_gradient(lambda v: a @ v, zero, iters=5), zero)


# ---------------------------------------------------------------------------------------------------------------
# The CPO step against hand-derived closed forms.
# ---------------------------------------------------------------------------------------------------------------

# H = L Lᵀ. With y = Lᵀx the problem  max gᵀx, bᵀx + c ≤ 0, ½xᵀHx ≤ δ  becomes  max g̃ᵀy, b̃ᵀy + c ≤ 0, |y| ≤ R
# with g = L g̃, b = L b̃ and R = √(2δ): a linear objective on the intersection of a disk and a half-plane in 2-D.
L = torch.tensor([[1.5, 0.0], [0.4, 0.7]], dtype=torch.float64)
DELTA = 0.5  # R = 1


def closed_form(g_tilde: tuple[float, float], b_tilde: tuple[float, float], c: float) -> torch.Tensor:
    """The optimum x*, derived geometrically in y-space (no dual variables involved)."""
    g_t, b_t = torch.tensor(g_tilde, dtype=torch.float64), torch.tensor(b_tilde, dtype=torch.float64)
    radius = math.sqrt(2 * DELTA)
    b_norm = float(b_t.norm())
    if b_norm == 0.0 or float(b_t @ (radius * g_t / g_t.norm())) + c <= 0:
        y = radius * g_t / g_t.norm()  # the trust-region (TRPO) point is safe: it is the optimum
    elif c / b_norm > radius:
        y = -radius * b_t / b_norm  # no safe point: the point of the disk with the least b̃ᵀy (recovery)
    else:
        # Safe boundary b̃ᵀy = −c cuts the circle at y = t b̂ ± u b̂⊥, t = −c/|b̃|, u = √(R² − t²);
        # a linear objective on the safe chord is maximal at one of its two ends.
        b_hat = b_t / b_norm
        b_perp = torch.stack([-b_hat[1], b_hat[0]])
        t = -c / b_norm
        u = math.sqrt(radius**2 - t**2)
        ends = [t * b_hat + u * b_perp, t * b_hat - u * b_perp]
        y = max(ends, key=lambda e: float(g_t @ e))
    return torch.linalg.solve(L.T, y)  # x = L⁻ᵀ y


def solve_cpo(g_tilde, b_tilde, c):
    g = L @ torch.tensor(g_tilde, dtype=torch.float64)
    b = L @ torch.tensor(b_tilde, dtype=torch.float64)
    h = L @ L.T
    return cpo_step_direction(g, b, c, torch.linalg.solve(h, g), torch.linalg.solve(h, b), DELTA, eps=1e-12)


@pytest.mark.parametrize(
    "g_tilde, b_tilde, c, case, nu_positive",
    [
        ((1.0, 0.3), (1.0, 1.0), -2.0, CASE_FEASIBLE_TRUST_REGION, False),  # B = 1 − 4/2 < 0
        ((1.0, 0.3), (0.0, 0.0), -1.0, CASE_FEASIBLE_NO_COST_GRADIENT, False),  # b = 0
        ((1.0, 0.0), (1.0, 1.0), -0.1, CASE_FEASIBLE_INTERSECTS, True),  # TRPO point unsafe: both multipliers > 0
        ((1.0, 0.0), (-1.0, 1.0), -0.5, CASE_FEASIBLE_INTERSECTS, False),  # boundary cuts, TRPO point safe: ν = 0
        ((1.0, 0.3), (1.0, 1.0), 0.2, CASE_INFEASIBLE_INTERSECTS, True),  # unsafe now, safe chord in the region
        ((1.0, 0.3), (1.0, 1.0), 2.0, CASE_INFEASIBLE_RECOVERY, True),  # c/|b̃| = 1.41 > R = 1
    ],
)
def test_cpo_step_matches_the_closed_form_in_each_case(g_tilde, b_tilde, c, case, nu_positive):
    step = solve_cpo(g_tilde, b_tilde, c)
    assert step.case == case
    assert (step.nu > 1e-9) == nu_positive
    x = step.direction
    torch.testing.assert_close(x, closed_form(g_tilde, b_tilde, c), rtol=1e-6, atol=1e-6)
    # The optimum lies on the trust-region boundary in every case of these examples.
    assert 0.5 * float(x @ (L @ L.T) @ x) == pytest.approx(DELTA, rel=1e-6)
    if case != CASE_INFEASIBLE_RECOVERY:
        b = L @ torch.tensor(b_tilde, dtype=torch.float64)
        assert float(b @ x) + c <= 1e-6  # the linearised constraint holds after the step


def test_cpo_step_feasible_unconstrained_is_the_trpo_step():
    step = solve_cpo((0.6, -0.8), (1.0, 1.0), -5.0)
    g = L @ torch.tensor([0.6, -0.8], dtype=torch.float64)
    hinv_g = torch.linalg.solve(L @ L.T, g)
    # x = √(2δ / gᵀH⁻¹g) · H⁻¹g and λ = √(gᵀH⁻¹g / 2δ).
    torch.testing.assert_close(step.direction, math.sqrt(2 * DELTA / float(g @ hinv_g)) * hinv_g)
    assert step.lam == pytest.approx(math.sqrt(float(g @ hinv_g) / (2 * DELTA)))
    assert step.nu == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Acceptance rule and line search.
# ---------------------------------------------------------------------------------------------------------------


def test_accept_step_rules():
    ok = dict(kl=0.005, kl_threshold=0.01, surrogate_improvement=0.1, cost_change=0.0, constraint_value=-0.2)
    assert accept_step(CASE_FEASIBLE_TRUST_REGION, **ok)
    assert not accept_step(CASE_FEASIBLE_TRUST_REGION, **{**ok, "kl": 0.02})  # outside the trust region
    assert not accept_step(CASE_FEASIBLE_INTERSECTS, **{**ok, "surrogate_improvement": -0.1})  # no improvement
    assert not accept_step(CASE_FEASIBLE_INTERSECTS, **{**ok, "cost_change": 0.3})  # beyond the slack −c = 0.2
    assert accept_step(CASE_FEASIBLE_INTERSECTS, **{**ok, "cost_change": 0.15})  # within the slack
    # Infeasible: reward may drop, the cost surrogate may not grow; recovery must decrease it.
    bad = {**ok, "constraint_value": 0.5, "surrogate_improvement": -1.0}
    assert accept_step(CASE_INFEASIBLE_INTERSECTS, **{**bad, "cost_change": -0.01})
    assert not accept_step(CASE_INFEASIBLE_INTERSECTS, **{**bad, "cost_change": 0.01})
    assert not accept_step(CASE_INFEASIBLE_RECOVERY, **{**bad, "cost_change": 0.0})
    assert accept_step(CASE_INFEASIBLE_RECOVERY, **{**bad, "cost_change": -0.01})
    assert not accept_step(CASE_FEASIBLE_TRUST_REGION, **{**ok, "kl": float("nan")})


def test_rejected_line_search_leaves_parameters_bit_identical():
    torch.manual_seed(3)
    policy = TinyGaussianPolicy()
    params = list(policy.parameters())
    before = [p.detach().clone() for p in params]
    direction = torch.randn(sum(p.numel() for p in params)) * 0.37
    trials = []

    def evaluate():
        trials.append(flat_params(params))
        return False, {"kl_after_step": 1.0}

    result = backtracking_line_search(params, direction, evaluate, first_step=0.3, shrink=0.5, steps=4)
    assert not result.accepted and result.step_size == 0.0 and result.backtracks == 4
    assert len(trials) == 4 and not torch.equal(trials[0], trials[-1])
    assert all(torch.equal(p.detach(), q) for p, q in zip(params, before))


def test_accepted_line_search_keeps_the_first_accepted_trial():
    torch.manual_seed(4)
    policy = TinyGaussianPolicy()
    params = list(policy.parameters())
    theta0 = flat_params(params)
    direction = torch.randn_like(theta0)
    calls = []

    def evaluate():
        calls.append(1)
        return len(calls) == 3, {"trial": len(calls)}

    result = backtracking_line_search(params, direction, evaluate, first_step=0.3, shrink=0.5, steps=10)
    assert result.accepted and result.backtracks == 2 and result.stats == {"trial": 3}
    assert result.step_size == pytest.approx(0.3 * 0.25)
    torch.testing.assert_close(flat_params(params), theta0 + 0.075 * direction)
    set_flat_params(params, theta0)
    assert torch.equal(flat_params(params), theta0)


# ---------------------------------------------------------------------------------------------------------------
# Config.
# ---------------------------------------------------------------------------------------------------------------


def test_defaults_follow_the_references():
    config = MACPOConfig()
    assert config.kl_threshold == 0.008 and config.fraction_coef == 0.3  # MAFOCOPS paper Table 5
    assert config.line_search_fraction == 0.5 and config.line_search_steps == 10 and config.cg_iters == 10
    assert config.cg_damping == 0.1 and config.max_step_norm == 0.5 and config.cost_surrogate_factor is True
    assert config.effective_constraint_scale() == pytest.approx(1 - config.gamma)
    assert MACPOConfig().training(constraint_scale=0.04).effective_constraint_scale() == 0.04


@pytest.mark.parametrize(
    "field, value",
    [
        ("kl_threshold", 0.0),
        ("kl_threshold", float("inf")),
        ("fraction_coef", 0.0),
        ("fraction_coef", 1.5),
        ("line_search_fraction", 1.0),
        ("line_search_steps", 0),
        ("line_search_steps", 2.5),
        ("cg_iters", True),
        ("cg_damping", -0.1),
        ("max_step_norm", 0.0),
        ("constraint_scale", -1.0),
        ("cost_surrogate_factor", "yes"),
        ("cpo_eps", 0.0),
    ],
)
def test_config_validation_names_the_field(field, value):
    config = MACPOConfig().training(**{field: value})
    with pytest.raises(ValueError, match=f"`{field}`"):
        config._validate_safe_fields()


class TwoCostToy(SafeMAToy):
    """The toy task declaring two cost indices (only probed, never stepped)."""

    def __init__(self, config=None) -> None:
        super().__init__()
        self.num_costs = 2


def test_several_costs_are_rejected():
    config = MACPOConfig().environment(TwoCostToy)
    with pytest.raises(ValueError, match="MACPO supports one cost index"):
        config.validate()
