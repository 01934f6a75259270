r"""Reference BROJA solvers, used by ``fastpid verify``, the tests and the benchmarks.

Both solvers take a joint P[x1, x2, y] as a numpy array (non-negative, normalised
here) and return the atoms in bits:

    redundancy R, unique1 U1, unique2 U2, synergy S,
    R + U1 + U2 + S = I(Y; X1, X2),  R + U1 = I(Y; X1),  R + U2 = I(Y; X2).

``cvxpy_pid`` is within ~5e-9 bits of the optimum (checked with primal-dual
certificates); ``dit_pid`` agrees with it to ~2e-8 bits except on joints with
cells below ~1e-15. Both are slow (seconds at 10×10×10); fastpid itself uses
neither.
"""

from __future__ import annotations

import math

import numpy as np

ATOMS = ("redundancy", "unique1", "unique2", "synergy")

# dit's lattice nodes for the atoms of PID_BROJA(d, [[0], [1]], [2]).
DIT_NODES = {
    "redundancy": ((0,), (1,)),
    "unique1": ((0,),),
    "unique2": ((1,),),
    "synergy": ((0, 1),),
}

CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}


def as_joint(P) -> np.ndarray:
    """P as a float64 array of shape (n1, n2, ny), divided by its total mass."""
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 3:
        raise ValueError(f"expected a joint P[x1, x2, y] with 3 axes, got shape {P.shape}")
    if not np.all(np.isfinite(P)) or np.any(P < 0) or P.sum() <= 0:
        raise ValueError("a joint must be finite, non-negative and of positive mass")
    return P / P.sum()


def trim(P: np.ndarray) -> np.ndarray:
    """P without the symbols of zero mass of x1, x2 and y (the PID does not change)."""
    keep = [P.sum(axis=tuple(a for a in range(3) if a != axis)) > 0 for axis in range(3)]
    return P[np.ix_(*keep)]


def entropy(p: np.ndarray) -> float:
    """H(p) = -Σ p log2 p in bits, with 0 log 0 = 0."""
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def plugin_information(P) -> dict:
    """H(Y), I(Y;X1), I(Y;X2) and I(Y;X1,X2) of the joint P[x1, x2, y], in bits.

    Keys ``entropy_y``, ``mi_x1``, ``mi_x2``, ``mi``; I(Y;X) = H(X) + H(Y) - H(X,Y).
    """
    P = as_joint(P)
    h_y = entropy(P.sum((0, 1)))

    def mutual_information(P_xy):
        return entropy(P_xy.sum(-1)) + h_y - entropy(P_xy)

    return {
        "entropy_y": h_y,
        "mi_x1": mutual_information(P.sum(1)),
        "mi_x2": mutual_information(P.sum(0)),
        "mi": mutual_information(P.reshape(-1, P.shape[-1])),
    }


def atoms_from_union_information(info: dict, union_information: float) -> dict:
    """The four atoms from UI = min_{Q ∈ Δ_P} I_Q(Y; X1, X2) (bits) and ``plugin_information``."""
    return {
        "redundancy": info["mi_x1"] + info["mi_x2"] - union_information,
        "unique1": union_information - info["mi_x2"],
        "unique2": union_information - info["mi_x1"],
        "synergy": info["mi"] - union_information,
    }


def dit_to_joint(distribution) -> np.ndarray:
    """The pmf of a dit distribution of (x1, x2, y) as an array P[x1, x2, y].

    Symbols are indexed in the order of the distribution's alphabets.
    """
    distribution = distribution.copy(base="linear")
    alphabets = distribution.alphabet
    P = np.zeros([len(alphabet) for alphabet in alphabets])
    for outcome, p in zip(distribution.outcomes, distribution.pmf):
        P[tuple(alphabet.index(symbol) for alphabet, symbol in zip(alphabets, outcome))] += p
    return P


def dit_pid(P, **ecos_options) -> dict:
    """BROJA atoms (bits) from dit's exponential-cone solver.

    ``dit.pid.PID_BROJA(d, [[0], [1]], [2], method="cone")`` on
    ``d = dit.Distribution.from_ndarray(P)``, with P normalised and its zero-mass
    symbols removed first. ``ecos_options`` (``feastol``, ``abstol``, ``reltol``,
    ``max_iters``) go to ECOS. Slow: seconds at 10³ cells, minutes above 15³ (docs/performance.md).

    Caveats (dit 2.3): atoms may be slightly negative (-1e-8); on joints with
    cells below ~1e-15 they are off by up to ~4e-6 bits (dit evaluates them on
    the not exactly feasible Q*); and if ECOS fails ("numerical problems", seen
    on some constant-target joints) or its primal residual exceeds 1e-5, dit
    silently falls back to its SLSQP solver, which can be off by 0.1 bits.
    """
    try:
        import dit
        import ecos  # noqa: F401  (dit's cone method needs it)
    except ImportError as error:
        raise ImportError("dit_pid needs dit and ecos: pip install dit ecos") from error
    distribution = dit.Distribution.from_ndarray(trim(as_joint(P)))
    pid = dit.pid.PID_BROJA(distribution, [[0], [1]], [2], method="cone", **ecos_options)
    return {atom: float(pid[node]) for atom, node in DIT_NODES.items()}


