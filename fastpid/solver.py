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

The iteration (docs/pid-math.md, "The interior-point iteration": the KKT
system, the Newton step, "Infeasibility and centring", the start) is a
primal-dual interior-point method with pair multipliers w_k and slacks
h_k = −g_k(λ), Mehrotra predictor-corrector steps on a weighted central path,
and Δw, Δh eliminated onto a Newton system on (λ1, λ2) with one λ2 per target
value pinned (the gauge); ``factorize`` solves it by either elimination
(docs/pid-math.md, "Solving the Newton system").  What is particular to this
code: the slacks are variables of their own, so λ may be slightly infeasible
during the iteration, and a step is halved while it would take λ further out
than it is or than MAX_VIOLATION.

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

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .information import LN2

FRACTION_TO_BOUNDARY = 0.99  # at least; then 1 − μ, up to the next bound
MAX_FRACTION_TO_BOUNDARY = 1 - 1e-6
REGULARIZATION = 1e-14  # first diagonal shift of a Jacobi-scaled matrix that is not numerically SPD
MAX_SHIFT_RAISES = 8
REFINEMENT_STEPS = 2
PAIRS_REFINEMENT_STEPS = 6  # the pair elimination's solves lose more to rounding (docs/pid-math.md)
PAIRS_BLOCK_SHIFT = 1e-4  # δ: the pair elimination factorises D_y + δ diag(D_y), refinement solves with M,
PAIRS_SHIFT_FREE_NORM = 100  # where the Frobenius norm of D_y's scaled inverse (≥ 1 / λ_min) exceeds this
PAIRS_ADVANTAGE = 2.95  # "pairs" where its flops are fewer by this factor (choose_elimination)
MAX_VIOLATION = 0.1  # nats: how far a step may take λ out of the feasible set
MAX_BACKTRACKS = 30
INFEASIBILITY_CENTRING = 1e-2  # σμ ≥ this × max |r_d|: μ falls no faster than the marginal residual
STALL_GAP = 1e-6  # nats: below it, a joint whose gap stops shrinking has hit rounding error
CERTIFY_ABOVE = 100  # certificates only at iterates with Σ w h ≤ this × max(tol, STALL_GAP)
PATIENCE = 5  # iterations without halving the best gap before a joint stops
DEFAULT_MEMORY_GIB = 8  # memory_budget_bytes without FASTPID_MEMORY_GIB (csrc/broja_checks.h: kDefaultMemoryGiB)
CELL_COPIES = 16  # (B, n1, n2, ny) tensors live at once in solve (working_set_bytes)
# Peak resident memory over the tensors' own bytes, from the allocator keeping freed blocks between chunks
# (measured with bench/torch_memory.py: docs/performance.md).
ALLOCATOR_SLACK = 1.5
SIDE_RESCUE_BYTES = 256 * 2**20  # joints the pair elimination leaves unconverged: solved again by "side" up to this


@dataclass
class Support:
    """Which cells, pairs and dual variables of a batch of joints take part."""

    p1: torch.Tensor  # (B, n1, ny) marginal P(x1, y)
    p2: torch.Tensor  # (B, n2, ny) marginal P(x2, y)
    cell: torch.Tensor  # (B, n1, n2, ny) P1 > 0 and P2 > 0
    pair: torch.Tensor  # (B, n1, n2) pair carries a constraint
    free: torch.Tensor  # (B, (n1 + n2) ny) dual variables the Newton step moves

    @staticmethod
    def of(p: torch.Tensor) -> Support:
        p1, p2 = p.sum(2), p.sum(1)
        on1, on2 = p1 > 0, p2 > 0
        cell = on1[:, :, None, :] & on2[:, None, :, :]
        # Gauge: pin λ2 at the heaviest x2 of every target value.
        pinned = torch.zeros_like(on2)
        pinned.scatter_(1, p2.argmax(1, keepdim=True), True)
        free = torch.cat([on1.flatten(1), (on2 & ~pinned).flatten(1)], 1)
        return Support(p1, p2, cell, cell.any(-1), free)

    def take(self, keep: torch.Tensor) -> Support:
        """The support of the joints selected by ``keep`` (a mask or indices over the batch)."""
        return Support(self.p1[keep], self.p2[keep], self.cell[keep], self.pair[keep], self.free[keep])


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


