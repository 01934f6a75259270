r"""The BROJA solver: a primal-dual interior-point method on the dual program.

This module is the one place where the algorithm lives in readable form; it is
also the ``"torch"`` backend, the project's reference implementation.  The
compiled backends (``csrc/``) run the same iteration joint by joint.

Problem (docs/pid-math.md has the derivations): for a joint P(x1, x2, y) with
pairwise marginals P1(x1, y) and P2(x2, y),

    V(P) = min_{Q ∈ Δ_P} Σ Q log[Q / Q(x1, x2)]                         (primal)
         = max_λ  <λ1, P1> + <λ2, P2>
           s.t.   g_k(λ) = log Σ_y exp(λ1(x1, y) + λ2(x2, y)) ≤ 0      (dual)

for every pair k = (x1, x2).  Cells with P1(x1, y) = 0 or P2(x2, y) = 0 force
Q = 0 and are removed from the sums (masks); a pair with no cell left carries
no constraint.

Iteration.  With multipliers w_k ≥ 0 for the pair constraints and slacks
h_k = -g_k(λ) > 0, the perturbed KKT conditions are

    Σ_k w_k ∇g_k(λ) = (P1, P2),        w_k h_k = μ c_k,

with weights c_k = Q0(x1, x2), the pair masses at the start (a weighted central
path: on skewed joints the masses span hundreds of orders of magnitude).

Q(x1, x2, y) = w_k softmax_y(λ1 + λ2) is the primal point: the first condition
says that its marginals are P1 and P2, and w_k = Q(x1, x2).  A Newton step on
these equations, eliminating Δw, solves

    [Σ_k w_k (diag s_k − s_k s_kᵀ) + (w_k / h_k) s_k s_kᵀ] Δλ = −r_d − Σ_k s_k r'_k / h_k
    Δh_k = −r_p,k − s_kᵀ Δλ_k,        Δw_k = (r'_k + w_k s_kᵀ Δλ_k) / h_k

with s_k = softmax_y(λ1 + λ2), r_d = marginals(Q) − (P1, P2), r_p = g + h,
r_c = σμc − w∘h and r' = r_c + w∘r_p.  The matrix lives on (λ1, λ2), has ny×ny
blocks and is positive definite once the gauge λ1 + c(y), λ2 − c(y) is fixed
(one λ2 per target value is pinned).  Steps follow Mehrotra's
predictor–corrector rule (an affine step sets σ = (μ_aff / μ)³, but σμ is kept
at least INFEASIBILITY_CENTRING ‖r_d‖∞, see below) and stop short
of the boundary w, h > 0 by a fraction (1 %, shrinking as μ → 0).  The slacks
are variables of their own, so λ may be slightly infeasible during the
iteration; a step is halved while it would take λ further out than it is or
than MAX_VIOLATION (this stops divergence on degenerate joints).

Infeasibility and centring.  r_d is not linear in (λ, w): Q = w·softmax(λ1 + λ2)
is a product, so a full step leaves a second-order residual Δw·Δs behind, and
r_d need not shrink with (1 − α) as in a linear program.  Where Mehrotra's σ
drives μ down much faster than r_d (joints whose optimum has a small pair mass,
e.g. a unique information at 0), pair masses w_k collapse far below their
optimum while the marginals are still off, the iterate leaves the neighbourhood
of the central path and step lengths vanish (the jam: best gap ~1e-3 bits after
3 iterations).  The floor σμ ≥ INFEASIBILITY_CENTRING · max |r_d| keeps μ from
outrunning the infeasibility (the neighbourhood ‖r‖ ≲ μ of infeasible IPMs, in
absolute form since r_d = 0 at the start); it is inactive near the optimum,
where r_d vanishes quadratically.

Start: the analytic point Q0 = P1 P2 / P(y), with λ1 = log P1 − log P(y) − 1,
λ2 = log P2 (so λ1 + λ2 = log Q0 − 1, strictly feasible) and w = Q0(x1, x2);
the primal residual is zero there.

Certificate.  Q is rounded onto Δ_P exactly (Altschuler, Weed & Rigollet 2017,
per target value: scale rows and columns down, then add the rank-one deficit),
and gap = f(Q_rounded) − <λ', (P1, P2)> ≥ V(P)'s error, where λ' is λ shifted
to feasibility (``feasible``).  A joint stops once its gap is below ``tol``
(nats), or once rounding error stalls it near the optimum; the iterate with the
smallest gap is returned.  The certificate costs a pass over the cells and
their logarithms, and far from the optimum it decides nothing: it is taken
only at iterates whose complementarity Σ_k w_k h_k (about the gap: at a
feasible iterate f(w s) − dual(λ) = Σ_k w_k h_k) is at most CERTIFY_ABOVE ×
max(tol, STALL_GAP), and at the last iteration allowed.  (The compiled
backends stop a joint whose step fails, after certifying its iterate; here it
steps by α = 0 and is certified where it would be anyway.)  ``fastpid.pid``
hands the joints that this iteration leaves above ``tol`` to the certified
fallbacks of ``fastpid.fallback`` (docs/pid-math.md, "Why the dual iteration stalls").
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .information import LN2

FRACTION_TO_BOUNDARY = 0.99  # at least; then 1 − μ, up to the next bound
MAX_FRACTION_TO_BOUNDARY = 1 - 1e-6
REGULARIZATION = 1e-14  # first diagonal shift of a Jacobi-scaled matrix that is not numerically SPD
MAX_SHIFT_RAISES = 8
REFINEMENT_STEPS = 2
MAX_VIOLATION = 0.1  # nats: how far a step may take λ out of the feasible set
MAX_BACKTRACKS = 30
INFEASIBILITY_CENTRING = 1e-2  # σμ ≥ this × max |r_d|: μ falls no faster than the marginal residual
STALL_GAP = 1e-6  # nats: below it, a joint whose gap stops shrinking has hit rounding error
CERTIFY_ABOVE = 100  # certificates only at iterates with Σ w h ≤ this × max(tol, STALL_GAP)
PATIENCE = 5  # iterations without halving the best gap before a joint stops


@dataclass
class Support:
    """Which cells, pairs and dual variables of a batch of joints take part."""

    p1: torch.Tensor  # (B, n1, ny) marginal P(x1, y)
    p2: torch.Tensor  # (B, n2, ny) marginal P(x2, y)
    cell: torch.Tensor  # (B, n1, n2, ny) P1 > 0 and P2 > 0
    pair: torch.Tensor  # (B, n1, n2) pair carries a constraint
    free: torch.Tensor  # (B, (n1 + n2) ny) dual variables the Newton step moves

    @staticmethod
    def of(p: torch.Tensor) -> "Support":
        p1, p2 = p.sum(2), p.sum(1)
        on1, on2 = p1 > 0, p2 > 0
        cell = on1[:, :, None, :] & on2[:, None, :, :]
        # Gauge: pin λ2 at the heaviest x2 of every target value.
        pinned = torch.zeros_like(on2)
        pinned.scatter_(1, p2.argmax(1, keepdim=True), True)
        free = torch.cat([on1.flatten(1), (on2 & ~pinned).flatten(1)], 1)
        return Support(p1, p2, cell, cell.any(-1), free)


def pair_softmax(lam1, lam2, support: Support):
    """g_k = log Σ_y exp(λ1 + λ2) over the pair's cells and s_k = softmax_y.

    Pairs without cells get g = 0 and s = 0."""
    z = lam1[:, :, None, :] + lam2[:, None, :, :]
    z = z.masked_fill(~support.cell, float("-inf"))
    z = z.masked_fill(~support.pair[..., None], 0.0)
    g = torch.logsumexp(z, -1)
    s = torch.softmax(z, -1) * support.cell
    return g * support.pair, s


def marginals(q: torch.Tensor):
    """(Σ_x2 Q, Σ_x1 Q): the two pairwise marginals that Δ_P fixes."""
    return q.sum(2), q.sum(1)


def weighted_marginals(weight, s):
    """marginals(weight_k s_k) for a weight per pair, e.g. Q's marginals for weight = w."""
    return marginals(weight[..., None] * s)


