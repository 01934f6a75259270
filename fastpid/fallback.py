r"""Certified fallbacks for the joints that the interior-point iteration leaves above the tolerance.

``fastpid.solver.solve`` (and every compiled backend, which runs the same
iteration) is fast, but it works on the dual alone, in log-scale variables, and
some joints defeat it: optima on the boundary (pairs whose mass goes to 0,
cells forced to 0, a unique information of exactly 0), pairs with a single
cell, cells many orders of magnitude below the others.  docs/pid-math.md
("Why the dual iteration stalls") has the analysis.  Here, joints whose gap is
still above ``tol`` are solved again by two methods that fail elsewhere, and
the certificate keeps the best of everything seen:

1. ``primal_dual_cells``: a primal-dual interior-point method on the cells Q
   themselves, with the marginal constraints kept exactly; tiny cells are small
   numbers there, not logarithms, and boundary optima are the barrier's limit.
2. ``feasible_dual``, for the joints the first leaves (pairs with a single
   cell): the dual iteration's Newton direction with λ kept strictly feasible
   (h = −g, no separate slack) and a backtracking line search on the norm of
   the perturbed KKT residual (Boyd & Vandenberghe §11.7): a damped Newton
   method that cannot jump out of the region where its model holds.

Any exactly feasible Q bounds V(P) from above and any feasible λ from below, so
``Bounds`` keeps the lowest f(Q) and the highest dual value separately (from
every iterate of every method, and from ``dual_from_primal``, the λ that fits
log Q(y | x1, x2) on a primal point's cells), and the gap is their difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import solver
from .solver import Support, marginals

FALLBACK_CENTRING = 0.1  # σ of both fallbacks: μ shrinks tenfold per full step
INFEASIBILITY_CENTRING = 0.1  # primal_dual_cells: μ ≥ this × the Q-weighted stationarity residual
BACKTRACK_DECREASE = 0.01  # feasible_dual: the residual must fall by 1 % of the step at least
MAX_BACKTRACKS = 60
# Each method may take this many times the caller's max_iter: its steps are damped
# (σ = 0.1), and on Dirichlet(0.02) joints with cells down to 1e-150 the method on
# the cells needs up to ~110 iterations.
ITERATION_BUDGET = 3


@dataclass
class Bounds:
    """The best exactly feasible Q (lowest f) and feasible λ (highest dual value) of a batch."""

    support: Support
    q: torch.Tensor
    value: torch.Tensor
    lam1: torch.Tensor
    lam2: torch.Tensor
    dual: torch.Tensor

    @staticmethod
    def empty(support: Support) -> Bounds:
        inf = torch.full(support.p1.shape[:1], float("inf"), dtype=support.p1.dtype, device=support.p1.device)
        return Bounds(
            support,
            support.cell.to(support.p1.dtype),
            inf,
            torch.zeros_like(support.p1),
            torch.zeros_like(support.p2),
            -inf,
        )

    @property
    def gap(self) -> torch.Tensor:
        return self.value - self.dual

    def offer(self, q: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor):
        """Offer an iterate: Q rounded onto Δ_P, its λ and the λ fitted to Q
        (``dual_from_primal``), each made feasible; keep what tightens a bound."""
        q = solver.round_to_polytope(q * self.support.cell, self.support)
        value = solver.primal_objective(q)
        better = value < self.value
        self.q = torch.where(better[:, None, None, None], q, self.q)
        self.value = torch.where(better, value, self.value)
        self._keep_dual(lam1, lam2)
        self._keep_dual(*dual_from_primal(q, self.support))

    def _keep_dual(self, lam1: torch.Tensor, lam2: torch.Tensor):
        lam1, lam2 = solver.feasible(lam1, lam2, self.support)
        dual = solver.dual_objective(lam1, lam2, self.support)
        better = dual > self.dual
        self.lam1 = torch.where(better[:, None, None], lam1, self.lam1)
        self.lam2 = torch.where(better[:, None, None], lam2, self.lam2)
        self.dual = torch.where(better, dual, self.dual)


def dual_from_primal(q: torch.Tensor, support: Support):
    """λ with λ1 + λ2 = log Q(y | x1, x2) on Q's cells in the least-squares sense, weighted by Q.

    At the optimum the equations hold exactly on the cells with Q > 0; near it
    this recovers the dual point that the iterate's own λ may be far from (the
    dual optimum can be at infinity, and single-cell pairs leave it loose)."""
    cell = support.cell & (q > 0)
    pair = q.sum(-1, keepdim=True)
    log_conditional = torch.where(cell, q.log() - torch.where(pair > 0, pair, 1).log(), torch.zeros_like(q))
    weight = torch.where(cell, q, torch.zeros_like(q))
    mass = weight.sum(-1)
    share = weight / torch.where(mass > 0, mass, 1)[..., None]
    # Σ_k E_kᵀ diag(weight_k) E_k: the Newton matrix with its rank-one part at zero (h = 1).
    factor = solver.factorize(mass, torch.ones_like(mass), share, support, _elimination(q))
    rows, cols = marginals(weight * log_conditional)
    rhs = torch.cat([rows.flatten(1), cols.flatten(1)], 1) * support.free
    lam = factor.solve(rhs)
    n1, ny = support.p1.shape[1:]
    return lam[:, : n1 * ny].view_as(support.p1), lam[:, n1 * ny :].view_as(support.p2)


def _elimination(p: torch.Tensor) -> str:
    """How the Newton systems of joints shaped like p (..., n1, n2, ny) are solved."""
    return solver.choose_elimination(*p.shape[-3:])


def _pin(alpha: torch.Tensor, dims: int) -> torch.Tensor:
    return alpha.view(-1, *([1] * dims))


def feasible_dual(p: torch.Tensor, bounds: Bounds, tol: float, max_iter: int) -> torch.Tensor:
    """Damped primal-dual Newton steps on the dual with λ strictly feasible; returns iterations used."""
    support = bounds.support
    lam1, lam2, w = solver.analytic_start(support)
    pair = support.pair
    weight = w * pair
    total_weight = weight.flatten(1).sum(1).clamp_min(torch.finfo(p.dtype).tiny)

    def kkt_residual(g, s, w, target):
        rows, cols = solver.weighted_marginals(w, s)
        marginal = torch.cat([(rows - support.p1).flatten(1), (cols - support.p2).flatten(1)], 1) * support.free
        centring = (-w * g - target[:, None, None] * weight) * pair
        return torch.cat([marginal, centring.flatten(1)], 1).norm(dim=1)

    iterations = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
    for _ in range(max_iter):
        g, s = solver.pair_softmax(lam1, lam2, support)
        bounds.offer(w[..., None] * s, lam1, lam2)
        active = bounds.gap > tol
        if not active.any():
            break
        iterations += active
        h = -g * pair + ~pair
        complementarity = w * h * pair
        target = FALLBACK_CENTRING * complementarity.flatten(1).sum(1) / total_weight
        rows, cols = solver.weighted_marginals(w, s)
        factor = solver.factorize(w, h, s, support, _elimination(p))
        r_c = target[:, None, None] * weight - complementarity
        d1, d2, dw, _ = solver.newton_direction(
            factor, w, h, s, (rows - support.p1, cols - support.p2), torch.zeros_like(h), r_c, support
        )
        alpha = torch.nan_to_num(solver.FRACTION_TO_BOUNDARY * solver.max_step(w, dw), nan=0.0) * active
        before = kkt_residual(g, s, w, target)
        for _ in range(MAX_BACKTRACKS):
            g_new, s_new = solver.pair_softmax(lam1 + _pin(alpha, 2) * d1, lam2 + _pin(alpha, 2) * d2, support)
            after = kkt_residual(g_new, s_new, w + _pin(alpha, 2) * dw, target)
            ok = ((g_new < 0) | ~pair).flatten(1).all(1) & (after <= (1 - BACKTRACK_DECREASE * alpha) * before) | (
                alpha == 0
            )
            if ok.all():
                break
            alpha = torch.where(ok, alpha, alpha / 2)
        alpha = _pin(torch.where(ok, alpha, torch.zeros_like(alpha)), 2)
        lam1, lam2, w = lam1 + alpha * d1, lam2 + alpha * d2, w + alpha * dw
    return iterations


def primal_dual_cells(p: torch.Tensor, bounds: Bounds, tol: float, max_iter: int) -> torch.Tensor:
    r"""A primal-dual interior-point method on the cells; returns iterations used.

    Variables Q > 0 on the cells (marginals exact), λ and z > 0 with the
    stationarity r_s = ∇f(Q) − (λ1 + λ2) − z = 0 and Q z = μ c (c: Q z at the
    start, a weighted central path).  Eliminating Δz leaves, per pair,
    M = diag((1 + z) / Q) − 1 1ᵀ / Q(x1, x2), whose inverse is diag(d) + d dᵀ / γ
    with d = Q / (1 + z) and γ = Σ_y Q z / (1 + z) > 0 (Sherman–Morrison); the
    system on λ, Σ_k E_kᵀ M_k⁻¹ E_k, is ``solver.newton_matrix`` with
    w = Σ d, s = d / w and h = γ / Q(x1, x2) (docs/pid-math.md)."""
    support = bounds.support
    cell = support.cell
    on = cell.to(p.dtype)
    zeros = torch.zeros_like(on)
    lam1, lam2, _ = solver.analytic_start(support)
    q = solver.independent_joint(support).to(p.dtype)
    pair_mass = q.sum(-1, keepdim=True)
    # Stationarity holds at the start: λ1 + λ2 = log Q0 − 1 there, so z = 1 − log Q0(x1, x2) ≥ 1.
    z = torch.where(cell, 1 - torch.where(pair_mass > 0, pair_mass, 1).log().expand_as(q), zeros)
    weight = q * z
    total_weight = weight.flatten(1).sum(1)

    def primal_residual(q):
        rows, cols = marginals(q)
        return rows - support.p1, cols - support.p2

    def worst(residual):
        return torch.maximum(residual[0].abs().flatten(1).amax(1), residual[1].abs().flatten(1).amax(1))

    iterations = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
    for _ in range(max_iter):
        bounds.offer(q, lam1, lam2)
        active = bounds.gap > tol
        if not active.any():
            break
        iterations += active
        q_on = torch.where(cell, q, torch.ones_like(q))
        pair_mass = q.sum(-1, keepdim=True)
        log_conditional = q_on.log() - torch.where(pair_mass > 0, pair_mass, 1).log()
        r_s = (log_conditional - lam1[:, :, None, :] - lam2[:, None, :, :] - z) * on
        r_p = primal_residual(q)
        complementarity = q * z
        mu = complementarity.flatten(1).sum(1) / total_weight
        stationarity = (q * r_s.abs()).flatten(1).sum(1) / total_weight
        target = torch.maximum(FALLBACK_CENTRING * mu, INFEASIBILITY_CENTRING * stationarity)
        r_c = (complementarity - _pin(target, 3) * weight) * on
        d = torch.where(cell, q_on / (1 + z), zeros)
        gamma = torch.where(cell, q_on * z / (1 + z), zeros).sum(-1)
        gamma_safe = torch.where(gamma > 0, gamma, 1)[..., None]
        d_mass = d.sum(-1)
        factor = solver.factorize(
            d_mass,
            torch.where(support.pair, gamma / torch.where(pair_mass[..., 0] > 0, pair_mass[..., 0], 1), 1),
            d / torch.where(d_mass > 0, d_mass, 1)[..., None],
            support,
            _elimination(p),
        )

        def apply_inverse(v, d=d, gamma_safe=gamma_safe):  # M⁻¹ v, pair by pair, at this iterate
            return d * v + d * (d * v).sum(-1, keepdim=True) / gamma_safe

        reduced = (r_s + r_c / q_on) * on
        rows, cols = marginals(apply_inverse(reduced))
        rhs = torch.cat([(rows - r_p[0]).flatten(1), (cols - r_p[1]).flatten(1)], 1) * support.free
        step = factor.solve(rhs)
        n1, ny = support.p1.shape[1:]
        d1, d2 = step[:, : n1 * ny].view_as(lam1), step[:, n1 * ny :].view_as(lam2)
        dq = apply_inverse(d1[:, :, None, :] + d2[:, None, :, :] - reduced) * on
        dz = torch.where(cell, (-r_c - z * dq) / q_on, zeros)
        ratio = torch.where(cell & (dq < 0), -q / dq, torch.inf).flatten(1).amin(1)
        ratio = torch.minimum(ratio, torch.where(cell & (dz < 0), -z / dz, torch.inf).flatten(1).amin(1))
        alpha = torch.nan_to_num(torch.clamp(solver.FRACTION_TO_BOUNDARY * ratio, max=1.0), nan=0.0) * active
        # The marginals hold exactly in exact arithmetic; where the solve lost
        # accuracy (an ill-conditioned system), shorten the step instead of drifting off Δ_P.
        allowed = torch.clamp(2 * worst(r_p), min=1e-14)
        for _ in range(MAX_BACKTRACKS):
            ok = (worst(primal_residual(q + _pin(alpha, 3) * dq)) <= allowed) | (alpha == 0)
            if ok.all():
                break
            alpha = torch.where(ok, alpha, alpha / 2)
        alpha = torch.where(ok, alpha, torch.zeros_like(alpha))
        lam1, lam2 = lam1 + _pin(alpha, 2) * d1, lam2 + _pin(alpha, 2) * d2
        q, z = q + _pin(alpha, 3) * dq, z + _pin(alpha, 3) * dz
    return iterations


METHODS = (primal_dual_cells, feasible_dual)


def refine(p: torch.Tensor, q: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor, tol: float, max_iter: int):
    """Certified fallbacks for the normalised float64 joints ``p`` (B, n1, n2, ny) whose solution
    (the rounded Q ``q`` and the dual solution ``lam1``, ``lam2``) misses ``tol`` (nats).

    Each method of ``METHODS`` runs (at most ``ITERATION_BUDGET × max_iter``
    iterations) on the joints still above ``tol``.  Returns ``Bounds`` (q exactly on Δ_P, f(q) in ``value``,
    λ feasible, the gap) and the iterations each joint used."""
    support = Support.of(p)
    bounds = Bounds.empty(support)
    bounds.offer(q, lam1, lam2)
    iterations = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
    for method in METHODS:
        left = (bounds.gap > tol).nonzero()[:, 0]
        if left.numel() == 0:
            break
        sub = Bounds(
            Support.of(p[left]),
            bounds.q[left],
            bounds.value[left],
            bounds.lam1[left],
            bounds.lam2[left],
            bounds.dual[left],
        )
        iterations[left] += method(p[left], sub, tol, ITERATION_BUDGET * max_iter)
        for name in ("q", "value", "lam1", "lam2", "dual"):
            getattr(bounds, name)[left] = getattr(sub, name)
    return bounds, iterations