def newton_blocks(w, h, s, support: Support):
    """The Newton matrix Σ_k w_k (diag s_k − s_k s_kᵀ) + (w_k/h_k) s_k s_kᵀ on (λ1, λ2)
    by blocks, gauge pinned: the ny × ny diagonal blocks of λ1(x1, ·), (B, n1, ny, ny),
    and of λ2(x2, ·), (B, n2, ny, ny), and the cross blocks (B, n1, n2, ny, ny)
    between λ1(x1, ·) and λ2(x2, ·).  Cross block k: diag q_k + (w_k/h_k − w_k) s_k s_kᵀ,
    q_k = w_k s_k; the diagonal blocks are its sums over the other variable.  Rows
    and columns of variables that are not free are the identity's in the diagonal
    blocks and zero in the cross blocks."""
    batch, n1, n2, ny = s.shape
    q = w[..., None] * s
    rank_one = (w / h - w)[..., None] * s
    cross = torch.diag_embed(q) + rank_one[..., :, None] * s[..., None, :]
    free1, free2 = _free_per_side(support, n1, ny)
    cross_masked = cross * free1[:, :, None, :, None] * free2[:, None, :, None, :]
    return _identity_off_free(cross.sum(2), free1), _identity_off_free(cross.sum(1), free2), cross_masked


def newton_matrix(w, h, s, support: Support):
    """``newton_blocks`` assembled into the dense (B, m, m) matrix on (λ1, λ2),
    m = (n1 + n2) ny: what the Triton per-joint solver forms
    (kernels/small_joint_solver.py), and the tests' reference for ``SideFactor``."""
    batch, n1, n2, ny = s.shape
    block1, block2, cross = newton_blocks(w, h, s, support)
    top = torch.cat([_block_diagonal(block1), cross.permute(0, 1, 3, 2, 4).reshape(batch, n1 * ny, n2 * ny)], 2)
    bottom = torch.cat([cross.permute(0, 2, 4, 1, 3).reshape(batch, n2 * ny, n1 * ny), _block_diagonal(block2)], 2)
    return torch.cat([top, bottom], 1)


def _free_per_side(support: Support, n1: int, ny: int):
    """The free mask as two float tensors, (B, n1, ny) and (B, n2, ny)."""
    free = support.free.to(support.p1.dtype)
    return free[:, : n1 * ny].view(len(free), n1, ny), free[:, n1 * ny :].view(len(free), -1, ny)


def _identity_off_free(blocks, free):
    """Diagonal blocks with the rows and columns of variables that are not free replaced by the identity's."""
    return blocks * free[..., :, None] * free[..., None, :] + torch.diag_embed(1.0 - free)


def _block_diagonal(blocks):
    """(B, n, ny, ny) blocks → the (B, n ny, n ny) block-diagonal matrix."""
    batch, n, ny, _ = blocks.shape
    eye = torch.eye(n, dtype=blocks.dtype, device=blocks.device)
    return torch.einsum("ij,biyz->biyjz", eye, blocks).reshape(batch, n * ny, n * ny)


def newton_product(w, h, s, support: Support, x):
    """M x for the Newton matrix of ``newton_matrix`` without forming it: pair by
    pair, E_kᵀ [diag(q_k) + c_k s_k s_kᵀ] E_k x over the cells; x and M x are
    (B, (n1 + n2) ny) and vanish at variables that are not free."""
    _, n1, n2, ny = s.shape
    x = x * support.free
    x1, x2 = x[:, : n1 * ny].view(-1, n1, ny), x[:, n1 * ny :].view(-1, n2, ny)
    along = x1[:, :, None, :] + x2[:, None, :, :]
    slope = (s * along).sum(-1)
    per_cell = w[..., None] * s * along + ((w / h - w) * slope)[..., None] * s
    rows, cols = marginals(per_cell * support.cell)
    return torch.cat([rows.flatten(1), cols.flatten(1)], 1) * support.free


def _factorise_with_shift(factorise, batch: int, like: torch.Tensor) -> list:
    """The factors of ``factorise(joints, shift) → (*factors, failed)`` for a batch:
    first with no shift, then REGULARIZATION raised ×100 on the joints whose
    factorisation failed, MAX_SHIFT_RAISES attempts in all; only those joints are
    factorised again (``joints``: a slice of all of them, so views, then their indices)."""
    shift = torch.zeros(batch, dtype=like.dtype, device=like.device)
    *factors, failed = factorise(slice(None), shift)
    joints = torch.arange(batch, device=like.device)
    for _ in range(MAX_SHIFT_RAISES - 1):
        if not failed.any():
            break
        joints, shift = joints[failed], shift[failed]
        shift = torch.where(shift > 0, shift * 100, REGULARIZATION)
        *retried, failed = factorise(joints, shift)
        for factor, again in zip(factors, retried):
            factor[joints] = again
    return factors