def newton_matrix(w, h, s, support: Support):
    """Σ_k w_k (diag s_k − s_k s_kᵀ) + (w_k/h_k) s_k s_kᵀ, on (λ1, λ2), gauge pinned."""
    batch, n1, n2, ny = s.shape
    q = w[..., None] * s
    rank_one = (w / h - w)[..., None] * s
    outer = torch.einsum("bijy,bijz->bijyz", rank_one, s)
    cross = torch.diag_embed(q) + outer  # (B, n1, n2, ny, ny): block (x1, x2)
    block1 = torch.diag_embed(q.sum(2)) + outer.sum(2)
    block2 = torch.diag_embed(q.sum(1)) + outer.sum(1)
    eye1 = torch.eye(n1, dtype=s.dtype, device=s.device)
    eye2 = torch.eye(n2, dtype=s.dtype, device=s.device)
    top = torch.cat(
        [torch.einsum("ij,biyz->biyjz", eye1, block1).reshape(batch, n1 * ny, n1 * ny),
         cross.permute(0, 1, 3, 2, 4).reshape(batch, n1 * ny, n2 * ny)], 2)
    bottom = torch.cat(
        [cross.permute(0, 2, 4, 1, 3).reshape(batch, n2 * ny, n1 * ny),
         torch.einsum("ij,biyz->biyjz", eye2, block2).reshape(batch, n2 * ny, n2 * ny)], 2)
    matrix = torch.cat([top, bottom], 1)
    free = support.free.to(s.dtype)
    matrix = matrix * free[:, :, None] * free[:, None, :]
    return matrix + torch.diag_embed(1.0 - free)


