"""The second-order step of CPO/MACPO as small, framework-free torch functions (each testable on its own).

Notation (Achiam et al. 2017, "Constrained Policy Optimization", §6.1 and Appendix 10.2; MACPO, Gu et al. 2023,
Algorithm "MACPO" per agent): for the policy parameters θ of one agent,

* ``g = ∇_θ E[M · r_θ · Â]`` — gradient of the (factor-weighted) reward surrogate, the direction of *ascent*;
* ``b = ∇_θ E[M_c · r_θ · Â_c]`` — gradient of the cost surrogate (``M_c = M`` or ``1``, see the learner);
* ``H`` — the Fisher matrix of the policy, the Hessian of the mean ``KL(π_θk ‖ π_θ)`` at ``θ = θ_k`` (plus damping);
* ``c`` — the constraint value ``J_c(π_k) − d`` (possibly rescaled, see the learner); ``c > 0`` means infeasible;
* ``δ`` — the trust-region radius (``kl_threshold``).

The local problem is ``max_x gᵀx  s.t.  bᵀx + c ≤ 0,  ½ xᵀHx ≤ δ``. With ``q = gᵀH⁻¹g``, ``r = gᵀH⁻¹b``,
``s = bᵀH⁻¹b`` its dual is ``max_{λ,ν≥0}  −(q − 2rν + sν²)/(2λ) + νc − λδ`` and the primal solution is
``x* = (H⁻¹g − ν* H⁻¹b)/λ*``. Note the sign convention: here ``g`` is the *objective* gradient, so the optimal
``ν* = max(0, λ*c + r)/s`` (the MACPO and the original CPO code use the *loss* gradient ``−g`` and hence write
``(λc − r)/s`` with their ``r = −gᵀH⁻¹b``; the two are the same formula).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

#: CPO case codes (the MACPO / CPO reference code's ``optim_case``), plus -1 for "no update".
CASE_SKIPPED = -1  # no episode cost known yet: the agent's policy is left unchanged
CASE_INFEASIBLE_RECOVERY = 0  # c ≥ 0 and the safe half-space misses the trust region: pure cost-reducing step
CASE_INFEASIBLE_INTERSECTS = 1  # c ≥ 0 but part of the trust region is safe: CPO step (λ, ν from the dual)
CASE_FEASIBLE_INTERSECTS = 2  # c < 0 and the constraint boundary cuts the trust region: CPO step (λ, ν)
CASE_FEASIBLE_TRUST_REGION = 3  # c < 0 and the whole trust region is safe: plain TRPO step (ν = 0)
CASE_FEASIBLE_NO_COST_GRADIENT = 4  # c < 0 and b ≈ 0: plain TRPO step (ν = 0)


def flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """All parameters concatenated into one flat vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