def _cholesky_with_shift(scaled):
    """Cholesky factor of a batch (B, n, n) of Jacobi-scaled SPD matrices, with a
    diagonal shift (``_factorise_with_shift``) on the members where it fails."""
    eye = torch.eye(scaled.shape[-1], dtype=scaled.dtype, device=scaled.device)

    def factorise(joints, shift):
        factor, info = torch.linalg.cholesky_ex(scaled[joints] + shift[:, None, None] * eye)
        return factor, info > 0

    return _factorise_with_shift(factorise, len(scaled), scaled)[0]


def _jacobi(matrix):
    """D = diag(matrix)^(-1/2) (clamped at the smallest normal number) and D matrix D."""
    scale = matrix.diagonal(dim1=-2, dim2=-1).clamp_min(torch.finfo(matrix.dtype).tiny).rsqrt()
    return scale, matrix * scale[..., :, None] * scale[..., None, :]


class SideFactor:
    r"""The Newton matrix solved by eliminating one side (docs/pid-math.md, "Side
    elimination"; csrc/broja/schur.h): with E the side of more symbols and K the
    other (λ2's on ties: the gauge pins some of it), the Jacobi-scaled matrix
    M̃ = D M D, D = diag(M)^(-1/2), is [[Ã_E, C̃], [C̃ᵀ, Ã_K]] with Ã_E
    block-diagonal over E's symbols.  With a shift σ: each ny × ny block of Ã_E
    is factorised, Ã_E + σ I = L Lᵀ; G = L⁻¹ C̃; the Schur complement gives
    Ã_K − Gᵀ G + σ I = L_S L_Sᵀ.  σ = 0, or REGULARIZATION raised ×100 on the
    joints where either factorisation fails, as the dense factorisation of M̃
    would have it.

    Batched: the blocks' Cholesky, the triangular solves and Gᵀ G are torch's
    batched kernels (cuBLAS and cuSOLVER on a GPU), ~e k² + k³ / 3 flops for
    e = max(n1, n2) ny and k = min(n1, n2) ny where the dense matrix took
    (e + k)³ / 3, and e k + k² entries of memory where it took (e + k)².
    A solve works on M̃: t = L⁻¹ b_E, x_K = (L_S L_Sᵀ)⁻¹ (b_K − Gᵀ t),
    x_E = L⁻ᵀ (t − G x_K), refined REFINEMENT_STEPS times against M̃'s products
    from its blocks (``scaled_product``)."""

    def __init__(self, w, h, s, support: Support, newton_blocks=newton_blocks):
        batch, n1, n2, ny = s.shape
        self.n1, self.ny = n1, ny
        block1, block2, cross = newton_blocks(w, h, s, support)
        self.keep2 = n2 <= n1
        if self.keep2:
            blocks_e, blocks_k = block1, block2
        else:
            blocks_e, blocks_k, cross = block2, block1, cross.permute(0, 2, 1, 4, 3)
        symbols_e, symbols_k = blocks_e.shape[1], blocks_k.shape[1]
        self.scale_e, self.scaled_e = _jacobi(blocks_e)
        scale_k, scaled_blocks_k = _jacobi(blocks_k)  # A_K is block-diagonal: so is its scaling
        self.scale_k, self.scaled_k = scale_k.flatten(1), _block_diagonal(scaled_blocks_k)
        self.scale = self.join(self.scale_e, self.scale_k)  # D, in (λ1, λ2) order
        # C̃ = D_E C D_K, (B, e, k): E's variables by symbol, then K's (scaled in place: the
        # cross blocks take the most memory of the factorisation).
        coupling = cross.permute(0, 1, 3, 2, 4).reshape(batch, symbols_e, ny, symbols_k * ny)
        del cross
        self.coupling = coupling.mul_(self.scale_e[..., None]).mul_(self.scale_k[:, None, None, :]).flatten(1, 2)
        del coupling

        def factorise(joints, shift):
            shifted_e = self.scaled_e[joints].clone()
            shifted_e.diagonal(dim1=-2, dim2=-1).add_(shift[:, None, None])
            factor_e, info_e = torch.linalg.cholesky_ex(shifted_e)
            coupling = self.coupling[joints].view(-1, symbols_e, ny, symbols_k * ny)
            # G = L⁻¹ C̃ as Gᵀ = C̃ᵀ L⁻ᵀ: LAPACK then writes G row-major, so flattening it copies nothing.
            g = torch.linalg.solve_triangular(factor_e.mT, coupling.mT, upper=True, left=False).mT.flatten(1, 2)
            # The shift before Gᵀ G is subtracted, as the Cholesky of the whole shifted M̃ would have it.
            schur = self.scaled_k[joints].clone()
            schur.diagonal(dim1=1, dim2=2).add_(shift[:, None])
            schur.baddbmm_(g.mT, g, alpha=-1)
            factor_k, info_k = torch.linalg.cholesky_ex(schur)
            return factor_e, g, factor_k, (info_e > 0).any(1) | (info_k > 0)

        self.factor_e, self.g, self.factor_k = _factorise_with_shift(factorise, batch, s)

    def split(self, x):
        """(B, (n1 + n2) ny) → E's part as (B, E's symbols, ny, 1) and K's as (B, k, 1)."""
        cut = self.n1 * self.ny
        x_e, x_k = (x[:, :cut], x[:, cut:]) if self.keep2 else (x[:, cut:], x[:, :cut])
        return x_e.reshape(*self.scale_e.shape, 1), x_k[..., None]

    def join(self, x_e, x_k):
        """``split``'s inverse: (B, (n1 + n2) ny) in (λ1, λ2) order."""
        x_e, x_k = x_e.flatten(1), x_k.flatten(1)
        return torch.cat([x_e, x_k] if self.keep2 else [x_k, x_e], 1)

    def scaled_solve(self, b):
        """(M̃ + σ I)⁻¹ b by the factors."""
        b_e, b_k = self.split(b)
        t = torch.linalg.solve_triangular(self.factor_e, b_e, upper=False)
        x_k = torch.cholesky_solve(b_k - self.g.mT @ t.flatten(1, 2), self.factor_k)
        u = t - (self.g @ x_k).view_as(t)
        return self.join(torch.linalg.solve_triangular(self.factor_e.mT, u, upper=True), x_k)

    def scaled_product(self, x):
        """M̃ x from the blocks: [Ã_E x_E + C̃ x_K; C̃ᵀ x_E + Ã_K x_K]."""
        x_e, x_k = self.split(x)
        top = self.scaled_e @ x_e + (self.coupling @ x_k).view_as(x_e)
        bottom = self.coupling.mT @ x_e.flatten(1, 2) + self.scaled_k @ x_k
        return self.join(top, bottom)

    def solve(self, rhs):
        b = rhs * self.scale
        x = self.scaled_solve(b)
        for _ in range(REFINEMENT_STEPS):
            x = x + self.scaled_solve(b - self.scaled_product(x))
        return x * self.scale


