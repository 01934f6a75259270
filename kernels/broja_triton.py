r"""Fused Triton kernels for the passes of the BROJA iteration (the "triton" backend).

The iteration is ``fastpid.solver.solve``'s, line for line; this module only
replaces its passes over the (B, n1, n2, ny) cells (``solver.Passes``), each a
chain of unfused torch ops with N-sized temporaries, by one kernel that reads
its inputs once and writes its outputs once:

    pass                 torch (solver.py), aten ops per call          Triton here
    pair_softmax          9 (logsumexp and softmax among them)          _pair_softmax_kernel
    weighted_marginals    3 (w·s, two sums)                             _weighted_marginals_kernel
    newton_blocks        12 ((B, n1, n2, ny, ny) cross blocks, sums)    _newton_blocks_kernel
    certificate          60 (the pair softmax twice, rounding, f(Q),    _certificate_kernel
                             the feasibility shift, the dual)
    backward             ~25 (decomposition.envelope_gradient)                   3 sums + _envelope_gradient_kernel
                                                                        + the projection (envelope_gradient)

The Newton system's factorisation and solves (``solver.SideFactor``), the step lengths and the
bookkeeping stay in torch.  Every kernel takes float32 or float64 (it computes
in its inputs' dtype), masks its loads to the true sizes (no power-of-two
requirement) and reads the support as P1 > 0 and P2 > 0, as
``solver.Support.of`` defines it: cell(x1, x2, y) = [P1(x1, y) > 0][P2(x2, y) > 0].

Costs per call (``costs`` evaluates them), for a batch of B joints: N = B n1 n2 ny
cells, K = B n1 n2 pairs, L = B (n1 + n2) ny dual variables, m = (n1 + n2) ny
per joint, b bytes per float (8 in float64); "transcendentals" (exp, log) are
counted apart from flops; bytes are DRAM traffic assuming each program's loads
are read once (the formulas are for joints that fit one tile: n1 n2 ny ≤ TILE
after padding to powers of two; larger ones reread λ and P per tile).

Needs a CUDA device, or ``TRITON_INTERPRET=1`` set before ``triton`` is first
imported in the process (Triton's interpreter then runs the kernels on CPU
tensors, slowly: for tests).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastpid import solver

TILE = 2048  # elements per program tile in the cell-wise kernels
CERTIFICATE_MAX_PAIRS = 128 * 128  # n1 × n2 tile (padded) of one certificate program
BLOCK_Y_MAX = 32  # classes a side of one tile of the Newton blocks (_newton_blocks_kernel)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


@triton.jit
def pair_softmax_tile(lam1, lam2, cell, pair):
    """g (I, J) and s (I, J, Y) of ``solver.pair_softmax`` from register tiles λ1 (I, Y),
    λ2 (J, Y) and the cell and pair masks (False off the joint)."""
    z = lam1[:, None, :] + lam2[None, :, :]
    top = tl.where(pair, tl.max(tl.where(cell, z, float("-inf")), axis=2), 0.0)
    e = tl.where(cell, tl.exp(z - top[:, :, None]), 0.0)
    total = tl.where(pair, tl.sum(e, axis=2), 1.0)
    return tl.where(pair, tl.log(total) + top, 0.0), e / total[:, :, None]


@triton.jit
def _pair_softmax_kernel(
    lam1_ptr,
    lam2_ptr,
    p1_ptr,
    p2_ptr,
    g_ptr,
    s_ptr,
    n1,
    n2,
    ny,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_Y: tl.constexpr,
):
    """One program per joint and tile of BLOCK_I × BLOCK_J pairs, all ny targets."""
    b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)
    y = tl.arange(0, BLOCK_Y)
    in1 = (i[:, None] < n1) & (y[None, :] < ny)
    in2 = (j[:, None] < n2) & (y[None, :] < ny)
    at1 = b * n1 * ny + i[:, None] * ny + y[None, :]
    at2 = b * n2 * ny + j[:, None] * ny + y[None, :]
    lam1 = tl.load(lam1_ptr + at1, mask=in1, other=0.0)
    lam2 = tl.load(lam2_ptr + at2, mask=in2, other=0.0)
    on1 = tl.load(p1_ptr + at1, mask=in1, other=0.0) > 0
    on2 = tl.load(p2_ptr + at2, mask=in2, other=0.0) > 0
    cell = on1[:, None, :] & on2[None, :, :]  # [I, J, Y], False off the tensor
    pair = tl.max(cell.to(tl.int32), axis=2) > 0
    g, s = pair_softmax_tile(lam1, lam2, cell, pair)
    at_pair = (b * n1 + i[:, None]) * n2 + j[None, :]
    in_pair = (i[:, None] < n1) & (j[None, :] < n2)
    tl.store(g_ptr + at_pair, g, mask=in_pair)
    tl.store(s_ptr + at_pair[:, :, None] * ny + y[None, None, :], s, mask=in_pair[:, :, None] & (y[None, None, :] < ny))


def pair_softmax(lam1, lam2, support: solver.Support):
    r"""``solver.pair_softmax``, fused: g_k = log Σ_y exp(λ1(x1, y) + λ2(x2, y)) over
    the pair's cells and s_k = softmax_y (0 off the cells); g = 0 and s = 0 on
    pairs without cells.

    One kernel, grid (B, ⌈n1/I⌉, ⌈n2/J⌉): a program per joint and tile of I × J
    pairs with all ny targets.  Bytes: reads λ1, λ2, P1, P2 (2 b L), writes s and g
    (b (N + K)).  Flops: ~5 N (add, max, subtract, sum, divide); transcendentals:
    N exp + K log.  The torch pass writes and rereads ~6 N-sized temporaries."""
    lam1, lam2 = lam1.contiguous(), lam2.contiguous()
    batch, n1, ny = lam1.shape
    n2 = lam2.shape[1]
    g = torch.empty((batch, n1, n2), dtype=lam1.dtype, device=lam1.device)
    s = torch.empty((batch, n1, n2, ny), dtype=lam1.dtype, device=lam1.device)
    block_y = _pow2(ny)
    block_j = min(_pow2(n2), max(1, TILE // block_y))
    block_i = min(_pow2(n1), max(1, TILE // (block_y * block_j)))
    grid = (batch, triton.cdiv(n1, block_i), triton.cdiv(n2, block_j))
    _pair_softmax_kernel[grid](
        lam1,
        lam2,
        support.p1.contiguous(),
        support.p2.contiguous(),
        g,
        s,
        n1,
        n2,
        ny,
        BLOCK_I=block_i,
        BLOCK_J=block_j,
        BLOCK_Y=block_y,
    )
    return g, s


@triton.jit
def _weighted_marginals_kernel(
    weight_ptr,
    s_ptr,
    rows_ptr,
    cols_ptr,
    n1,
    n2,
    ny,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_Y: tl.constexpr,
):
    """One program per joint and block of BLOCK_J x2 symbols; loops over x1 in
    blocks of BLOCK_I.  Column sums are complete in the program; row sums are
    partial over its x2 block (rows_ptr: (B, ⌈n2/J⌉, n1, ny))."""
    b = tl.program_id(0).to(tl.int64)
    jb = tl.program_id(1)
    blocks = tl.num_programs(1)
    j = jb * BLOCK_J + tl.arange(0, BLOCK_J)
    y = tl.arange(0, BLOCK_Y)
    cols = tl.zeros([BLOCK_J, BLOCK_Y], dtype=s_ptr.dtype.element_ty)
    for i0 in range(0, n1, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        in_pair = (i[:, None] < n1) & (j[None, :] < n2)
        at_pair = (b * n1 + i[:, None]) * n2 + j[None, :]
        weight = tl.load(weight_ptr + at_pair, mask=in_pair, other=0.0)
        s = tl.load(
            s_ptr + at_pair[:, :, None] * ny + y[None, None, :],
            mask=in_pair[:, :, None] & (y[None, None, :] < ny),
            other=0.0,
        )
        q = weight[:, :, None] * s
        cols += tl.sum(q, axis=0)
        rows = tl.sum(q, axis=1)
        tl.store(
            rows_ptr + ((b * blocks + jb) * n1 + i[:, None]) * ny + y[None, :],
            rows,
            mask=(i[:, None] < n1) & (y[None, :] < ny),
        )
    tl.store(cols_ptr + (b * n2 + j[:, None]) * ny + y[None, :], cols, mask=(j[:, None] < n2) & (y[None, :] < ny))


def weighted_marginals(weight, s):
    r"""``solver.weighted_marginals``, fused: (Σ_x2 weight_k s_k(y), Σ_x1 weight_k s_k(y)),
    the two marginals of Q = weight · s without forming Q.

    One kernel, grid (B, ⌈n2/J⌉); where n2 > J (n2 ny > TILE) its partial row sums
    are added by torch.  Bytes: reads s and the weight (b (N + K)), writes the
    marginals (b L).  Flops: 3 N (product, two sums).  The torch pass writes and
    rereads Q (3 b N more)."""
    weight, s = weight.contiguous(), s.contiguous()
    batch, n1, n2, ny = s.shape
    block_y = _pow2(ny)
    block_j = min(_pow2(n2), max(1, TILE // block_y))
    block_i = min(_pow2(n1), max(1, TILE // (block_y * block_j)))
    blocks = triton.cdiv(n2, block_j)
    rows = torch.empty((batch, blocks, n1, ny), dtype=s.dtype, device=s.device)
    cols = torch.empty((batch, n2, ny), dtype=s.dtype, device=s.device)
    _weighted_marginals_kernel[(batch, blocks)](
        weight, s, rows, cols, n1, n2, ny, BLOCK_I=block_i, BLOCK_J=block_j, BLOCK_Y=block_y
    )
    return (rows[:, 0] if blocks == 1 else rows.sum(1)), cols


@triton.jit
def _newton_blocks_kernel(
    w_ptr,
    h_ptr,
    s_ptr,
    free_ptr,
    block1_ptr,
    block2_ptr,
    cross_ptr,
    n1,
    n2,
    ny,
    BLOCK_K: tl.constexpr,
    BLOCK_Y: tl.constexpr,
):
    """One program per joint, symbol and BLOCK_Y × BLOCK_Y tile (y, z) of the
    ny × ny blocks: x1 = a < n1 writes that tile of the cross blocks of its pairs
    (x1, ·) and of their sum, its diagonal block; x2 = a − n1 sums the cross
    blocks of its pairs (·, x2) into its own, without storing them again.  It
    loops over the other variable in blocks of BLOCK_K."""
    b = tl.program_id(0).to(tl.int64)
    a = tl.program_id(1)
    tiles = tl.cdiv(ny, BLOCK_Y)
    second = a >= n1
    m = (n1 + n2) * ny
    # Pair (own symbol, other symbol k) sits at pair_base + k * pair_stride.
    pair_base = tl.where(second, b * n1 * n2 + (a - n1), (b * n1 + a) * n2)
    pair_stride = tl.where(second, n2, 1)
    others = tl.where(second, n1, n2)
    y = tl.program_id(2) // tiles * BLOCK_Y + tl.arange(0, BLOCK_Y)
    z = tl.program_id(2) % tiles * BLOCK_Y + tl.arange(0, BLOCK_Y)
    in_y, in_z = y < ny, z < ny
    eye = y[:, None] == z[None, :]
    free_y = tl.load(free_ptr + b * m + a * ny + y, mask=in_y, other=0.0)
    free_z = tl.load(free_ptr + b * m + a * ny + z, mask=in_z, other=0.0)
    diag_q = tl.zeros([BLOCK_Y], dtype=s_ptr.dtype.element_ty)
    diag_outer = tl.zeros([BLOCK_Y, BLOCK_Y], dtype=s_ptr.dtype.element_ty)
    for k0 in range(0, others, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        in_k = k < others
        at = pair_base + k * pair_stride
        w = tl.load(w_ptr + at, mask=in_k, other=0.0)
        h = tl.load(h_ptr + at, mask=in_k, other=1.0)
        s_y = tl.load(s_ptr + at[:, None] * ny + y[None, :], mask=in_k[:, None] & in_y[None, :], other=0.0)
        s_z = tl.load(s_ptr + at[:, None] * ny + z[None, :], mask=in_k[:, None] & in_z[None, :], other=0.0)
        q = w[:, None] * s_y
        outer = ((w / h - w)[:, None] * s_y)[:, :, None] * s_z[:, None, :]  # [K, Y, Z]
        diag_q += tl.sum(q, axis=0)
        diag_outer += tl.sum(outer, axis=0)
        if not second:
            cross = tl.where(eye[None, :, :], q[:, :, None], 0.0) + outer
            free_col = tl.load(
                free_ptr + b * m + (n1 + k[:, None]) * ny + z[None, :], mask=in_k[:, None] & in_z[None, :], other=0.0
            )
            cross = cross * free_y[None, :, None] * free_col[:, None, :]
            tl.store(
                cross_ptr + ((at[:, None, None] * ny + y[None, :, None]) * ny + z[None, None, :]),
                cross,
                mask=in_k[:, None, None] & in_y[None, :, None] & in_z[None, None, :],
            )
    block = tl.where(eye, diag_q[:, None], 0.0) + diag_outer
    block = block * free_y[:, None] * free_z[None, :] + tl.where(eye, 1.0 - free_y[:, None], 0.0)
    own = tl.where(second, (b * n2 + a - n1) * ny * ny, (b * n1 + a) * ny * ny)
    at_block = own + y[:, None] * ny + z[None, :]
    in_block = in_y[:, None] & in_z[None, :]
    if second:
        tl.store(block2_ptr + at_block, block, mask=in_block)
    else:
        tl.store(block1_ptr + at_block, block, mask=in_block)


def newton_blocks(w, h, s, support: solver.Support):
    r"""``solver.newton_blocks``, fused: the Newton matrix's diagonal blocks
    (B, n1, ny, ny) and (B, n2, ny, ny) and cross blocks (B, n1, n2, ny, ny), gauge
    pinned.  Cross block (x1, x2): diag q_k + (w_k/h_k − w_k) s_k s_kᵀ, q_k = w_k s_k;
    the diagonal blocks are its sums over the other variable.

    One kernel, grid (B, n1 + n2, tiles²): a program per joint, symbol and tile
    of the ny × ny blocks, tiles of at most BLOCK_Y_MAX classes a side (see
    ``_newton_blocks_kernel``).  Bytes: writes b N ny (the cross blocks, once) +
    b L ny (diagonal blocks); reads s, w and h once per side and tile row and the
    free mask: 4 b N + 4 b K for up to BLOCK_Y_MAX classes.  Flops: ~8 N ny (per
    entry and side: the rank-one product and its block sum; the cross blocks'
    diagonal add and two free-mask products once).  The torch pass materialises
    the outer products, the cross blocks and their masked copy and the sums
    (~6 b N ny written and read)."""
    w, h, s = w.contiguous(), h.contiguous(), s.contiguous()
    batch, n1, n2, ny = s.shape
    free = support.free.to(s.dtype).contiguous()
    block1 = torch.empty((batch, n1, ny, ny), dtype=s.dtype, device=s.device)
    block2 = torch.empty((batch, n2, ny, ny), dtype=s.dtype, device=s.device)
    cross = torch.empty((batch, n1, n2, ny, ny), dtype=s.dtype, device=s.device)
    block_y = min(_pow2(ny), BLOCK_Y_MAX)
    block_k = min(_pow2(max(n1, n2)), max(1, TILE // (block_y * block_y)))
    tiles = triton.cdiv(ny, block_y)
    # Eight warps for the widest tile: with four the accumulator and a tile of outer
    # products spill on sm_80 (bench/results/triton-build-2026-12-07-blocks.md).
    _newton_blocks_kernel[(batch, n1 + n2, tiles * tiles)](
        w,
        h,
        s,
        free,
        block1,
        block2,
        cross,
        n1,
        n2,
        ny,
        BLOCK_K=block_k,
        BLOCK_Y=block_y,
        num_warps=4 if block_y < BLOCK_Y_MAX else 8,
    )
    return block1, block2, cross


@triton.jit
def _certificate_kernel(
    lam1_ptr,
    lam2_ptr,
    w_ptr,
    p1_ptr,
    p2_ptr,
    q_ptr,
    value_ptr,
    gap_ptr,
    n1,
    n2,
    ny,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """One program per joint, holding its n1 × n2 pairs; three sweeps over y:
    (1) max_y of λ1 + λ2 on the cells, (2) Σ_y exp, hence g and the feasibility
    shift, (3) s, Q = w s, the rounding onto Δ_P (per y), f(Q)'s sums and the dual."""
    b = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_I)
    j = tl.arange(0, BLOCK_J)
    in_i, in_j = i < n1, j < n2
    in_pair = in_i[:, None] & in_j[None, :]
    at_pair = (b * n1 + i[:, None]) * n2 + j[None, :]
    at1 = b * n1 * ny + i * ny
    at2 = b * n2 * ny + j * ny
    dtype = w_ptr.dtype.element_ty
    top = tl.full([BLOCK_I, BLOCK_J], float("-inf"), dtype=dtype)
    cells = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.int32)
    for t in range(ny):
        lam1 = tl.load(lam1_ptr + at1 + t, mask=in_i, other=0.0)
        lam2 = tl.load(lam2_ptr + at2 + t, mask=in_j, other=0.0)
        cell = (tl.load(p1_ptr + at1 + t, mask=in_i, other=0.0) > 0)[:, None] & (
            tl.load(p2_ptr + at2 + t, mask=in_j, other=0.0) > 0
        )[None, :]
        top = tl.where(cell, tl.maximum(top, lam1[:, None] + lam2[None, :]), top)
        cells += cell.to(tl.int32)
    pair = cells > 0
    top = tl.where(pair, top, 0.0)
    total = tl.zeros([BLOCK_I, BLOCK_J], dtype=dtype)
    for t in range(ny):
        lam1 = tl.load(lam1_ptr + at1 + t, mask=in_i, other=0.0)
        lam2 = tl.load(lam2_ptr + at2 + t, mask=in_j, other=0.0)
        cell = (tl.load(p1_ptr + at1 + t, mask=in_i, other=0.0) > 0)[:, None] & (
            tl.load(p2_ptr + at2 + t, mask=in_j, other=0.0) > 0
        )[None, :]
        total += tl.where(cell, tl.exp(lam1[:, None] + lam2[None, :] - top), 0.0)
    total = tl.where(pair, total, 1.0)
    g = tl.where(pair, tl.log(total) + top, 0.0)
    shift = tl.maximum(tl.max(g, axis=1), 0.0)  # feasible(): λ1 − max(0, max_x2 g)
    w = tl.load(w_ptr + at_pair, mask=in_pair, other=0.0)
    xlogx = tl.zeros([BLOCK_I], dtype=dtype)
    dual1 = tl.zeros([BLOCK_I], dtype=dtype)
    dual2 = tl.zeros([BLOCK_J], dtype=dtype)
    mass = tl.zeros([BLOCK_I, BLOCK_J], dtype=dtype)
    for t in range(ny):
        lam1 = tl.load(lam1_ptr + at1 + t, mask=in_i, other=0.0)
        lam2 = tl.load(lam2_ptr + at2 + t, mask=in_j, other=0.0)
        p1 = tl.load(p1_ptr + at1 + t, mask=in_i, other=0.0)
        p2 = tl.load(p2_ptr + at2 + t, mask=in_j, other=0.0)
        cell = (p1 > 0)[:, None] & (p2 > 0)[None, :]
        s = tl.where(cell, tl.exp(lam1[:, None] + lam2[None, :] - top), 0.0) / total
        q = w * s
        # round_to_polytope, target value t: scale rows, then columns, down to
        # P1, P2; then add the rank-one deficit.
        rows = tl.sum(q, axis=1)
        q = q * tl.where(rows > p1, p1 / tl.where(rows > p1, rows, 1.0), 1.0)[:, None]
        cols = tl.sum(q, axis=0)
        q = q * tl.where(cols > p2, p2 / tl.where(cols > p2, cols, 1.0), 1.0)[None, :]
        deficit1 = tl.maximum(p1 - tl.sum(q, axis=1), 0.0)
        deficit2 = tl.maximum(p2 - tl.sum(q, axis=0), 0.0)
        norm = tl.sum(deficit1, axis=0)
        norm = tl.where(norm > 0, norm, 1.0)
        q = q + deficit1[:, None] * deficit2[None, :] / norm
        tl.store(q_ptr + at_pair * ny + t, q, mask=in_pair)
        xlogx += tl.sum(q * tl.log(tl.where(q == 0, 1.0, q)), axis=1)  # xlogy(q, q)
        mass += q
        dual1 += (lam1 - shift) * p1
        dual2 += lam2 * p2
    mass = mass * tl.log(tl.where(mass == 0, 1.0, mass))
    value = tl.sum(xlogx, axis=0) - tl.sum(tl.sum(mass, axis=1), axis=0)
    dual = tl.sum(dual1, axis=0) + tl.sum(dual2, axis=0)
    tl.store(value_ptr + b, value)
    tl.store(gap_ptr + b, value - dual)