def solve_spd(matrix, rhs):
    """Solve a batch of SPD systems: Jacobi scaling, Cholesky (with a small
    diagonal shift, raised until it succeeds, where it fails) and iterative refinement.

    Near the optimum the matrix is as ill-conditioned as the problem is
    degenerate (many pairs with w → 0); the shift keeps the factorisation
    defined and refinement recovers the accuracy it costs."""
    scale = matrix.diagonal(dim1=1, dim2=2).clamp_min(torch.finfo(matrix.dtype).tiny).rsqrt()
    scaled = matrix * scale[:, :, None] * scale[:, None, :]
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    shift = torch.zeros(matrix.shape[:1], dtype=matrix.dtype, device=matrix.device)
    for _ in range(MAX_SHIFT_RAISES):
        factor, info = torch.linalg.cholesky_ex(scaled + shift[:, None, None] * eye)
        if not (info > 0).any():
            break
        shift = torch.where(info > 0, torch.where(shift > 0, shift * 100, REGULARIZATION), shift)
    b = rhs * scale
    x = torch.cholesky_solve(b[..., None], factor)[..., 0]
    for _ in range(REFINEMENT_STEPS):
        residual = b - (scaled @ x[..., None])[..., 0]
        x = x + torch.cholesky_solve(residual[..., None], factor)[..., 0]
    return x * scale


def newton_direction(matrix, w, h, s, residual, primal, r_c, support: Support,
                     weighted_marginals=weighted_marginals):
    """Δλ1, Δλ2, Δw, Δh for the residuals r_d, r_p = g + h and a complementarity target r_c."""
    _, n1, n2, ny = s.shape
    r_c = r_c + w * primal
    lift1, lift2 = weighted_marginals(r_c / h, s)
    rhs = -torch.cat([(residual[0] + lift1).flatten(1), (residual[1] + lift2).flatten(1)], 1)
    step = solve_spd(matrix, rhs * support.free)
    d1, d2 = step[:, : n1 * ny].view(-1, n1, ny), step[:, n1 * ny :].view(-1, n2, ny)
    slope = (s * (d1[:, :, None, :] + d2[:, None, :, :])).sum(-1)
    dh = -primal - slope
    dw = (r_c + w * slope) / h
    return d1, d2, dw * support.pair, dh * support.pair


def max_step(value, delta):
    """Largest α ≤ 1 keeping value + α delta ≥ 0 (value > 0), per joint."""
    ratio = torch.where(delta < 0, -value / delta, torch.full_like(value, float("inf")))
    return ratio.flatten(1).amin(1).clamp(max=1.0)


def round_to_polytope(q, support: Support):
    """Project Q exactly onto Δ_P: per target value, Altschuler–Weed–Rigollet rounding."""
    rows, cols = marginals(q)
    row_scale = torch.where(rows > support.p1, support.p1 / rows, torch.ones_like(rows))
    q = q * row_scale[:, :, None, :]
    cols = q.sum(1)
    col_scale = torch.where(cols > support.p2, support.p2 / cols, torch.ones_like(cols))
    q = q * col_scale[:, None, :, :]
    # Non-negative in exact arithmetic; clamp the rounding error.
    deficit1 = (support.p1 - q.sum(2)).clamp_min(0)
    deficit2 = (support.p2 - q.sum(1)).clamp_min(0)
    total = deficit1.sum(1)
    total = torch.where(total > 0, total, torch.ones_like(total))
    return q + deficit1[:, :, None, :] * deficit2[:, None, :, :] / total[:, None, None, :]