class PairsFactor:
    r"""The Newton matrix M = D + Σ_k c_k u_k u_kᵀ solved through its structure
    (docs/pid-math.md, "Pair elimination"; csrc/broja/pairs.h): D is
    block-diagonal over the target values, one (n1 + n2)-block D_y per y, and
    each pair adds a rank-one term u_k = E_kᵀ s_k, c_k = w_k / h_k − w_k.  With
    G = Uᵀ D⁻¹ U, ρ = |c|^(1/2) and σ = sign c,

        M⁻¹ r = D⁻¹ (r − U ρ u),   (σ + ρ G ρ) u = ρ Uᵀ D⁻¹ r;

    the capacitance matrix is symmetric indefinite (one negative eigenvalue per
    pair with c < 0): LAPACK's Bunch–Kaufman factorisation here, a Cholesky
    factorisation with those pairs last in the C++ solver.  Refinement steps use
    M's products (``newton_product``)."""

    def __init__(self, w, h, s, support: Support):
        batch, n1, n2, ny = s.shape
        self.w, self.h, self.s, self.support, self.n1 = w, h, s, support, n1
        q = w[..., None] * s
        blocks = torch.zeros(batch, ny, n1 + n2, n1 + n2, dtype=s.dtype, device=s.device)
        blocks[:, :, :n1, :n1] = torch.diag_embed(q.sum(2).transpose(1, 2))
        blocks[:, :, n1:, n1:] = torch.diag_embed(q.sum(1).transpose(1, 2))
        blocks[:, :, :n1, n1:] = q.permute(0, 3, 1, 2)
        blocks[:, :, n1:, :n1] = q.permute(0, 3, 2, 1)
        free = self.per_target(support.free.to(s.dtype))  # (B, ny, n1 + n2)
        blocks = blocks * free[..., :, None] * free[..., None, :] + torch.diag_embed(1 - free)
        scale, scaled = _jacobi(blocks)
        del blocks
        # Unshifted where D_y is well conditioned, shifted by δ where not (or where
        # the unshifted Cholesky fails); the C++ solver also keeps a block shifted
        # once it has needed δ, a saving that changes no solution beyond rounding.
        eye = torch.eye(n1 + n2, dtype=s.dtype, device=s.device)
        factor, info = torch.linalg.cholesky_ex(scaled)
        failed = (info > 0)[..., None, None]
        inverse = torch.cholesky_inverse(torch.where(failed, eye, factor))  # a failed factor's zero pivot: not inverted
        del factor
        norm = torch.linalg.matrix_norm(inverse * free[..., :, None] * free[..., None, :])
        self.shifted = failed[..., 0, 0] | ~(norm <= PAIRS_SHIFT_FREE_NORM)  # (B, ny)
        if self.shifted.any():
            near_singular = scaled[self.shifted] + PAIRS_BLOCK_SHIFT * eye
            inverse[self.shifted] = torch.cholesky_inverse(_cholesky_with_shift(near_singular))
        self.inverse = inverse * (scale * free)[..., :, None] * (scale * free)[..., None, :]  # D_y⁻¹, 0 off the free
        # G[k][l] = Σ_y s_k(y) s_l(y) (R_k[x1(l)] + R_k[n1 + x2(l)]), R_k the sum of D_y⁻¹'s rows
        # x1(k) and n1 + x2(k): contractions over y batched over x1(l), then over x2(l).
        sy = s.permute(0, 3, 1, 2)  # (B, ny, n1, n2)
        rows = self.inverse[..., :n1, None, :] + self.inverse[..., None, n1:, :]  # (B, ny, n1, n2, n1 + n2)
        scaled = sy[..., None] * rows
        g = torch.einsum("byijI,byIJ->bijIJ", scaled[..., :n1], sy) + torch.einsum(
            "byijJ,byIJ->bijIJ", scaled[..., n1:], sy
        )
        del rows, scaled
        c = ((w / h - w) * support.pair).flatten(1)
        self.root = c.abs().sqrt()
        capacitance = torch.diag_embed(torch.where(c < 0, -1.0, 1.0).to(s.dtype)) + (
            self.root[:, :, None] * g.reshape(batch, n1 * n2, n1 * n2) * self.root[:, None, :]
        )
        self.capacitance_scale = (
            1 + self.root**2 * g.reshape(batch, n1 * n2, n1 * n2).diagonal(dim1=1, dim2=2)
        ).rsqrt()
        scaled = capacitance * self.capacitance_scale[:, :, None] * self.capacitance_scale[:, None, :]
        self.ldl, self.pivots, _ = torch.linalg.ldl_factor_ex(scaled)

    def per_target(self, x):
        """(B, (n1 + n2) ny) → (B, ny, n1 + n2): the variables of each target value."""
        ny = self.s.shape[-1]
        return x.view(x.shape[0], -1, ny).transpose(1, 2)

    def solve_once(self, r):
        n1 = self.n1
        t = (self.inverse @ self.per_target(r)[..., None])[..., 0]  # D⁻¹ r, (B, ny, n1 + n2)
        sy = self.s.permute(0, 3, 1, 2)
        v = (torch.einsum("byij,byi->bij", sy, t[..., :n1]) + torch.einsum("byij,byj->bij", sy, t[..., n1:])).flatten(1)
        b = self.root * v * self.capacitance_scale
        u = torch.linalg.ldl_solve(self.ldl, self.pivots, b[..., None])[..., 0]
        z = (self.root * self.capacitance_scale * u).view_as(self.w)
        lifted = self.s * z[..., None]
        rows, cols = marginals(lifted)
        r = (r - torch.cat([rows.flatten(1), cols.flatten(1)], 1)) * self.support.free
        x = (self.inverse @ self.per_target(r)[..., None])[..., 0]
        return x.transpose(1, 2).reshape(r.shape)

    def solve(self, rhs):
        x = self.solve_once(rhs)
        for _ in range(PAIRS_REFINEMENT_STEPS):
            x = x + self.solve_once(rhs - newton_product(self.w, self.h, self.s, self.support, x))
        return x