def cvxpy_pid(P, solver: str = "CLARABEL", **solver_options) -> dict:
    r"""BROJA atoms (bits) and I(Y;X1,X2) (``mi``) from an exponential-cone program.

    Solves the primal

        V = min_{Q ∈ Δ_P} Σ rel_entr(Q(x1,x2,y), Q(x1,x2)),   Q(x1,x2) = Σ_y Q(x1,x2,y),

    (V = -H_Q(Y|X1,X2), nats) with one variable per cell where P(x1,y) > 0 and
    P(x2,y) > 0 (Q is zero elsewhere), then UI = H(Y) + V. Clarabel runs with
    gap and feasibility tolerances 1e-10 unless ``solver_options`` say otherwise.
    On joints with cells below ~1e-15 it may stop at reduced accuracy (cvxpy
    warns "Solution may be inaccurate"); primal-dual certificates still put
    those answers within 5e-9 bits. Slow: minutes at 20³ (docs/performance.md).
    """
    import cvxpy as cp
    from scipy import sparse

    P = trim(as_joint(P))
    P1, P2 = P.sum(1), P.sum(0)
    x1, x2, y = np.nonzero((P1[:, None, :] > 0) & (P2[None, :, :] > 0))
    cells = len(x1)
    n1, n2, ny = P.shape

    def cell_sums(groups, n_groups):
        return sparse.csr_matrix((np.ones(cells), (groups, np.arange(cells))), shape=(n_groups, cells))

    Q = cp.Variable(cells, nonneg=True)
    pair_sums = cell_sums(x1 * n2 + x2, n1 * n2)
    objective = cp.sum(cp.rel_entr(Q, pair_sums.T @ (pair_sums @ Q)))
    constraints = [
        cell_sums(x1 * ny + y, n1 * ny) @ Q == P1.ravel(),
        cell_sums(x2 * ny + y, n2 * ny) @ Q == P2.ravel(),
    ]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    options = {**(CLARABEL_TIGHT if solver == "CLARABEL" else {}), **solver_options}
    problem.solve(solver=solver, **options)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"{solver} failed on the BROJA program: status {problem.status}")

    info = plugin_information(P)
    atoms = atoms_from_union_information(info, info["entropy_y"] + float(problem.value) / math.log(2))
    return {**atoms, "mi": info["mi"]}


def mpmath_pid_2x2x2(P, digits: int = 50) -> dict:
    """The atoms (bits) of a 2×2×2 joint from V(P) computed in ``digits``-digit arithmetic.

    For joints whose cells span hundreds of orders of magnitude, where neither dit
    nor cvxpy is exact.  Δ_P of a 2×2×2 joint is a rectangle: for each y one free
    cell t_y = Q(0, 0, y) ∈ [max(0, P2(0, y) − P1(1, y)), min(P1(0, y), P2(0, y))]
    fixes the other three.  f is convex on it, with
    ∂f/∂t_y = log[Q(0,0,y) Q(1,1,y) / (Q(0,1,y) Q(1,0,y))] − log[Q(0,0) Q(1,1) / (Q(0,1) Q(1,0))];
    nested bisections on the sign of the derivative find the minimum (the outer
    one on ∂f/∂t_0 at the inner minimiser over t_1: the envelope theorem).
    Each bisection halves its bracket ~3.4 × ``digits`` times.
    """
    import mpmath

    P = as_joint(P)
    if P.shape != (2, 2, 2):
        raise ValueError(f"mpmath_pid_2x2x2 takes 2×2×2 joints, got shape {P.shape}")
    with mpmath.workdps(digits):
        p = [[[mpmath.mpf(float(P[a, b, y])) for y in range(2)] for b in range(2)] for a in range(2)]
        p1 = [[p[a][0][y] + p[a][1][y] for y in range(2)] for a in range(2)]
        p2 = [[p[0][b][y] + p[1][b][y] for y in range(2)] for b in range(2)]
        brackets = [(max(mpmath.mpf(0), p2[0][y] - p1[1][y]), min(p1[0][y], p2[0][y])) for y in range(2)]
        halvings = int(3.4 * digits) + 10

        def cells(t):  # Q[a][b][y]
            return [
                [[t[y] for y in range(2)], [p1[0][y] - t[y] for y in range(2)]],
                [[p2[0][y] - t[y] for y in range(2)], [p1[1][y] - p2[0][y] + t[y] for y in range(2)]],
            ]

        def slope(t, y):
            q = cells(t)
            pair = [[q[a][b][0] + q[a][b][1] for b in range(2)] for a in range(2)]
            return mpmath.log(q[0][0][y] * q[1][1][y] / (q[0][1][y] * q[1][0][y])) - mpmath.log(
                pair[0][0] * pair[1][1] / (pair[0][1] * pair[1][0])
            )

        def minimise(y, t):
            """t with t[y] replaced by the minimiser of f along y (bisection inside its bracket)."""
            low, high = brackets[y]
            for _ in range(halvings if high > low else 0):
                middle = (low + high) / 2
                trial = list(t)
                trial[y] = middle
                if y == 0:
                    trial = minimise(1, trial)
                low, high = (middle, high) if slope(trial, y) < 0 else (low, middle)
            t = list(t)
            t[y] = (low + high) / 2
            return minimise(1, t) if y == 0 else t

        q = cells(minimise(0, [brackets[0][0], brackets[1][0]]))

        def xlogx(x):
            return x * mpmath.log(x) if x > 0 else mpmath.mpf(0)

        v = sum(xlogx(q[a][b][y]) for a in range(2) for b in range(2) for y in range(2)) - sum(
            xlogx(q[a][b][0] + q[a][b][1]) for a in range(2) for b in range(2)
        )
        h_y = -sum(xlogx(p1[0][y] + p1[1][y]) for y in range(2))
        union_information = float((h_y + v) / mpmath.log(2))
    return atoms_from_union_information(plugin_information(P), union_information)