def primal_objective(q):
    """f(Q) = Σ Q log[Q / Q(x1, x2)] = −H_Q(Y | X1, X2) (nats)."""
    pair = q.sum(-1)
    return torch.xlogy(q, q).flatten(1).sum(1) - torch.xlogy(pair, pair).flatten(1).sum(1)


def dual_objective(lam1, lam2, support: Support):
    """<λ1, P1> + <λ2, P2> over the cells that carry mass (nats)."""
    return ((lam1 * support.p1).flatten(1).sum(1) + (lam2 * support.p2).flatten(1).sum(1))


def feasible(lam1, lam2, support: Support):
    """Shift λ1(x1, ·) by −max(0, max_x2 g) so that every constraint g ≤ 0 holds."""
    g, _ = pair_softmax(lam1, lam2, support)
    return lam1 - g.amax(2).clamp_min(0)[..., None], lam2


def certificate(lam1, lam2, w, support: Support):
    """Q on Δ_P, f(Q) and the duality gap f(Q) − dual(λ) ≥ 0 (nats)."""
    _, s = pair_softmax(lam1, lam2, support)
    q = round_to_polytope(w[..., None] * s, support)
    value = primal_objective(q)
    return q, value, value - dual_objective(*feasible(lam1, lam2, support), support)


def independent_joint(support: Support) -> torch.Tensor:
    """Q0 = P1(x1, y) P2(x2, y) / P(y) on the cells: X1 ⊥ X2 given Y, a point of Δ_P."""
    py = support.p1.sum(1)
    return support.cell * support.p1[:, :, None, :] * support.p2[:, None, :, :] / torch.where(
        py > 0, py, torch.ones_like(py))[:, None, None, :]


def analytic_start(support: Support):
    """λ, w of the analytic point Q0 = P1 P2 / P(y), shifted strictly inside."""
    py = support.p1.sum(1)
    log_p1 = torch.where(support.p1 > 0, support.p1.log(), torch.zeros_like(support.p1))
    log_p2 = torch.where(support.p2 > 0, support.p2.log(), torch.zeros_like(support.p2))
    log_py = torch.where(py > 0, py.log(), torch.zeros_like(py))
    lam1 = (log_p1 - log_py[:, None, :] - 1.0) * (support.p1 > 0)
    lam2 = log_p2 * (support.p2 > 0)
    return lam1, lam2, independent_joint(support).sum(-1)


@dataclass(frozen=True)
class Passes:
    """The passes over the (B, n1, n2, ny) cells that ``solve`` makes every
    iteration, with the signatures of this module's torch functions.  A backend
    may swap in kernels that compute the same quantities (``fastpid.kernels``:
    fused Triton kernels); the iteration itself stays this module's."""

    pair_softmax: Callable = pair_softmax
    weighted_marginals: Callable = weighted_marginals
    newton_matrix: Callable = newton_matrix
    certificate: Callable = certificate


TORCH_PASSES = Passes()


@dataclass
class Solution:
    """Dual variables, pair masses and bookkeeping of a batch solve."""

    lam1: torch.Tensor
    lam2: torch.Tensor
    w: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