def side_flops(n1: int, n2: int, ny: int) -> float:
    """Flops of one factorisation by the side elimination (docs/pid-math.md, "Cost of each elimination")."""
    e, k = max(n1, n2) * ny, min(n1, n2) * ny
    return e * ny * ny / 3 + e * ny * k + e * k * k + k**3 / 3


def pairs_flops(n1: int, n2: int, ny: int) -> float:
    """Flops of one factorisation by the pair elimination (docs/pid-math.md, "Cost of each elimination")."""
    nn, pairs = n1 + n2, n1 * n2
    return ny * nn**3 + 1.5 * ny * pairs**2 + pairs**3 / 3


def choose_elimination(n1: int, n2: int, ny: int) -> str:
    """ "pairs" where its flops are fewer by PAIRS_ADVANTAGE, else "side" (csrc/broja/joint.h's rule)."""
    return "pairs" if pairs_flops(n1, n2, ny) * PAIRS_ADVANTAGE < side_flops(n1, n2, ny) else "side"


def default_elimination(n1: int, n2: int, ny: int) -> str:
    """``choose_elimination``'s, unless FASTPID_ELIMINATION=side or =pairs forces
    one (as for the compiled ops: tests run both on the same joints)."""
    forced = os.environ.get("FASTPID_ELIMINATION", "")
    return forced if forced in ("side", "pairs") else choose_elimination(n1, n2, ny)