@torch.no_grad()
def set_flat_params(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Writes a flat vector back into the parameters in place (exact copy of the values)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n
    if offset != flat.numel():
        raise ValueError(f"Flat vector has {flat.numel()} entries, the parameters {offset}.")


def flat_grad(
    output: torch.Tensor,
    params: Sequence[torch.Tensor],
    *,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """``∇_θ output`` as one flat vector; parameters that ``output`` does not depend on get zeros.

    Args:
        output: A scalar tensor.
        params: The parameters θ.
        retain_graph: Keep the graph for further gradients (default: as ``create_graph``).
        create_graph: Build the graph of the gradient itself (for Hessian-vector products).

    Returns:
        The flat gradient (same order as ``params``).
    """
    grads = torch.autograd.grad(
        output, list(params), retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
    )
    return torch.cat([(torch.zeros_like(p) if gr is None else gr).reshape(-1) for gr, p in zip(grads, params)])


def fisher_vector_product(
    mean_kl: torch.Tensor,
    params: Sequence[torch.Tensor],
    damping: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map ``v ↦ (H + damping·I) v`` with ``H = ∇²_θ mean_kl`` (Pearlmutter's double-backward trick).

    ``mean_kl`` must be ``KL(π_fixed ‖ π_θ)`` averaged over states, where ``π_fixed`` is a detached copy of ``π_θ``:
    its gradient vanishes at θ and its Hessian there is the Fisher information matrix (CPO Eq. 12 / TRPO Appendix C).
    The gradient graph is built once and reused by every call (one extra backward pass per product).

    Args:
        mean_kl: The scalar mean KL, with a graph to ``params``.
        params: The parameters θ.
        damping: Tikhonov damping added after the reduction (the MACPO code adds ``0.1·v``).
        reduce: Optional reduction of ``Hv`` across processes (e.g. an all-reduce sum when ``mean_kl`` holds this
            process' share of a global mean); applied before the damping.

    Returns:
        A function of a flat vector ``v`` returning the flat ``(H + damping·I) v``.
    """
    kl_grad = flat_grad(mean_kl, params, create_graph=True)  # ∇_θ KL, graph kept for the second derivative

    def fvp(v: torch.Tensor) -> torch.Tensor:
        # ∇_θ (∇_θ KL · v) = H v  (v is a constant vector)
        hv = flat_grad((kl_grad * v.detach()).sum(), params, retain_graph=True)
        if reduce is not None:
            hv = reduce(hv)
        return hv + damping * v  # (H + damping·I) v

    return fvp


def conjugate_gradient(
    avp: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, iters: int, residual_tol: float = 1e-10
) -> torch.Tensor:
    """Approximately solves ``A x = rhs`` for a symmetric positive definite ``A`` given by products ``avp(v) = A v``.

    Hestenes–Stiefel conjugate gradient started at ``x₀ = 0`` (so ``r₀ = p₀ = rhs``); stops after ``iters``
    iterations or when ``‖r‖² < residual_tol`` (OpenAI baselines ``cg``, used by TRPO/CPO/MACPO).

    Args:
        avp: Matrix-vector product with ``A``.
        rhs: The right-hand side.
        iters: Maximum number of iterations (``cg_iters``).
        residual_tol: Tolerance on the squared residual norm.

    Returns:
        The approximate solution ``x ≈ A⁻¹ rhs``.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()  # r₀ = rhs − A·0
    p = rhs.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = avp(p)
        alpha = rr / torch.dot(p, ap)  # α_k = rᵀr / pᵀAp
        x = x + alpha * p  # x_{k+1} = x_k + α_k p_k
        r = r - alpha * ap  # r_{k+1} = r_k − α_k A p_k
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p  # p_{k+1} = r_{k+1} + β_k p_k,  β_k = r_{k+1}ᵀr_{k+1} / r_kᵀr_k
        rr = rr_new
    return x


class CPOStep(NamedTuple):
    """The solution of the local CPO problem.

    Attributes:
        direction: The parameter change ``x*`` (add it to θ; the line search scales it).
        case: The case code (see the ``CASE_*`` constants of this module).
        lam: The multiplier λ* of the trust region (0 in the recovery case).
        nu: The multiplier ν* of the cost constraint.
        q: ``gᵀH⁻¹g``. r: ``gᵀH⁻¹b``. s: ``bᵀH⁻¹b``.
    """

    direction: torch.Tensor
    case: int
    lam: float
    nu: float
    q: float
    r: float
    s: float


def cpo_step_direction(
    g: torch.Tensor,
    b: torch.Tensor,
    c: float,
    hinv_g: torch.Tensor,
    hinv_b: torch.Tensor,
    delta: float,
    eps: float = 1e-8,
) -> CPOStep:
    """Solves ``max_x gᵀx  s.t.  bᵀx + c ≤ 0,  ½ xᵀHx ≤ δ`` through its dual (CPO Theorem 1 / Appendix 10.2).

    Cases (the reference code's ``optim_case``):

    * 4: ``c < 0`` and ``bᵀb ≤ eps`` — no cost gradient: TRPO step ``x = √(2δ/q) H⁻¹g``.
    * 3: ``c < 0`` and ``B = 2δ − c²/s < 0`` — the safe boundary misses the trust region: the same TRPO step.
    * 2: ``c < 0`` and ``B ≥ 0``; 1: ``c ≥ 0`` and ``B ≥ 0`` — the boundary cuts the trust region: with
      ``A = q − r²/s`` the dual over λ is the better of
      ``f_a(λ) = −½(A/λ + Bλ) + rc/s`` on the interval where ``ν > 0`` (maximiser ``λ_a = √(A/B)``) and
      ``f_b(λ) = −½(q/λ + 2δλ)`` on the interval where ``ν = 0`` (maximiser ``λ_b = √(q/2δ)``), each projected on
      its interval; the intervals meet at ``κ = −r/c``: ``[0, κ]`` / ``[κ, ∞)`` for ``ν > 0`` / ``ν = 0`` when
      ``c < 0``, swapped when ``c > 0``. Then ``ν = max(0, λc + r)/s`` and ``x = (H⁻¹g − ν H⁻¹b)/λ``.
    * 0: ``c ≥ 0`` and ``B < 0`` — no safe point in the trust region: recovery step ``x = −√(2δ/s) H⁻¹b``
      (the largest pure decrease of the linearised cost inside the trust region).

    Args:
        g: Objective (reward surrogate) gradient.
        b: Cost surrogate gradient.
        c: Constraint value (``> 0``: currently infeasible); exactly 0 is treated as ``eps`` (reference code).
        hinv_g: ``H⁻¹g`` (e.g. from :func:`conjugate_gradient`).
        hinv_b: ``H⁻¹b``.
        delta: Trust-region radius δ (``½ xᵀHx ≤ δ``).
        eps: Numerical floor (the MACPO code's ``EPS``, 1e-8).

    Returns:
        The :class:`CPOStep`.
    """
    q = float(torch.dot(g, hinv_g))  # q = gᵀH⁻¹g
    r = float(torch.dot(g, hinv_b))  # r = gᵀH⁻¹b
    s = float(torch.dot(b, hinv_b))  # s = bᵀH⁻¹b
    c = float(c) if c != 0 else eps
    zero = torch.zeros_like(g)

    if float(torch.dot(b, b)) <= eps and c < 0:
        case = CASE_FEASIBLE_NO_COST_GRADIENT
    else:
        big_b = 2.0 * delta - c * c / (s + eps)  # B = 2δ − c²/s: > 0 iff the safe boundary cuts the trust region
        if c < 0:
            case = CASE_FEASIBLE_TRUST_REGION if big_b < 0 else CASE_FEASIBLE_INTERSECTS
        else:
            case = CASE_INFEASIBLE_INTERSECTS if big_b >= 0 else CASE_INFEASIBLE_RECOVERY

    if case in (CASE_FEASIBLE_TRUST_REGION, CASE_FEASIBLE_NO_COST_GRADIENT):
        lam = math.sqrt(max(q, 0.0) / (2.0 * delta))  # λ = √(q/2δ): ½xᵀHx = δ for x = H⁻¹g/λ
        direction = hinv_g / (lam + eps) if q > 0 else zero
        return CPOStep(direction, case, lam, 0.0, q, r, s)

    if case == CASE_INFEASIBLE_RECOVERY:
        nu = math.sqrt(2.0 * delta / (s + eps))  # ν = √(2δ/s): ½xᵀHx = δ for x = −ν H⁻¹b
        return CPOStep(-nu * hinv_b, case, 0.0, nu, q, r, s)

    big_a = max(q - r * r / (s + eps), 0.0)  # A = q − r²/s ≥ 0 (Cauchy–Schwarz)
    big_b = max(2.0 * delta - c * c / (s + eps), eps)
    kappa = -r / c  # ν = 0 exactly at λ = κ
    if c < 0:
        interval_a, interval_b = (0.0, kappa), (kappa, math.inf)
    else:
        interval_a, interval_b = (kappa, math.inf), (0.0, kappa)

    def project(x: float, interval: tuple[float, float]) -> float | None:
        lo, hi = max(interval[0], 0.0), interval[1]
        return None if lo > hi else min(max(x, lo), hi)

    def f_a(lam: float) -> float:  # dual value where ν > 0
        return -0.5 * (big_a / (lam + eps) + big_b * lam) + r * c / (s + eps)

    def f_b(lam: float) -> float:  # dual value where ν = 0
        return -0.5 * (q / (lam + eps) + 2.0 * delta * lam)

    lam_a = project(math.sqrt(big_a / big_b), interval_a)
    lam_b = project(math.sqrt(max(q, 0.0) / (2.0 * delta)), interval_b)
    value_a = f_a(lam_a) if lam_a is not None else -math.inf
    value_b = f_b(lam_b) if lam_b is not None else -math.inf
    lam = lam_a if value_a >= value_b else lam_b
    nu = max(0.0, lam * c + r) / (s + eps)  # ν* = max(0, λ*c + r)/s
    direction = (hinv_g - nu * hinv_b) / (lam + eps)  # x* = (H⁻¹g − ν* H⁻¹b)/λ*
    return CPOStep(direction, case, lam, nu, q, r, s)


def accept_step(
    case: int,
    kl: float,
    kl_threshold: float,
    surrogate_improvement: float,
    cost_change: float,
    constraint_value: float,
) -> bool:
    """The line-search acceptance rule of MACPO (``r_macpo.py``; SafePO ``macpo.py``).

    A trial point is accepted iff every quantity is finite and

    * ``KL(π_k ‖ π_trial) ≤ δ`` (trust region);
    * for the feasible cases (``case ≥ 2``) the reward surrogate improved (``surrogate_improvement > 0``);
      the infeasible cases 0/1 do not ask for it (recovery first);
    * the cost surrogate grew by at most the slack ``max(−c, 0)`` (the linearised constraint
      ``Δcost + c ≤ 0`` when feasible, "no increase" when infeasible);
    * for the pure recovery step (case 0) the cost surrogate strictly decreased.

    Args:
        case: The CPO case code.
        kl: Mean KL after the trial step.
        kl_threshold: δ.
        surrogate_improvement: Reward surrogate after minus before.
        cost_change: Cost surrogate after minus before.
        constraint_value: c.

    Returns:
        Whether to accept the trial point.
    """
    if not all(math.isfinite(v) for v in (kl, surrogate_improvement, cost_change)):
        return False
    if kl > kl_threshold:
        return False
    if case >= CASE_FEASIBLE_INTERSECTS and surrogate_improvement <= 0:
        return False
    if cost_change > max(-constraint_value, 0.0):
        return False
    return not (case == CASE_INFEASIBLE_RECOVERY and cost_change >= 0)


class LineSearchResult(NamedTuple):
    """Outcome of :func:`backtracking_line_search`.

    Attributes:
        accepted: Whether a trial point was accepted (else the parameters were restored).
        step_size: The accepted multiple of the direction (0 when rejected).
        backtracks: Number of rejected trials before the accepted one (``steps`` when none was accepted).
        stats: What ``evaluate`` returned for the accepted trial (for the last trial when rejected).
    """

    accepted: bool
    step_size: float
    backtracks: int
    stats: dict


def backtracking_line_search(
    params: Sequence[torch.Tensor],
    direction: torch.Tensor,
    evaluate: Callable[[], tuple[bool, dict]],
    *,
    first_step: float,
    shrink: float,
    steps: int,
) -> LineSearchResult:
    """Tries ``θ₀ + first_step·shrink^i·direction`` for ``i = 0 … steps−1`` and keeps the first accepted point.

    MACPO: ``new_params = params − fraction_coef · fraction^i · x`` with ``fraction_coef`` the first step and
    ``fraction`` (``line_search_fraction``) the shrink factor. When no trial is accepted the parameters are
    restored bit for bit from the saved copy of θ₀.

    Args:
        params: The parameters θ (modified in place).
        direction: The flat step direction.
        evaluate: Called with the trial parameters in place; returns ``(accept, stats)``.
        first_step: Multiple of ``direction`` tried first.
        shrink: Backtracking factor in (0, 1).
        steps: Number of trials.

    Returns:
        The :class:`LineSearchResult`.
    """
    theta0 = flat_params(params)
    stats: dict = {}
    for i in range(steps):
        step_size = first_step * shrink**i
        set_flat_params(params, theta0 + step_size * direction)
        accepted, stats = evaluate()
        if accepted:
            return LineSearchResult(True, step_size, i, stats)
    set_flat_params(params, theta0)
    return LineSearchResult(False, 0.0, steps, stats)


__all__ = [
    "CASE_FEASIBLE_INTERSECTS",
    "CASE_FEASIBLE_NO_COST_GRADIENT",
    "CASE_FEASIBLE_TRUST_REGION",
    "CASE_INFEASIBLE_INTERSECTS",
    "CASE_INFEASIBLE_RECOVERY",
    "CASE_SKIPPED",
    "CPOStep",
    "LineSearchResult",
    "accept_step",
    "backtracking_line_search",
    "conjugate_gradient",
    "cpo_step_direction",
    "fisher_vector_product",
    "flat_grad",
    "flat_params",
    "set_flat_params",
]
