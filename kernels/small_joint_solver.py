r"""One Triton program per joint: the whole BROJA iteration of ``fastpid.solver``
for small joints, the "triton" backend's solver up to SMALL_MAX_DUALS dual variables.

The fused passes of ``broja_triton`` leave the iteration in torch: every step of
every joint costs ~30 kernel launches and the host's bookkeeping, which is all
the time there is on batches of small joints.  Here one program runs one joint
from its start to its certificate, the iteration's state in registers:

    state (registers)          shape           per 5×5×5 joint (float64)
    P, s, Q, the cells          (I, J, Y)       125 cells
    λ1, λ2 and their steps      (I, Y), (J, Y)  25 + 25
    w, h, the pair slacks       (I, J)          25
    the Newton matrix, factor   (M, M)          50 × 50 (padded to 64 × 64)

with I, J, Y, M the sizes n1, n2, ny, m = (n1 + n2) ny padded to powers of two
(M at least 16, ``tl.dot``'s smallest side).  The Newton matrix is formed by two
``tl.dot`` products (DMMA in float64 on sm_80/sm_90) and factorised whole
(Jacobi scaling, Cholesky with the shift raised where it fails as in
``solver._cholesky_with_shift``, two refinement steps), column by column in
registers: at these sizes the whole matrix fits a register tile, where the
torch reference (``solver.SideFactor``) eliminates one side.  Register tiles
cannot be indexed by a computed position, so the places that regroup values
(cells → matrix entries, the (λ1, λ2) tiles ↔ one vector of m variables, the
factor's columns) go through a small per-joint scratch in global memory
(``scratch_size``: N + 2 n1 n2 + m + m² floats; it stays in L1/L2), fenced by
barriers.  The Triton pitfalls met on the way (float literals taken as float32,
tensors assigned under nested branches of a loop) are in docs/gpu.md.

Same steps, step rules, stopping rules and best-iterate bookkeeping as
``solver._solve_batch`` (the side elimination's matrix; the pair elimination is
for many classes, which are not small joints), so the iterates agree with the
torch reference's to rounding: tests/test_triton.py checks iterates after a
fixed number of steps and the iteration counts.  float64 only, like the solver.

Cost per Newton step of an m-variable joint: forming the matrix
~4 max(n1, n2) m² gathered loads (L1), its Cholesky factorisation ~m³ / 3 flops
and each of the 6 triangular-solve pairs ~2 m² (the column extractions from
the register tile cost ~m² compare-and-add each solve, the price of not
indexing registers); the cell passes (softmax, marginals, certificate) ~30 N.
Time is another matter: the factorisation and each solve are chains of m
dependent steps, one reduction deep each (bench/gpu_model.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastpid import solver

from . import build
from .broja_triton import _pow2, pair_softmax_tile

SMALL_MAX_DUALS = 128  # (n1 + n2) ny up to this: one program per joint
REGISTERS_PER_SM = 65536  # sm_80 and sm_90
PROGRAM_REGISTERS = 256  # per thread as allocated (the build's 220-255, bench/results/triton-build-2026-12-07.md)
TINY = torch.finfo(torch.float64).tiny
DOT_MIN = 16  # tl.dot's smallest operand side: the matrix tile and the pairs per product


def scratch_size(n1: int, n2: int, ny: int) -> int:
    """Floats of one program's scratch: s (N), w and c (2 K), a vector (m), the factor (m²)."""
    m = (n1 + n2) * ny
    return n1 * n2 * ny + 2 * n1 * n2 + m + m * m


def fits(n1: int, n2: int, ny: int) -> bool:
    """Whether joints of this shape are solved one per program (``solve``)."""
    return (n1 + n2) * ny <= SMALL_MAX_DUALS


@triton.jit
def _f64(value: tl.constexpr):
    """A Python float as a float64 scalar.  tl.maximum, tl.minimum and comparisons
    take a Python float constexpr as float32, rounded (arithmetic and tl.where keep
    it float64): 0.99 becomes 0.99000000954, which moved every step by 1e-8 against
    the torch solver.  A float argument arrives as float32 whatever its use."""
    return tl.full((), value, tl.float64)