def factorize(w, h, s, support: Support, elimination: str, newton_blocks=newton_blocks):
    """The Newton matrix at (w, h, s), factorised once for every solve of the
    iteration: a ``SideFactor`` of ``newton_blocks`` ("side") or a
    ``PairsFactor`` ("pairs"); either has ``solve(rhs)``."""
    if elimination == "pairs":
        return PairsFactor(w, h, s, support)
    return SideFactor(w, h, s, support, newton_blocks)


def newton_direction(factor, w, h, s, residual, primal, r_c, support: Support, weighted_marginals=weighted_marginals):
    """Δλ1, Δλ2, Δw, Δh for the residuals r_d, r_p = g + h and a complementarity
    target r_c, with the Newton matrix's ``factorize``d form."""
    _, n1, n2, ny = s.shape
    r_c = r_c + w * primal
    lift1, lift2 = weighted_marginals(r_c / h, s)
    rhs = -torch.cat([(residual[0] + lift1).flatten(1), (residual[1] + lift2).flatten(1)], 1)
    step = factor.solve(rhs * support.free)
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
    return (lam1 * support.p1).flatten(1).sum(1) + (lam2 * support.p2).flatten(1).sum(1)


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
    return (
        support.cell
        * support.p1[:, :, None, :]
        * support.p2[:, None, :, :]
        / torch.where(py > 0, py, torch.ones_like(py))[:, None, None, :]
    )


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
    newton_blocks: Callable = newton_blocks
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


# The constants the compiled solver repeats, in the order of torch.ops.fastpid.broja_constants().
COMPILED_CONSTANTS = (
    "FRACTION_TO_BOUNDARY",
    "MAX_FRACTION_TO_BOUNDARY",
    "REGULARIZATION",
    "MAX_SHIFT_RAISES",
    "REFINEMENT_STEPS",
    "MAX_VIOLATION",
    "MAX_BACKTRACKS",
    "STALL_GAP",
    "INFEASIBILITY_CENTRING",
    "CERTIFY_ABOVE",
    "PAIRS_REFINEMENT_STEPS",
    "PAIRS_BLOCK_SHIFT",
    "PAIRS_SHIFT_FREE_NORM",
    "PAIRS_ADVANTAGE",
    "DEFAULT_MEMORY_GIB",
    "SIDE_RESCUE_BYTES",
)

SOLUTION_FIELDS = ("lam1", "lam2", "w", "iterations", "converged")


def memory_budget_bytes() -> float:
    """The memory a solve may take for its working set: FASTPID_MEMORY_GIB GiB
    (default DEFAULT_MEMORY_GIB), the budget of the compiled ops' workspace too."""
    setting = os.environ.get("FASTPID_MEMORY_GIB", "")
    try:
        gib = float(setting) if setting else DEFAULT_MEMORY_GIB
    except ValueError:
        raise ValueError(f"FASTPID_MEMORY_GIB must be a number of GiB, got {setting!r}") from None
    return (gib if gib > 0 else DEFAULT_MEMORY_GIB) * 2**30