def certificate(lam1, lam2, w, support: solver.Support):
    r"""``solver.certificate``, fused: s = softmax_y(λ1 + λ2), Q = w s rounded onto
    Δ_P (per target value: rows, then columns scaled down to P1, P2, plus the
    rank-one deficit), f(Q) = Σ Q log Q − Σ_k Q_k log Q_k, and
    gap = f(Q) − <λ', (P1, P2)> with λ' = (λ1 − max(0, max_x2 g), λ2) (``feasible``;
    g is the pair softmax's, computed once).  Returns (Q, f(Q), gap).

    One kernel, grid (B,): a program per joint holds its n1 × n2 pairs and sweeps
    y three times, recomputing the softmax rather than storing it (joints whose
    padded n1 × n2 exceeds CERTIFICATE_MAX_PAIRS fall back to the torch pass).
    Bytes: reads λ1, λ2, P1, P2 in each sweep (6 b L) and w (b K), writes Q (b N,
    strided by ny) and two numbers per joint.  Flops: ~21 N; transcendentals:
    2 N exp + N log (xlogy) + 2 K log.  The torch pass (60 aten ops) runs the pair
    softmax twice and writes and rereads ~25 N-sized temporaries."""
    lam1, lam2, w = lam1.contiguous(), lam2.contiguous(), w.contiguous()
    batch, n1, ny = lam1.shape
    n2 = lam2.shape[1]
    block_i, block_j = _pow2(n1), _pow2(n2)
    if block_i * block_j > CERTIFICATE_MAX_PAIRS:
        return solver.certificate(lam1, lam2, w, support)
    q = torch.empty((batch, n1, n2, ny), dtype=w.dtype, device=w.device)
    value = torch.empty((batch,), dtype=w.dtype, device=w.device)
    gap = torch.empty((batch,), dtype=w.dtype, device=w.device)
    _certificate_kernel[(batch,)](
        lam1,
        lam2,
        w,
        support.p1.contiguous(),
        support.p2.contiguous(),
        q,
        value,
        gap,
        n1,
        n2,
        ny,
        BLOCK_I=block_i,
        BLOCK_J=block_j,
        num_warps=4 if block_i * block_j <= 2048 else 8,
    )
    return q, value, gap


