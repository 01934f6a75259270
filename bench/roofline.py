r"""Cost model of one interior-point iteration of the CPU path (csrc/broja.h), per joint.

For an n1 × n2 × ny joint with every cell in the support (Dirichlet joints):

    N    = n1 n2 ny                cells (n1 n2 pairs of ny cells)
    K    = the side kept for the Schur complement: the one with fewer free dual
           variables, λ2 on ties; one λ2 per target value is pinned (the gauge), so
           m_K = min(n1 ny, (n2 − 1) ny) unknowns
    E    = the eliminated side: n_E symbols, m_E = n_E ny unknowns (ny × ny blocks)

One iteration (fastpid/solver.py's loop; broja.h runs it joint by joint):

    certificate      Q = w s, rounding onto Δ_P, f(Q), dual            ~25 N flops, N + n1 n2 logs
    Newton matrix    diagonal blocks of A_E and A_K, pair by pair          4 N ny
    E blocks         Cholesky + explicit L⁻¹ of n_E blocks ny × ny       (2/3) n_E ny³
    cross term       G = L_E⁻¹ C (C_k = diag q_k + c_k s_k s_kᵀ)            3 N ny
    Schur update     S = A_K − Gᵀ G (upper triangle)                    m_E m_K²
    Schur Cholesky   m_K³ / 3
    solves           2 directions × (1 + ≤ 2 refinement steps) = ≤ 6,
                     each 2 n_E ny² + 4 m_E m_K + 2 m_K² + ~20 N
    step             max steps, pair softmax at the new λ (per backtrack)  ~15 N flops, N exps + n1 n2 logs

(the dense formulation of solver.py instead assembles an m × m matrix,
m = (n1 + n2) ny, from n1 n2 ny² cross entries and factorises it in m³/3 flops:
``dense_flops_per_iteration``).

Bytes: the working set (S, G, the E factors, ~12 arrays of N) stays in L1/L2
up to 20×20×6 (~0.4 MB), so DRAM traffic per joint is only the joint in and
the dual variables out; the per-iteration bytes below are cache traffic.  The
roofline time is therefore the compute bound: iterations × (flops / DGEMM rate +
transcendentals / vectorised-exp rate), with both rates measured on the
machine in the same run (bench_cpu.py's "machine" group).  It is a lower bound:
broja.h's kernels are 2-wide SSE2 and scalar ``exp``/``log``, not MKL.
"""

from __future__ import annotations

SOLVES_PER_ITERATION = 6  # upper bound: refinement stops once the backward error is a few ulps


def sides(n1: int, n2: int, ny: int):
    """(n_E symbols, m_E, m_K) for a joint with every cell in the support."""
    free1, free2 = n1 * ny, (n2 - 1) * ny
    if free2 <= free1:
        return n1, free1, free2
    return n2 - 1, free2, free1


def flops_per_iteration(n1: int, n2: int, ny: int, solves: int = SOLVES_PER_ITERATION) -> dict:
    """Floating-point operations of one iteration, by stage, and their ``total``."""
    N = n1 * n2 * ny
    n_e, m_e, m_k = sides(n1, n2, ny)
    parts = {
        "elementwise": 25 * N + 15 * N + 10 * N,  # certificate, step and softmax, right-hand sides
        "assembly": 4 * N * ny,
        "E blocks": 2 * n_e * ny**3 / 3,
        "cross": 3 * N * ny,
        "Schur update": m_e * m_k**2,
        "Schur Cholesky": m_k**3 / 3,
        "solves": solves * (2 * n_e * ny**2 + 4 * m_e * m_k + 2 * m_k**2 + 20 * N),
    }
    parts["total"] = sum(parts.values())
    return parts


def dense_flops_per_iteration(n1: int, n2: int, ny: int, solves: int = SOLVES_PER_ITERATION) -> float:
    """The same iteration with solver.py's dense matrix, m = (n1 + n2) ny."""
    N, m = n1 * n2 * ny, (n1 + n2) * ny
    return 50 * N + 4 * N * ny + m**3 / 3 + solves * (2 * m**2 + 2 * m**2 + 20 * N)


def transcendentals_per_iteration(n1: int, n2: int, ny: int, backtracks: int = 1) -> int:
    """exp and log calls: the pair softmax after each trial step, the certificate's x log x."""
    N, pairs = n1 * n2 * ny, n1 * n2
    return backtracks * (N + pairs) + N + pairs


def cache_bytes_per_iteration(n1: int, n2: int, ny: int, solves: int = SOLVES_PER_ITERATION) -> float:
    """Bytes read and written per iteration (L1/L2 traffic), float64.

    G (m_E × m_K): written, read by the Schur update, read twice per solve;
    S (m_K²): zeroed and assembled, updated, factorised (read + write of the
    triangle), read twice per solve (forward and back substitution);
    the pair arrays (s, q, rounded Q, g, w, h, ...): ~40 passes over N values."""
    N = n1 * n2 * ny
    _, m_e, m_k = sides(n1, n2, ny)
    words = m_e * m_k * (2 + 2 * solves) + m_k**2 * (1 + 1 + 1 + solves) + 40 * N
    return 8.0 * words


def working_set_bytes(n1: int, n2: int, ny: int) -> float:
    """S, G, the E factors and ~12 arrays of N values, float64."""
    N = n1 * n2 * ny
    n_e, m_e, m_k = sides(n1, n2, ny)
    return 8.0 * (m_k**2 + m_e * m_k + n_e * ny * ny + 12 * N)


def dram_bytes_per_joint(n1: int, n2: int, ny: int) -> float:
    """The joint in, λ1, λ2, w out (C++ solve only; the Python certificate is in the set-up cost)."""
    return 8.0 * (n1 * n2 * ny + n1 * ny + n2 * ny + n1 * n2)


def predicted_seconds(n1, n2, ny, iterations, flop_rate, exp_rate, dram_bandwidth) -> dict:
    """Roofline time of the iterations of one joint and its parts (seconds)."""
    flops = flops_per_iteration(n1, n2, ny)["total"]
    per_iteration = flops / flop_rate + transcendentals_per_iteration(n1, n2, ny) / exp_rate
    memory = dram_bytes_per_joint(n1, n2, ny) / dram_bandwidth
    return {"per_iteration": per_iteration, "joint": iterations * per_iteration + memory, "dram": memory}