@triton.jit
def _to_vector(x1, x2, layout):
    """The (λ1, λ2)-shaped tiles (I, Y), (J, Y) as one vector of the m variables.
    ``layout`` = (vector_ptr, at1, at2, in1, in2, r, in_m): the scratch vector, where
    each tile entry sits in it and which are in range, the vector's index and range."""
    vector_ptr, at1, at2, in1, in2, r, in_m = layout
    tl.debug_barrier()  # earlier reads of the scratch are done
    tl.store(vector_ptr + at1, x1, mask=in1)
    tl.store(vector_ptr + at2, x2, mask=in2)
    tl.debug_barrier()
    return tl.load(vector_ptr + r, mask=in_m, other=0.0)


@triton.jit
def _from_vector(vector, layout):
    """``_to_vector``'s inverse."""
    vector_ptr, at1, at2, in1, in2, r, in_m = layout
    tl.debug_barrier()
    tl.store(vector_ptr + r, vector, mask=in_m)
    tl.debug_barrier()
    return tl.load(vector_ptr + at1, mask=in1, other=0.0), tl.load(vector_ptr + at2, mask=in2, other=0.0)


@triton.jit
def _newton_matrix(s, w, c, free, cells, BLOCK_K: tl.constexpr):
    """``solver.newton_matrix``: M = Σ_k E_kᵀ [diag(q_k) + c_k s_k s_kᵀ] E_k on (λ1, λ2),
    q_k = w_k s_k, with the gauge's and the empty marginals' variables replaced
    by identity rows; variable r is λ1(r // ny, r % ny) below n1 ny, else
    λ2((r − n1 ny) // ny, r % ny).  As matrix products (tensor cores: DMMA in
    float64), BLOCK_K columns at a time into one accumulator:

        M = U diag(c) Uᵀ + V diag(q) Vᵀ,

    U (m × K) with column k = u_k = E_kᵀ s_k (s_k at pair k's variables, gathered
    from s in the scratch), V (m × N) with column (k, y) the pattern of pair k's
    two variables of target value y."""
    scratch_ptr, n1, n2, ny, r, in_m, at_cell, in_cell, at_pair, in_pair = cells
    w_ptr = scratch_ptr + n1 * n2 * ny
    c_ptr = w_ptr + n1 * n2
    tl.debug_barrier()
    tl.store(scratch_ptr + at_cell, s, mask=in_cell)
    tl.store(w_ptr + at_pair, w, mask=in_pair)
    tl.store(c_ptr + at_pair, c, mask=in_pair)
    tl.debug_barrier()
    side = (r >= n1 * ny)[:, None]  # λ2
    symbol = (tl.where(r >= n1 * ny, r - n1 * ny, r) // ny)[:, None]
    y = r % ny
    matrix = tl.zeros([r.shape[0], r.shape[0]], dtype=s.dtype)
    for start in range(0, n1 * n2, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        in_k = k < n1 * n2
        pattern = (
            in_m[:, None] & in_k[None, :] & tl.where(side, symbol == (k % n2)[None, :], symbol == (k // n2)[None, :])
        )
        u = tl.load(scratch_ptr + k[None, :] * ny + y[:, None], mask=pattern, other=0.0)
        matrix = tl.dot(u * tl.load(c_ptr + k, mask=in_k, other=0.0)[None, :], tl.trans(u), matrix)
    for start in range(0, n1 * n2 * ny, BLOCK_K):
        t = start + tl.arange(0, BLOCK_K)  # cell (k, y_t) = (t // ny, t % ny)
        in_t = t < n1 * n2 * ny
        k = t // ny
        pattern = in_m[:, None] & in_t[None, :] & (y[:, None] == (t % ny)[None, :])
        pattern = pattern & tl.where(side, symbol == (k % n2)[None, :], symbol == (k // n2)[None, :])
        q = tl.load(scratch_ptr + t, mask=in_t, other=0.0) * tl.load(w_ptr + k, mask=in_t, other=0.0)
        v = pattern.to(s.dtype)
        matrix = tl.dot(v * q[None, :], tl.trans(v), matrix)
    matrix = matrix * free[:, None] * free[None, :]
    return tl.where(r[:, None] == r[None, :], matrix + (1.0 - free)[:, None], matrix)


@triton.jit
def _cholesky(a, m, r, factor_ptr):
    """Lower Cholesky factor of the leading m × m block of the register tile a
    (right-looking), written column by column to factor_ptr (column k at k m);
    returns whether every pivot was positive."""
    tl.debug_barrier()  # earlier solves' reads of the factor are done
    ok = tl.full((), 1, tl.int32)
    # The diagonal kept apart, updated as the tile's is: the pivot is then read
    # alongside the column, not from it (one reduction deep, not two).
    diagonal = tl.sum(tl.where(r[:, None] == r[None, :], a, 0.0), axis=1)
    for k in range(m):
        column = tl.sum(tl.where(r[None, :] == k, a, 0.0), axis=1)
        pivot = tl.sum(tl.where(r == k, diagonal, 0.0), axis=0)
        ok = ok & (pivot > 0).to(tl.int32)
        column = tl.where(r >= k, column / tl.sqrt(tl.where(pivot > 0, pivot, 1.0)), 0.0)
        tl.store(factor_ptr + k * m + r, column, mask=r < m)
        a = a - column[:, None] * column[None, :]
        diagonal = diagonal - column * column
    tl.debug_barrier()
    return ok


@triton.jit
def _factorize(
    s,
    w,
    c,
    free,
    cells,
    factor_ptr,
    m,
    BLOCK_K: tl.constexpr,
    TINY: tl.constexpr,
    REGULARIZATION: tl.constexpr,
    MAX_SHIFT_RAISES: tl.constexpr,
):
    """The Newton matrix Jacobi-scaled and factorised whole with no shift, then
    REGULARIZATION raised ×100 while it fails (``solver._cholesky_with_shift``).
    An attempt that fails forms the matrix again (rare) rather than keeping a
    copy in registers through the first.  Returns the scale; the factor is at
    factor_ptr."""
    r = cells[4]
    shift = tl.zeros((), s.dtype)
    scale = tl.zeros([r.shape[0]], dtype=s.dtype)
    ok = tl.zeros((), tl.int32)
    attempt = 0
    while (attempt < MAX_SHIFT_RAISES) & (ok == 0):
        if attempt > 0:
            shift = tl.where(shift > 0, shift * 100.0, REGULARIZATION)
        matrix = _newton_matrix(s, w, c, free, cells, BLOCK_K)
        diagonal = r[:, None] == r[None, :]
        scale = 1.0 / tl.sqrt(tl.maximum(tl.sum(tl.where(diagonal, matrix, 0.0), axis=1), TINY))
        scaled = matrix * scale[:, None] * scale[None, :]
        ok = _cholesky(tl.where(diagonal, scaled + shift, scaled), m, r, factor_ptr)
        attempt += 1
    return scale


@triton.jit
def _cholesky_solve(factor_ptr, b, m, r):
    """x with L Lᵀ x = b, L the factor at factor_ptr: forward, then backward substitution."""
    # Each step is one link of a serial chain (bench/gpu_model.py: the chains bound
    # the program): one reduction per step, the pivot a scalar load.
    x = b
    for k in range(m):
        column = tl.load(factor_ptr + k * m + r, mask=r < m, other=0.0)
        xk = tl.sum(tl.where(r == k, x, 0.0), axis=0) / tl.load(factor_ptr + k * m + k)
        x = tl.where(r == k, xk, tl.where(r > k, x - column * xk, x))
    for step in range(m):
        k = m - 1 - step
        column = tl.load(factor_ptr + k * m + r, mask=r < m, other=0.0)
        residual = tl.sum(tl.where(r == k, x, tl.where(r > k, -column * x, 0.0)), axis=0)  # x_k − Σ_{i>k} L_ik x_i
        xk = residual / tl.load(factor_ptr + k * m + k)
        x = tl.where(r == k, xk, x)
    return x


@triton.jit
def _newton_product(x, s, w, c, free, layout):
    """M x without forming M (``solver.newton_product``), identity on the variables that are not free."""
    x1, x2 = _from_vector(x * free, layout)
    along = x1[:, None, :] + x2[None, :, :]
    slope = tl.sum(s * along, axis=2)
    per_cell = w[:, :, None] * s * along + (c * slope)[:, :, None] * s
    product = _to_vector(tl.sum(per_cell, axis=1), tl.sum(per_cell, axis=0), layout)
    return product * free + (1.0 - free) * x


@triton.jit
def _factor_solve(factor_ptr, scale, rhs, s, w, c, free, layout, m, REFINEMENT_STEPS: tl.constexpr):
    """The Jacobi-scaled system solved by the factor, refined against the
    unshifted matrix (its products from the cells, as the C++ solver's)."""
    r = layout[5]
    b = rhs * scale
    x = _cholesky_solve(factor_ptr, b, m, r)
    for _ in tl.static_range(REFINEMENT_STEPS):
        product = scale * _newton_product(scale * x, s, w, c, free, layout)
        x += _cholesky_solve(factor_ptr, b - product, m, r)
    return x * scale


@triton.jit
def _newton_direction(r_c, factor, iterate, residual, layout, REFINEMENT_STEPS: tl.constexpr):
    """``solver.newton_direction``: Δλ1, Δλ2, Δw, Δh for the complementarity target r_c,
    with factor = (factor_ptr, scale, m) of ``_factorize``, iterate = (w, h, s, c, free,
    pair, primal) and residual = the marginals' residuals (r1, r2)."""
    factor_ptr, scale, m = factor
    w, h, s, c, free, pair, primal = iterate
    residual1, residual2 = residual
    r_c = r_c + w * primal
    lifted = (r_c / h)[:, :, None] * s
    rhs = _to_vector(residual1 + tl.sum(lifted, axis=1), residual2 + tl.sum(lifted, axis=0), layout)
    step = _factor_solve(factor_ptr, scale, -rhs * free, s, w, c, free, layout, m, REFINEMENT_STEPS)
    d1, d2 = _from_vector(step, layout)
    slope = tl.sum(s * (d1[:, None, :] + d2[None, :, :]), axis=2)
    return d1, d2, tl.where(pair, (r_c + w * slope) / h, 0.0), tl.where(pair, -primal - slope, 0.0)


@triton.jit
def _max_step(value, delta):
    """``solver.max_step``: the largest α ≤ 1 keeping value + α delta ≥ 0."""
    ratio = tl.where(delta < 0, -value / tl.where(delta < 0, delta, -1.0), float("inf"))
    return tl.minimum(tl.min(tl.min(ratio, axis=1), axis=0), 1.0)


@triton.jit
def _xlogx(x):
    return x * tl.log(tl.where(x == 0, 1.0, x))  # xlogy(x, x)


@triton.jit
def _gap(lam1, lam2, w, g, s, p1, p2):
    """``solver.certificate``'s gap at an iterate whose pair softmax is (g, s): Q = w s
    rounded onto Δ_P, f(Q), and the dual at λ shifted to feasibility."""
    q = w[:, :, None] * s
    rows = tl.sum(q, axis=1)
    q = q * tl.where(rows > p1, p1 / tl.where(rows > p1, rows, 1.0), 1.0)[:, None, :]
    cols = tl.sum(q, axis=0)
    q = q * tl.where(cols > p2, p2 / tl.where(cols > p2, cols, 1.0), 1.0)[None, :, :]
    deficit1 = tl.maximum(p1 - tl.sum(q, axis=1), 0.0)
    deficit2 = tl.maximum(p2 - tl.sum(q, axis=0), 0.0)
    total = tl.sum(deficit1, axis=0)
    q = q + deficit1[:, None, :] * deficit2[None, :, :] / tl.where(total > 0, total, 1.0)[None, None, :]
    value = tl.sum(tl.sum(tl.sum(_xlogx(q), axis=2), axis=1), axis=0) - tl.sum(
        tl.sum(_xlogx(tl.sum(q, axis=2)), axis=1), axis=0
    )
    shift = tl.maximum(tl.max(g, axis=1), 0.0)  # feasible(): λ1 − max(0, max_x2 g)
    dual = tl.sum(tl.sum((lam1 - shift[:, None]) * p1, axis=1), axis=0) + tl.sum(tl.sum(lam2 * p2, axis=1), axis=0)
    return value - dual


@triton.jit
def _solve_kernel(
    p_ptr,
    lam1_ptr,
    lam2_ptr,
    w_ptr,
    iterations_ptr,
    converged_ptr,
    scratch_ptr,
    scratch_stride,
    limits_ptr,
    n1,
    n2,
    ny,
    max_iter,
    patience,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    TINY: tl.constexpr,
    FRACTION_TO_BOUNDARY: tl.constexpr,
    MAX_FRACTION_TO_BOUNDARY: tl.constexpr,
    REGULARIZATION: tl.constexpr,
    MAX_SHIFT_RAISES: tl.constexpr,
    REFINEMENT_STEPS: tl.constexpr,
    MAX_VIOLATION: tl.constexpr,
    MAX_BACKTRACKS: tl.constexpr,
    INFEASIBILITY_CENTRING: tl.constexpr,
    STALL_GAP: tl.constexpr,
):
    """``solver._solve_batch`` for joint program_id(0); its comments say why each step is as it is."""
    b = tl.program_id(0).to(tl.int64)
    m = (n1 + n2) * ny
    i = tl.arange(0, BLOCK_I)
    j = tl.arange(0, BLOCK_J)
    y = tl.arange(0, BLOCK_Y)
    r = tl.arange(0, BLOCK_M)
    in_m = r < m
    in1 = (i[:, None] < n1) & (y[None, :] < ny)
    in2 = (j[:, None] < n2) & (y[None, :] < ny)
    in_pair = (i[:, None] < n1) & (j[None, :] < n2)
    in_cell = in_pair[:, :, None] & (y[None, None, :] < ny)
    at1 = i[:, None] * ny + y[None, :]
    at2 = n1 * ny + j[:, None] * ny + y[None, :]
    at_pair = i[:, None] * n2 + j[None, :]
    at_cell = at_pair[:, :, None] * ny + y[None, None, :]
    scratch_ptr += b * scratch_stride
    tol = tl.load(limits_ptr)  # float64 from memory: a float argument would arrive as float32 (_f64)
    far = tl.load(limits_ptr + 1)
    vector_ptr = scratch_ptr + n1 * n2 * ny + 2 * n1 * n2
    factor_ptr = vector_ptr + m

    # Support and gauge (solver.Support.of): λ2 pinned at the heaviest x2 of every y.
    p = tl.load(p_ptr + b * n1 * n2 * ny + at_cell, mask=in_cell, other=0.0)
    p1 = tl.sum(p, axis=1)
    p2 = tl.sum(p, axis=0)
    on1, on2 = p1 > 0, p2 > 0
    cell = on1[:, None, :] & on2[None, :, :]
    pair = tl.max(cell.to(tl.int32), axis=2) > 0
    pinned = j[:, None] == tl.argmax(p2, axis=0, tie_break_left=True)[None, :]
    layout = (vector_ptr, at1, at2, in1, in2, r, in_m)  # the (λ1, λ2) tiles ↔ one vector (_to_vector)
    cells = (scratch_ptr, n1, n2, ny, r, in_m, at_cell, in_cell, at_pair, in_pair)  # for _newton_matrix
    free = _to_vector(on1.to(p.dtype), (on2 & ~pinned).to(p.dtype), layout)

    # The analytic start (solver.analytic_start) and the weighted central path.
    py = tl.sum(p1, axis=0)
    py_safe = tl.where(py > 0, py, 1.0)
    lam1 = tl.where(on1, tl.log(tl.where(on1, p1, 1.0)) - tl.log(py_safe)[None, :] - 1.0, 0.0)
    lam2 = tl.where(on2, tl.log(tl.where(on2, p2, 1.0)), 0.0)
    w = tl.sum(tl.where(cell, p1[:, None, :] * p2[None, :, :] / py_safe[None, None, :], 0.0), axis=2)
    g, s = pair_softmax_tile(lam1, lam2, cell, pair)
    h = tl.where(pair, -g, 1.0)
    weight = tl.where(pair, w, 0.0)
    total_weight = tl.maximum(tl.sum(tl.sum(weight, axis=1), axis=0), TINY)

    best_lam1, best_lam2, best_w = lam1, lam2, w
    best_gap = tl.full((), float("inf"), p.dtype)
    best_iteration = tl.zeros((), tl.int32)
    stalled = tl.zeros((), tl.int32)
    iteration = tl.zeros((), tl.int32)
    running = tl.full((), 1, tl.int32)
    while running == 1:
        g, s = pair_softmax_tile(lam1, lam2, cell, pair)
        complementarity = tl.where(pair, w * h, 0.0)
        complementarity_sum = tl.sum(tl.sum(complementarity, axis=1), axis=0)
        last = iteration == max_iter
        take = (~(complementarity_sum > far)) | last  # certified only where it can decide
        gap = tl.full((), float("nan"), p.dtype)
        if take:
            gap = _gap(lam1, lam2, w, g, s, p1, p2)
        # Selections, not assignments under `if`: the compiler does not carry tensors
        # assigned in nested branches of a loop (the interpreter does).
        better = take & (gap < best_gap)
        best_lam1 = tl.where(better, lam1, best_lam1)
        best_lam2 = tl.where(better, lam2, best_lam2)
        best_w = tl.where(better, w, best_w)
        best_iteration = tl.where(better, iteration, best_iteration)
        improved = gap < best_gap / 2
        best_gap = tl.where(better, gap, best_gap)
        stalled = tl.where(take, tl.where(gap != gap, patience, tl.where(improved, 0, stalled + 1)), stalled)
        done = (best_gap <= tol) | ((stalled >= patience) & (best_gap <= _f64(STALL_GAP)))
        running = tl.where(done | last, 0, 1)
        if running == 1:
            rows = tl.sum(w[:, :, None] * s, axis=1)
            cols = tl.sum(w[:, :, None] * s, axis=0)
            residual1, residual2 = rows - p1, cols - p2
            primal = tl.where(pair, g + h, 0.0)
            mu = complementarity_sum / total_weight
            # One factorisation for the predictor and the corrector.
            c = tl.where(pair, w / h - w, 0.0)
            scale = _factorize(s, w, c, free, cells, factor_ptr, m, BLOCK_K, TINY, REGULARIZATION, MAX_SHIFT_RAISES)

            # The predictor, the affine-scaling direction (μ target 0), then the corrector:
            # centring plus the predictor's second-order term.
            factor = (factor_ptr, scale, m)
            iterate = (w, h, s, c, free, pair, primal)
            residual = (residual1, residual2)
            target = -complementarity
            for corrector in tl.static_range(2):
                d1, d2, dw, dh = _newton_direction(target, factor, iterate, residual, layout, REFINEMENT_STEPS)
                if corrector == 0:
                    alpha_a = tl.minimum(_max_step(w, dw), _max_step(h, dh))
                    mu_a = tl.sum(tl.sum(tl.where(pair, (w + alpha_a * dw) * (h + alpha_a * dh), 0.0), axis=1), axis=0)
                    sigma = tl.minimum(tl.maximum(mu_a / total_weight / tl.maximum(mu, TINY), 0.0), 1.0)
                    sigma = sigma * sigma * sigma
                    infeasibility = tl.maximum(
                        tl.max(tl.max(tl.abs(residual1), axis=1), axis=0),
                        tl.max(tl.max(tl.abs(residual2), axis=1), axis=0),
                    )
                    centring = INFEASIBILITY_CENTRING * infeasibility / tl.maximum(mu, TINY)
                    sigma = tl.maximum(sigma, tl.minimum(centring, 1.0))
                    target = sigma * mu * weight - complementarity - dw * dh
            fraction = tl.minimum(tl.maximum(1.0 - mu, _f64(FRACTION_TO_BOUNDARY)), _f64(MAX_FRACTION_TO_BOUNDARY))
            alpha = fraction * tl.minimum(_max_step(w, dw), _max_step(h, dh))
            alpha = tl.where(alpha == alpha, alpha, 0.0)

            # Safeguard: halve steps that take λ further out than it is or than MAX_VIOLATION.
            allowed = tl.maximum(tl.max(tl.max(g, axis=1), axis=0), _f64(MAX_VIOLATION))
            ok = tl.zeros((), tl.int32)
            tries = 0
            while (tries < MAX_BACKTRACKS) & (ok == 0):
                g_new, _ = pair_softmax_tile(lam1 + alpha * d1, lam2 + alpha * d2, cell, pair)
                ok = (tl.sum(tl.sum((~(g_new <= allowed)).to(tl.int32), axis=1), axis=0) == 0).to(tl.int32)
                alpha = tl.where(ok == 1, alpha, alpha / 2)
                tries += 1
            alpha = tl.where(ok == 1, alpha, 0.0)
            lam1 += alpha * d1
            lam2 += alpha * d2
            w += alpha * dw
            h += alpha * dh
            iteration += 1

    tl.store(lam1_ptr + b * n1 * ny + at1, best_lam1, mask=in1)
    tl.store(lam2_ptr + b * n2 * ny + (at2 - n1 * ny), best_lam2, mask=in2)
    tl.store(w_ptr + b * n1 * n2 + at_pair, best_w, mask=in_pair)
    tl.store(iterations_ptr + b, best_iteration.to(tl.int64))
    tl.store(converged_ptr + b, (best_gap <= tol).to(tl.int8))


def solve(p: torch.Tensor, tol: float, max_iter: int, patience: int) -> solver.Solution:
    """``solver.solve`` on a float64 batch of joints (B, n1, n2, ny) with
    ``fits(n1, n2, ny)``, one program per joint; batches whose scratch exceeds
    the memory budget (``solver.memory_budget_bytes``) run in chunks."""
    _, n1, n2, ny = p.shape
    if not fits(n1, n2, ny):
        raise ValueError(
            f"{n1}×{n2}×{ny} joints have (n1 + n2) ny = {(n1 + n2) * ny} dual variables, "
            f"more than the {SMALL_MAX_DUALS} that one program solves"
        )
    if p.dtype != torch.float64:
        raise ValueError(f"the joints must be float64, got {p.dtype}")
    chunk = int(solver.memory_budget_bytes() // (8 * scratch_size(n1, n2, ny)))
    return solver.in_chunks(lambda part: _solve_chunk(part, tol, max_iter, patience), p, chunk)


def _solve_chunk(p: torch.Tensor, tol: float, max_iter: int, patience: int) -> solver.Solution:
    p = p.contiguous()
    batch, n1, n2, ny = p.shape
    m = (n1 + n2) * ny
    lam1 = torch.empty((batch, n1, ny), dtype=p.dtype, device=p.device)
    lam2 = torch.empty((batch, n2, ny), dtype=p.dtype, device=p.device)
    w = torch.empty((batch, n1, n2), dtype=p.dtype, device=p.device)
    iterations = torch.empty((batch,), dtype=torch.int64, device=p.device)
    converged = torch.empty((batch,), dtype=torch.int8, device=p.device)
    scratch = torch.empty((batch * scratch_size(n1, n2, ny),), dtype=p.dtype, device=p.device)
    if batch:
        _solve_kernel[(batch,)](
            p,
            lam1,
            lam2,
            w,
            iterations,
            converged,
            scratch,
            scratch_size(n1, n2, ny),
            torch.tensor([tol, solver.CERTIFY_ABOVE * max(tol, solver.STALL_GAP)], dtype=p.dtype, device=p.device),
            n1,
            n2,
            ny,
            max_iter,
            patience,
            **_constants(n1, n2, ny),
            **_launch_options(m),
        )
    return solver.Solution(lam1, lam2, w, iterations, converged.bool())


def _constants(n1: int, n2: int, ny: int) -> dict:
    """The kernel's compile-time arguments for n1 × n2 × ny joints: tile sizes and the solver's constants."""
    return dict(
        BLOCK_I=_pow2(n1),
        BLOCK_J=_pow2(n2),
        BLOCK_Y=_pow2(ny),
        BLOCK_M=matrix_tile((n1 + n2) * ny),
        BLOCK_K=DOT_MIN,
        TINY=TINY,
        FRACTION_TO_BOUNDARY=solver.FRACTION_TO_BOUNDARY,
        MAX_FRACTION_TO_BOUNDARY=solver.MAX_FRACTION_TO_BOUNDARY,
        REGULARIZATION=solver.REGULARIZATION,
        MAX_SHIFT_RAISES=solver.MAX_SHIFT_RAISES,
        REFINEMENT_STEPS=solver.REFINEMENT_STEPS,
        MAX_VIOLATION=solver.MAX_VIOLATION,
        MAX_BACKTRACKS=solver.MAX_BACKTRACKS,
        INFEASIBILITY_CENTRING=solver.INFEASIBILITY_CENTRING,
        STALL_GAP=solver.STALL_GAP,
    )


def matrix_tile(m: int) -> int:
    """The side of the register tile that holds the m × m Newton matrix."""
    return max(DOT_MIN, _pow2(m))


def _launch_options(m: int) -> dict:
    # One stage: nothing to pipeline, the loops carry their state.
    return dict(num_warps=num_warps(matrix_tile(m)), num_stages=1)


def num_warps(block_m: int) -> int:
    """Warps per program: one warp for 16 × 16 matrix tiles (its reductions stay
    within the warp: no shared memory, no barriers); 4 for 32 × 32, then one per
    512 of the tile's float64 entries (8 at 64 × 64, 16 at 128 × 128).  Measured
    on sm_80 and sm_90: no register spills up to 32 × 32 tiles
    (bench/results/triton-build-2026-12-07.md, tests/test_triton.py)."""
    return 1 if block_m <= DOT_MIN else max(4, min(16, block_m * block_m // 512))


def resident_programs(device: torch.device, n1: int, n2: int, ny: int) -> int | None:
    """Programs for n1 × n2 × ny joints that ``device`` runs at once (one wave): its
    multiprocessors × the programs the registers allow on each; None off CUDA."""
    if device.type != "cuda":
        return None
    properties = torch.cuda.get_device_properties(device)
    registers = getattr(properties, "regs_per_multiprocessor", REGISTERS_PER_SM)
    warps = num_warps(matrix_tile((n1 + n2) * ny))
    return properties.multi_processor_count * max(1, registers // (PROGRAM_REGISTERS * 32 * warps))


def compile_for(n1: int, n2: int, ny: int, capability: int):
    """The kernel for n1 × n2 × ny joints compiled ahead of time for an NVIDIA GPU of
    compute capability ``capability`` (80, 90, ...), with no GPU needed
    (``build.compile_kernel``)."""
    signature = dict.fromkeys(("p_ptr", "lam1_ptr", "lam2_ptr", "w_ptr", "scratch_ptr", "limits_ptr"), "*fp64")
    signature.update(iterations_ptr="*i64", converged_ptr="*i8")
    # Python ints as Triton's launcher passes them: i32.
    signature.update(dict.fromkeys(("scratch_stride", "n1", "n2", "ny", "max_iter", "patience"), "i32"))
    constants = _constants(n1, n2, ny)
    signature.update(dict.fromkeys(constants, "constexpr"))
    return build.compile_kernel(_solve_kernel, signature, constants, _launch_options((n1 + n2) * ny), capability)


def build_evidence(n1: int, n2: int, ny: int, capability: int) -> dict:
    """``build.evidence`` of ``compile_for``'s kernel, with its matrix tile and warps."""
    tile = matrix_tile((n1 + n2) * ny)
    return {**build.evidence(compile_for(n1, n2, ny, capability)), "matrix_tile": tile, "num_warps": num_warps(tile)}