def working_set_bytes(n1: int, n2: int, ny: int, elimination: str, itemsize: int = 8) -> int:
    """Bytes one n1 × n2 × ny joint takes in ``solve`` at its peak: the
    iteration's per-cell tensors and the live copies of its Newton system (the
    cross blocks and G, the Schur complement and its factor, or the per-y blocks
    and the capacitance matrix with the intermediates of its formation)."""
    cells, pairs, nn = n1 * n2 * ny, n1 * n2, n1 + n2
    if elimination == "pairs":
        system = 7 * ny * nn * nn + 3 * ny * pairs * nn + 8 * pairs * pairs
    else:
        kept = min(n1, n2) * ny
        system = 3 * pairs * ny * ny + 6 * kept * kept
    return int(ALLOCATOR_SLACK * itemsize * (CELL_COPIES * cells + system))


def solve(
    p: torch.Tensor,
    tol: float = 1e-8 * LN2,
    max_iter: int = 100,
    patience: int = PATIENCE,
    passes: Passes = TORCH_PASSES,
    elimination: str | None = None,
) -> Solution:
    """Reference ("torch") solve of a batch ``p`` of shape (B, n1, n2, ny), float64.

    A joint stops once its certified gap is at most ``tol`` (nats), or, once
    its gap is below STALL_GAP, after ``patience`` iterations without halving
    it (rounding error has then taken over).  The iterate with the smallest gap
    is returned.  ``passes`` computes the per-iteration passes over the cells
    (``Passes``; the "triton" backend gives fused kernels); ``elimination``
    ("side" or "pairs") forces how the Newton systems are solved, else
    ``default_elimination`` picks it; joints that the pair elimination leaves
    unconverged are solved again by the side elimination where their working
    set is at most SIDE_RESCUE_BYTES (csrc/cpu/per_joint.h does the same).
    A batch whose working set
    (``working_set_bytes``) exceeds the memory budget (``memory_budget_bytes``)
    is solved in chunks; a joint that alone exceeds it raises ValueError."""
    _, n1, n2, ny = p.shape
    elimination = elimination or default_elimination(n1, n2, ny)
    if elimination not in ("side", "pairs"):
        raise ValueError(f"elimination must be 'side' or 'pairs', got {elimination!r}")
    per_joint, budget = working_set_bytes(n1, n2, ny, elimination), memory_budget_bytes()
    if per_joint > budget:
        raise ValueError(
            f"a {n1}×{n2}×{ny} joint needs {per_joint / 2**30:.3g} GiB to solve ({elimination} elimination), "
            f"more than the memory budget of {budget / 2**30:.3g} GiB; set the environment variable "
            "FASTPID_MEMORY_GIB to raise it"
        )
    solution = in_chunks(
        lambda part: _solve_batch(part, tol, max_iter, patience, passes, elimination), p, int(budget // per_joint)
    )
    if elimination == "pairs" and working_set_bytes(n1, n2, ny, "side") <= SIDE_RESCUE_BYTES:
        stalled = (~solution.converged).nonzero()[:, 0]
        if len(stalled):
            again = solve(p[stalled], tol, max_iter, patience, passes, "side")
            for name in SOLUTION_FIELDS:
                getattr(solution, name)[stalled] = getattr(again, name)
    return solution


def in_chunks(solve_chunk, p: torch.Tensor, chunk: int) -> Solution:
    """``solve_chunk`` on the batch ``p`` in chunks of ``chunk`` joints (at least one),
    its Solutions concatenated."""
    chunk = max(1, chunk)
    parts = [solve_chunk(p[start : start + chunk]) for start in range(0, max(len(p), 1), chunk)]
    if len(parts) == 1:
        return parts[0]
    return Solution(*(torch.cat([getattr(part, name) for part in parts]) for name in SOLUTION_FIELDS))


def _solve_batch(p, tol, max_iter, patience, passes: Passes, elimination: str) -> Solution:
    """``solve`` on one chunk.  The joints still iterating form the working set:
    a joint leaves it once it stops, and every pass runs on the others only."""
    support = Support.of(p)
    lam1, lam2, w = analytic_start(support)
    h = -passes.pair_softmax(lam1, lam2, support)[0] + ~support.pair
    # Weighted central path w_k h_k = μ c_k with c_k = Q0(x1, x2): pair masses
    # span hundreds of orders of magnitude on skewed joints, and a uniform target
    # would drive the slack of a tiny pair to μ / w_k.
    weight = w * support.pair
    total_weight = weight.flatten(1).sum(1).clamp_min(torch.finfo(p.dtype).tiny)
    batch = p.shape[0]
    best = Solution(
        lam1.clone(),
        lam2.clone(),
        w.clone(),
        torch.zeros(batch, dtype=torch.int64, device=p.device),
        torch.zeros(batch, dtype=torch.bool, device=p.device),
    )
    best_gap = torch.full((batch,), float("inf"), dtype=p.dtype, device=p.device)
    stalled = torch.zeros(batch, dtype=torch.int64, device=p.device)
    far = CERTIFY_ABOVE * max(tol, STALL_GAP)
    index = torch.arange(batch, device=p.device)
    for iteration in range(max_iter + 1):
        g, s = passes.pair_softmax(lam1, lam2, support)
        complementarity = w * h * support.pair
        complementarity_sum = complementarity.flatten(1).sum(1)
        # Certified only where the gap can decide something (module docstring).
        take = ~(complementarity_sum > far) | (iteration == max_iter)
        done = torch.zeros_like(take)
        if take.any():
            _, _, gap = passes.certificate(lam1, lam2, w, support)
            improved = gap < best_gap[index] / 2
            better = take & (gap < best_gap[index])
            best_gap[index] = torch.where(better, gap, best_gap[index])
            chosen = index[better]
            best.lam1[chosen], best.lam2[chosen], best.w[chosen] = lam1[better], lam2[better], w[better]
            best.iterations[chosen] = iteration
            stalled[index] = torch.where(
                take, torch.where(gap.isnan(), patience, torch.where(improved, 0, stalled[index] + 1)), stalled[index]
            )
            done = (best_gap[index] <= tol) | ((stalled[index] >= patience) & (best_gap[index] <= STALL_GAP))
        if done.all() or iteration == max_iter:
            break
        if done.any():  # the stopped joints leave the working set
            keep = ~done
            index, lam1, lam2, w, h, g, s = (x[keep] for x in (index, lam1, lam2, w, h, g, s))
            weight, total_weight, complementarity, complementarity_sum = (
                x[keep] for x in (weight, total_weight, complementarity, complementarity_sum)
            )
            support = support.take(keep)
        rows, cols = passes.weighted_marginals(w, s)
        residual = (rows - support.p1, cols - support.p2)
        primal = (g + h) * support.pair
        mu = complementarity_sum / total_weight
        # One factorisation for the predictor and the corrector.
        factor = factorize(w, h, s, support, elimination, passes.newton_blocks)
        # Predictor: the affine-scaling direction (μ target 0).
        _, _, dw_a, dh_a = newton_direction(
            factor, w, h, s, residual, primal, -complementarity, support, passes.weighted_marginals
        )
        alpha_a = torch.minimum(max_step(w, dw_a), max_step(h, dh_a))
        w_a, h_a = w + alpha_a[:, None, None] * dw_a, h + alpha_a[:, None, None] * dh_a
        mu_a = (w_a * h_a * support.pair).flatten(1).sum(1) / total_weight
        sigma = (mu_a / mu.clamp_min(torch.finfo(p.dtype).tiny)).clamp(0, 1) ** 3
        # ... but no smaller than the marginal residual allows (docs/pid-math.md, "Infeasibility and centring").
        infeasibility = torch.maximum(residual[0].abs().flatten(1).amax(1), residual[1].abs().flatten(1).amax(1))
        floor = INFEASIBILITY_CENTRING * infeasibility / mu.clamp_min(torch.finfo(p.dtype).tiny)
        sigma = torch.maximum(sigma, floor.clamp(max=1))
        # Corrector: centring plus the second-order term of the predictor.
        r_c = (sigma * mu)[:, None, None] * weight - complementarity - dw_a * dh_a
        d1, d2, dw, dh = newton_direction(factor, w, h, s, residual, primal, r_c, support, passes.weighted_marginals)
        fraction = torch.clamp(1 - mu, min=FRACTION_TO_BOUNDARY, max=MAX_FRACTION_TO_BOUNDARY)
        alpha = fraction * torch.minimum(max_step(w, dw), max_step(h, dh))
        alpha = torch.nan_to_num(alpha, nan=0.0)
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