@triton.jit
def _envelope_gradient_kernel(
    p_ptr,
    lam1_ptr,
    lam2_ptr,
    log1_ptr,
    log2_ptr,
    logy_ptr,
    coef_ptr,
    out_ptr,
    partial_ptr,
    n1,
    n2,
    ny,
    BLOCK_J: tl.constexpr,
    BLOCK_Y: tl.constexpr,
):
    """One program per joint and x1 symbol; loops over x2 in blocks of BLOCK_J
    with all ny targets.  Writes G (0 off the support) and Σ_{x2, y} G p of its
    slab to partial_ptr (B, n1)."""
    b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1)
    y = tl.arange(0, BLOCK_Y)
    in_y = y < ny
    a_y = tl.load(coef_ptr + b * 5)
    a_1 = tl.load(coef_ptr + b * 5 + 1)
    a_2 = tl.load(coef_ptr + b * 5 + 2)
    a_12 = tl.load(coef_ptr + b * 5 + 3)
    a_v = tl.load(coef_ptr + b * 5 + 4)
    row = (b * n1 + i) * ny + y
    lam1 = tl.load(lam1_ptr + row, mask=in_y, other=0.0)
    base = (
        a_y * (-tl.load(logy_ptr + b * ny + y, mask=in_y, other=0.0) - 1.0)
        + a_1 * tl.load(log1_ptr + row, mask=in_y, other=0.0)
        + a_v * lam1
    )
    partial = tl.zeros([BLOCK_J, BLOCK_Y], dtype=p_ptr.dtype.element_ty)
    for j0 in range(0, n2, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        inside = (j[:, None] < n2) & in_y[None, :]
        at2 = (b * n2 + j[:, None]) * ny + y[None, :]
        at = ((b * n1 + i) * n2 + j[:, None]) * ny + y[None, :]
        p = tl.load(p_ptr + at, mask=inside, other=0.0)
        lam2 = tl.load(lam2_ptr + at2, mask=inside, other=0.0)
        log2 = tl.load(log2_ptr + at2, mask=inside, other=0.0)
        pair = tl.sum(p, axis=1)
        positive = p > 0
        log12 = tl.log(tl.where(positive, p, 1.0)) - tl.log(tl.where(pair > 0, pair, 1.0))[:, None]
        g = base[None, :] + a_2 * log2 + a_12 * log12 + a_v * lam2
        g = tl.where(positive, g, 0.0)
        tl.store(out_ptr + at, g, mask=inside)
        partial += g * p
    tl.store(partial_ptr + b * n1 + i, tl.sum(tl.sum(partial, axis=1), axis=0))


def envelope_gradient(p, lam1, lam2, grad_atoms):
    r"""``fastpid.decomposition.envelope_gradient``, fused: ∂(Σ_a g_a atom_a)/∂p for joints p
    (..., n1, n2, ny) of any positive scale T (the formula of csrc/broja_backward.h):
    G = [a_y (−log p(y) − 1) + a_1 log p(y|x1) + a_2 log p(y|x2) + a_12 log p(y|x1,x2)
    + a_v (λ1 + λ2)] / ln 2 on the support, then (G − Σ G p / T) / T.

    Torch computes the marginal logs (L + B ny values, from two sums over the
    cells) and the five coefficients; one kernel, grid (B, n1), writes G and
    per-program sums of G p; torch applies the projection.  Bytes: the kernel
    reads p, and λ2 and log p(y|x2) once per x1 (3 b N), and writes G (b N);
    torch's three sums read p (3 b N) and the projection reads G and writes the
    gradient (2 b N): 9 b N in all, against ~25 N-sized temporaries written and
    reread by ``fastpid.decomposition.envelope_gradient``.  Flops: ~12 N; transcendentals:
    N + K logs."""
    *batch_shape, n1, n2, ny = p.shape
    p = p.to(torch.float64).reshape(-1, n1, n2, ny).contiguous()
    batch = p.shape[0]
    g = grad_atoms.to(torch.float64).reshape(batch, 5)
    total = p.sum((-3, -2, -1))
    p1, p2 = p.sum(-2), p.sum(-3)
    log1 = torch.log(p1) - torch.log(p1.sum(-1, keepdim=True))
    log2 = torch.log(p2) - torch.log(p2.sum(-1, keepdim=True))
    logy = torch.log(p1.sum(-2)) - torch.log(total)[:, None]
    coef = torch.stack(
        [
            g[:, 0] + g[:, 4],
            g[:, 0] - g[:, 2],
            g[:, 0] - g[:, 1],
            g[:, 3] + g[:, 4],
            g[:, 1] + g[:, 2] - g[:, 0] - g[:, 3],
        ],
        1,
    ) / math.log(2.0)
    out = torch.empty_like(p)
    partial = torch.empty((batch, n1), dtype=p.dtype, device=p.device)
    block_y = _pow2(ny)
    block_j = min(_pow2(n2), max(1, TILE // block_y))
    _envelope_gradient_kernel[(batch, n1)](
        p,
        lam1.reshape(batch, n1, ny).contiguous(),
        lam2.reshape(batch, n2, ny).contiguous(),
        log1.contiguous(),
        log2.contiguous(),
        logy.contiguous(),
        coef.contiguous(),
        out,
        partial,
        n1,
        n2,
        ny,
        BLOCK_J=block_j,
        BLOCK_Y=block_y,
    )
    scale = total[:, None, None, None]
    out = (out - partial.sum(1)[:, None, None, None] / scale) / scale
    return out.reshape(*batch_shape, n1, n2, ny)


TRITON_PASSES = solver.Passes(
    pair_softmax=pair_softmax,
    weighted_marginals=weighted_marginals,
    newton_blocks=newton_blocks,
    certificate=certificate,
)


def costs(batch: int, n1: int, n2: int, ny: int, itemsize: int = 8) -> dict:
    """Per-call cost model of each Triton pass, as in its docstring (for the
    roofline): {pass: {"bytes", "flops", "transcendentals"}}, for joints within
    one tile (see the module docstring)."""
    cells, pairs = batch * n1 * n2 * ny, batch * n1 * n2
    duals = batch * (n1 + n2) * ny
    b = itemsize
    return {
        "pair_softmax": {
            "bytes": b * (2 * duals + cells + pairs),
            "flops": 5 * cells,
            "transcendentals": cells + pairs,
        },
        "weighted_marginals": {"bytes": b * (cells + pairs + duals), "flops": 3 * cells, "transcendentals": 0},
        "newton_blocks": {
            "bytes": b * (cells * ny + duals * ny + 4 * cells + 4 * pairs),
            "flops": 8 * cells * ny,
            "transcendentals": 0,
        },
        "certificate": {
            "bytes": b * (6 * duals + pairs + cells + 2 * batch),
            "flops": 21 * cells,
            "transcendentals": 3 * cells + 2 * pairs,
        },
        "envelope_gradient": {"bytes": b * 9 * cells, "flops": 12 * cells, "transcendentals": cells + pairs},
    }