def solve(p: torch.Tensor, tol: float = 1e-8 * LN2, max_iter: int = 100, patience: int = PATIENCE,
          passes: Passes = TORCH_PASSES) -> Solution:
    """Reference ("torch") solve of a batch ``p`` of shape (B, n1, n2, ny), float64.

    A joint stops once its certified gap is at most ``tol`` (nats), or, once
    its gap is below STALL_GAP, after ``patience`` iterations without halving
    it (rounding error has then taken over).  The iterate with the smallest gap
    is returned.  ``passes`` computes the per-iteration passes over the cells
    (``Passes``; the "triton" backend gives fused kernels)."""
    support = Support.of(p)
    lam1, lam2, w = analytic_start(support)
    h = -passes.pair_softmax(lam1, lam2, support)[0] + ~support.pair
    # Weighted central path w_k h_k = μ c_k with c_k = Q0(x1, x2): pair masses
    # span hundreds of orders of magnitude on skewed joints, and a uniform target
    # would drive the slack of a tiny pair to μ / w_k.
    weight = w * support.pair
    total_weight = weight.flatten(1).sum(1).clamp_min(torch.finfo(p.dtype).tiny)
    batch = p.shape[0]
    best = Solution(lam1, lam2, w, torch.zeros(batch, dtype=torch.int64, device=p.device),
                    torch.zeros(batch, dtype=torch.bool, device=p.device))
    best_gap = torch.full((batch,), float("inf"), dtype=p.dtype, device=p.device)
    stalled = torch.zeros(batch, dtype=torch.int64, device=p.device)
    far = CERTIFY_ABOVE * max(tol, STALL_GAP)
    done = torch.zeros(batch, dtype=torch.bool, device=p.device)
    for iteration in range(max_iter + 1):
        g, s = passes.pair_softmax(lam1, lam2, support)
        complementarity = w * h * support.pair
        complementarity_sum = complementarity.flatten(1).sum(1)
        # Certified only where the gap can decide something (module docstring).
        take = ~(complementarity_sum > far) | (iteration == max_iter)
        if take.any():
            _, _, gap = passes.certificate(lam1, lam2, w, support)
            improved = gap < best_gap / 2
            better = take & (gap < best_gap)
            best_gap = torch.where(better, gap, best_gap)
            best.lam1 = torch.where(better[:, None, None], lam1, best.lam1)
            best.lam2 = torch.where(better[:, None, None], lam2, best.lam2)
            best.w = torch.where(better[:, None, None], w, best.w)
            best.iterations = torch.where(better, iteration, best.iterations)
            stalled = torch.where(take, torch.where(gap.isnan(), patience, torch.where(improved, 0, stalled + 1)),
                                  stalled)
            done = (best_gap <= tol) | ((stalled >= patience) & (best_gap <= STALL_GAP))
        if done.all() or iteration == max_iter:
            break
        rows, cols = passes.weighted_marginals(w, s)
        residual = (rows - support.p1, cols - support.p2)
        primal = (g + h) * support.pair
        mu = complementarity_sum / total_weight
        matrix = passes.newton_matrix(w, h, s, support)
        # Predictor: the affine-scaling direction (μ target 0).
        _, _, dw_a, dh_a = newton_direction(matrix, w, h, s, residual, primal, -complementarity, support,
                                            passes.weighted_marginals)
        alpha_a = torch.minimum(max_step(w, dw_a), max_step(h, dh_a))
        w_a, h_a = w + alpha_a[:, None, None] * dw_a, h + alpha_a[:, None, None] * dh_a
        mu_a = (w_a * h_a * support.pair).flatten(1).sum(1) / total_weight
        sigma = (mu_a / mu.clamp_min(torch.finfo(p.dtype).tiny)).clamp(0, 1) ** 3
        # ... but no smaller than the marginal residual allows (see the module docstring).
        infeasibility = torch.maximum(residual[0].abs().flatten(1).amax(1), residual[1].abs().flatten(1).amax(1))
        floor = INFEASIBILITY_CENTRING * infeasibility / mu.clamp_min(torch.finfo(p.dtype).tiny)
        sigma = torch.maximum(sigma, floor.clamp(max=1))
        # Corrector: centring plus the second-order term of the predictor.
        r_c = (sigma * mu)[:, None, None] * weight - complementarity - dw_a * dh_a
        d1, d2, dw, dh = newton_direction(matrix, w, h, s, residual, primal, r_c, support,
                                          passes.weighted_marginals)
        fraction = torch.clamp(1 - mu, min=FRACTION_TO_BOUNDARY, max=MAX_FRACTION_TO_BOUNDARY)
        alpha = fraction * torch.minimum(max_step(w, dw), max_step(h, dh))
        alpha = torch.nan_to_num(alpha * ~done, nan=0.0)
        # Safeguard: λ may leave the feasible set, but by no more than it already
        # has or MAX_VIOLATION; halve steps that go further (this stops divergence
        # on degenerate joints, where tiny pair masses make Δλ large).
        allowed = torch.maximum(g.flatten(1).amax(1), torch.full_like(alpha, MAX_VIOLATION))[:, None, None]
        for _ in range(MAX_BACKTRACKS):
            g_new, _ = passes.pair_softmax(lam1 + alpha[:, None, None] * d1, lam2 + alpha[:, None, None] * d2, support)
            ok = (g_new <= allowed).flatten(1).all(1)
            if ok.all():
                break
            alpha = torch.where(ok, alpha, alpha / 2)
        alpha = torch.where(ok, alpha, torch.zeros_like(alpha))[:, None, None]
        lam1, lam2 = lam1 + alpha * d1, lam2 + alpha * d2
        w, h = w + alpha * dw, h + alpha * dh
    best.converged = best_gap <= tol
    return best
