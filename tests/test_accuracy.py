"""``fastpid.pid`` against plain references, across joints, shapes, dtypes and backends.

References (``fastpid.references``): dit's exponential-cone solver for joints of
at most ``DIT_MAX_CELLS`` cells and cvxpy/Clarabel for joints up to
``CVXPY_MAX_CELLS``; the 32×32×32 joint, too slow for either, is checked by its
certificate, the information identities and agreement between backends.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest
import torch
from conftest import (
    ATOL,
    BACKENDS,
    CVXPY_MAX_CELLS,
    DIT_MAX_CELLS,
    FIELDS,
    GAP_MAX,
    ROUNDING,
    assert_identities,
    atoms_array,
    certified_bound,
    field,
    neg_conditional_entropy_bits,
    plugin_mi,
    reference_array,
    smallest_positive_cell,
)

import fastpid
from fastpid.examples import (
    CANONICAL,
    CANONICAL_VALUES,
    accuracy_set,
    boundary_joint,
    degenerate_joints,
    dirichlet_joint,
    sparse_joint,
)
from fastpid.references import ATOMS

pytest.importorskip("dit")
pytest.importorskip("cvxpy")

# Canonical gates, Dirichlet joints (concentrations 0.1 to 5), sparse joints
# (structural zeros), boundary joints (unique2 = 0) and degenerate joints (empty
# symbol, empty target class, point mass, constant and independent target) on
# shapes from 2×2×2 to 20×20×6, square and not.
ACCURACY_SET = accuracy_set(np.random.default_rng(0), max_cells=CVXPY_MAX_CELLS)
DIT_SET = [(name, P) for name, P in ACCURACY_SET if P.size <= DIT_MAX_CELLS]
DTYPES = [torch.float64, torch.float32]

# dit's cone solver evaluates its atoms on a Q* that is not exactly feasible;
# on joints whose cells span many orders of magnitude (Dirichlet(0.1) draws
# reach 1e-18) this puts it off by up to ~4e-6 bits (fastpid/references.py).
# Measured on this set: dirichlet0.1_2x3x4 (smallest cell 8e-14), _4x2x3 (2e-10)
# and _3x7x2 (2e-18): dit off by 3e-7, 2e-7 and 7e-7 bits, while cvxpy agrees
# with us to 6e-9 and our certificates are below 5e-9.  Only on such joints may
# dit disagree with us, and only where cvxpy agrees with us and our certificate
# proves that dit's own error exceeds the tolerance.
SKEWED_BELOW = 1e-9


def dtype_id(dtype):
    return str(dtype).replace("torch.", "")


def solve(P, backend, dtype=torch.float64, **kwargs):
    return fastpid.pid(torch.tensor(np.asarray(P), dtype=dtype), backend=backend, **kwargs)


def assert_certified(result, index=()):
    gap = field(result, "gap", index)
    assert gap <= GAP_MAX, f"certified gap {gap:.3g} bits > {GAP_MAX:g}"
    assert field(result, "converged", index), f"not converged (gap {gap:.3g} bits > tol)"


def assert_honest(result, reference, what: str):
    """Whatever the solver reached, its certificate bounds its error and
    ``converged`` tells whether the gap met the tolerance."""
    gap = field(result, "gap")
    err = np.abs(atoms_array(result) - np.asarray(reference, dtype=np.float64)).max()
    assert err <= gap + ATOL[torch.float64], f"error {err:.3g} bits against {what} exceeds the gap {gap:.3g}"
    assert bool(field(result, "converged")) == (gap <= DEFAULT_TOL), "converged disagrees with the gap"


DEFAULT_TOL = inspect.signature(fastpid.pid).parameters["tol"].default


def assert_atoms_close(ours: np.ndarray, expected, atol: float, what: str):
    err = np.abs(ours - np.asarray(expected, dtype=np.float64))
    assert err.max() <= atol, (
        f"atoms {dict(zip(ATOMS, ours))} differ from {what} {dict(zip(ATOMS, expected))} "
        f"by {err.max():.3g} bits > {atol:g}"
    )


# --------------------------------------------------------------------------
# Canonical gates: exact values.


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", sorted(CANONICAL_VALUES))
def test_canonical_values(name, dtype, backend):
    result = solve(CANONICAL[name], backend, dtype)
    assert result.redundancy.dtype == dtype
    assert_atoms_close(atoms_array(result), CANONICAL_VALUES[name], ATOL[dtype], "the canonical values")
    if dtype == torch.float64:
        assert_certified(result)
    assert_identities(result, CANONICAL[name], ATOL[dtype])


# --------------------------------------------------------------------------
# The accuracy set against cvxpy/Clarabel (every joint) and dit (small joints).


# Clarabel stops at "reduced accuracy" on a few Dirichlet(0.1) joints and cvxpy
# warns; references.py's primal-dual certificates put those answers within 5e-9
# bits, and the comparison below would catch anything worse.
@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name,P", ACCURACY_SET, ids=[name for name, _ in ACCURACY_SET])
def test_matches_cvxpy(name, P, dtype, backend):
    result = solve(P, backend, dtype)
    ours = atoms_array(result)
    assert_atoms_close(ours, reference_array("cvxpy", name, P), ATOL[dtype], "cvxpy/Clarabel")
    assert_identities(result, P, ATOL[dtype])
    if dtype == torch.float64:
        assert_certified(result)
        # The certificate is honest: the reference lies within the gap (+ its own ~5e-9 error).
        err = np.abs(ours - reference_array("cvxpy", name, P)).max()
        assert err <= field(result, "gap") + 1e-8


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("name,P", DIT_SET, ids=[name for name, _ in DIT_SET])
def test_matches_dit(name, P, backend):
    result = solve(P, backend)
    assert_certified(result)
    ours = atoms_array(result)
    dit_atoms = reference_array("dit", name, P)
    err = np.abs(ours - dit_atoms).max()
    if err > ATOL[torch.float64]:
        # dit is documented to be off on very skewed joints (see SKEWED_BELOW);
        # there cvxpy is the arbiter.  Our certificate proves that dit is wrong:
        # our atoms are within `gap` of the exact ones, so dit's error is at
        # least err - gap, which must exceed the tolerance; and the independent
        # cvxpy solve agrees with us to the full float64 tolerance.
        assert smallest_positive_cell(P) < SKEWED_BELOW, (
            f"dit differs by {err:.3g} bits on a joint that is not skewed "
            f"(smallest cell {smallest_positive_cell(P):.3g})"
        )
        assert err - field(result, "gap") > ATOL[torch.float64], "dit's error is not proven"
        assert_atoms_close(ours, reference_array("cvxpy", name, P), ATOL[torch.float64], "cvxpy/Clarabel (arbiter)")


# --------------------------------------------------------------------------
# More small random joints than the accuracy set has: skewed draws (Dirichlet
# concentrations 0.1 and 0.5) with and without structural zeros and on the
# boundary, where interior-point iterations meet tiny pair masses.

SWEEP_SHAPES = [(2, 2, 2), (3, 2, 2), (3, 3, 2), (2, 4, 3), (4, 4, 4)]


def random_sweep():
    joints = []
    for kind in ("dirichlet", "sparse", "boundary"):
        for concentration in (0.1, 0.5):
            for seed in range(10):
                rng = np.random.default_rng(1000 + seed)
                shape = SWEEP_SHAPES[seed % len(SWEEP_SHAPES)]
                if kind == "dirichlet":
                    P = dirichlet_joint(rng, shape, concentration)
                elif kind == "sparse":
                    P = sparse_joint(rng, shape, 0.5, concentration)
                else:
                    P = boundary_joint(rng, shape, concentration)
                joints.append((f"{kind}{concentration}_seed{seed}_{'x'.join(map(str, shape))}", P))
    return joints


RANDOM_SWEEP = random_sweep()


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("name,P", RANDOM_SWEEP, ids=[name for name, _ in RANDOM_SWEEP])
def test_random_skewed_joints(name, P, backend):
    result = solve(P, backend)
    reference = reference_array("cvxpy", name, P)
    assert_honest(result, reference, "cvxpy/Clarabel")
    assert_identities(result, P, ATOL[torch.float64])
    assert_certified(result)
    assert_atoms_close(atoms_array(result), reference, ATOL[torch.float64], "cvxpy/Clarabel")


@pytest.mark.parametrize("eps", [1e-20, 1e-35, 1e-80, 1e-150, 1e-200, 1e-300, 1e-310], ids=lambda e: f"{e:.0e}")
def test_tiny_cell(eps, backend):
    """RDN (x1 = x2 = y) plus one cell of mass eps at (0, 0, 1): the atoms stay
    (1, 0, 0, 0) up to ~eps log(1/eps) bits, and the answer must be certified
    however small eps is (1e-310 is subnormal)."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[1, 1, 1] = 0.5
    P[0, 0, 1] = eps
    result = solve(P, backend)
    assert_honest(result, CANONICAL_VALUES["RDN"], "RDN's atoms")
    assert_certified(result)
    assert_atoms_close(atoms_array(result), CANONICAL_VALUES["RDN"], ATOL[torch.float64], "RDN's atoms")


# --------------------------------------------------------------------------
# Known values of the corner cases and the boundary joints.


@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 3, 5), (3, 6, 2)], ids=lambda s: "x".join(map(str, s)))
def test_degenerate_joints(shape, backend):
    """Empty symbols and classes change nothing; a point mass, a constant target or
    an independent target carry no information at all."""
    cases = degenerate_joints(shape)
    for name, P in cases.items():
        result = solve(P, backend)
        assert_certified(result)
        ours = atoms_array(result)
        assert np.all(np.isfinite(ours)), name
        if name in ("point_mass", "constant_target", "independent_target"):
            assert_atoms_close(ours, [0, 0, 0, 0], ATOL[torch.float64], f"zeros ({name})")
            assert abs(field(result, "mi")) <= ATOL[torch.float64]
        else:
            assert_atoms_close(
                ours, reference_array("cvxpy", f"{name}_{shape}", P), ATOL[torch.float64], f"cvxpy ({name})"
            )
        assert_identities(result, P, ATOL[torch.float64])


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 4, 2), (6, 6, 6), (10, 4, 3)], ids=lambda s: "x".join(map(str, s)))
def test_boundary_joint_has_no_unique2(shape, backend):
    """Y - X1 - X2 is a Markov chain: unique2 = 0 exactly, on the boundary of Δ_P."""
    P = boundary_joint(np.random.default_rng(11), shape)
    result = solve(P, backend)
    assert_certified(result)
    assert abs(field(result, "unique2")) <= ATOL[torch.float64]
    assert field(result, "unique2") >= -field(result, "gap") - ROUNDING


def test_structural_zeros_in_blocks(backend):
    """Two blocks: whole (x1, y) and (x2, y) rows vanish, and many pairs carry no constraint."""
    P = np.zeros((4, 5, 3))
    rng = np.random.default_rng(3)
    P[:2, :3, :2] = rng.dirichlet(np.ones(12)).reshape(2, 3, 2)
    P[2:, 3:, 2] = rng.dirichlet(np.ones(4)).reshape(2, 2)
    P /= P.sum()
    result = solve(P, backend)
    assert_certified(result)
    assert_atoms_close(
        atoms_array(result), reference_array("cvxpy", "blocks_4x5x3", P), ATOL[torch.float64], "cvxpy/Clarabel"
    )
    assert_identities(result, P, ATOL[torch.float64])


# --------------------------------------------------------------------------
# 32×32×32: too slow for the references; certificate, identities, backends agree.

LARGE_SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def large_results():
    """The 32×32×32 Dirichlet(1) joint of the accuracy set, solved once per backend."""
    full = dict(accuracy_set(np.random.default_rng(0)))
    P = full["dirichlet1.0_32x32x32"]
    return P, {name: solve(P, name) for name in BACKENDS}


def test_large_joint_certified(large_results, backend):
    P, results = large_results
    result = results[backend]
    assert_certified(result)
    assert_identities(result, P, ATOL[torch.float64])
    assert np.all(atoms_array(result) >= -field(result, "gap") - ROUNDING)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends (build the 'cpu' extension)")
def test_large_joint_backends_agree(large_results):
    _, results = large_results
    first, *others = BACKENDS
    for other in others:
        bound = certified_bound(results[first], results[other])
        assert_atoms_close(atoms_array(results[other]), atoms_array(results[first]), bound, f"backend {first!r}")


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends (build the 'cpu' extension)")
@pytest.mark.parametrize("shape", [(2, 2, 2), (5, 3, 4), (16, 16, 4)], ids=lambda s: "x".join(map(str, s)))
def test_backends_agree(shape):
    rng = np.random.default_rng(5)
    P = np.stack([dirichlet_joint(rng, shape, 0.5), sparse_joint(rng, shape, 0.6), boundary_joint(rng, shape)])
    results = {name: fastpid.pid(torch.tensor(P), backend=name) for name in BACKENDS}
    first, *others = BACKENDS
    for other in others:
        for b in range(len(P)):
            bound = certified_bound(results[first], results[other], index=b)
            assert_atoms_close(
                atoms_array(results[other], b), atoms_array(results[first], b), bound, f"backend {first!r}, joint {b}"
            )


# --------------------------------------------------------------------------
# Batches.


def batch_of_joints(shape, rng):
    joints = [dirichlet_joint(rng, shape, c) for c in (0.3, 1.0, 5.0)]
    joints += [sparse_joint(rng, shape, 0.7), boundary_joint(rng, shape)]
    joints += list(degenerate_joints(shape, rng).values())
    return np.stack(joints)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 3, 5), (7, 2, 3)], ids=lambda s: "x".join(map(str, s)))
def test_batched_equals_one_by_one(shape, dtype, backend, rng):
    P = torch.tensor(batch_of_joints(shape, rng), dtype=dtype)
    batched = fastpid.pid(P, backend=backend)
    assert batched.redundancy.shape == (len(P),)
    for b in range(len(P)):
        single = fastpid.pid(P[b], backend=backend)
        assert single.redundancy.shape == ()
        for name in FIELDS + ("gap",):
            # The same joint solved alone or in a batch: the same iterations,
            # up to rounding in the batched linear algebra.
            assert field(batched, name, b) == pytest.approx(field(single, name), abs=ATOL[dtype] / 100), (name, b)
        assert bool(batched.converged[b]) == bool(single.converged)


@pytest.mark.parametrize("batch_shape", [(2, 3), (1, 4), (2, 1, 2)], ids=str)
def test_leading_batch_shape_preserved(batch_shape, backend, rng):
    n = int(np.prod(batch_shape))
    flat = batch_of_joints((3, 2, 4), rng)[:n]
    P = torch.tensor(flat).reshape(*batch_shape, 3, 2, 4)
    result = fastpid.pid(P, backend=backend, return_q=True)
    for name in FIELDS + ("gap", "converged", "iterations"):
        assert getattr(result, name).shape == batch_shape, name
    assert result.q.shape == P.shape
    assert result.converged.dtype == torch.bool
    flat_result = fastpid.pid(torch.tensor(flat), backend=backend)
    for name in FIELDS:
        np.testing.assert_allclose(
            getattr(result, name).reshape(-1).numpy(),
            getattr(flat_result, name).numpy(),
            rtol=0,
            atol=1e-12,
            err_msg=name,
        )
    assert_identities(result, P.numpy(), ATOL[torch.float64])


def test_sequence_of_numpy_joints(backend, rng):
    joints = [dirichlet_joint(rng, (3, 3, 2), 1.0) for _ in range(3)]
    result = fastpid.pid(joints, backend=backend)
    assert isinstance(result.redundancy, np.ndarray) and result.redundancy.shape == (3,)
    stacked = fastpid.pid(np.stack(joints), backend=backend)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(result, name), getattr(stacked, name))


# --------------------------------------------------------------------------
# return_q: the optimal Q lies in Δ_P and attains the reported value.

Q_CASES = {
    "AND": CANONICAL["AND"],
    "dirichlet0.5_3x4x2": dirichlet_joint(np.random.default_rng(21), (3, 4, 2), 0.5),
    "sparse0.6_5x4x3": sparse_joint(np.random.default_rng(22), (5, 4, 3), 0.6),
    "boundary_4x4x3": boundary_joint(np.random.default_rng(23), (4, 4, 3)),
    "empty_target_class_4x3x5": degenerate_joints((4, 3, 5))["empty_target_class"],
    "dirichlet1_10x10x6": dirichlet_joint(np.random.default_rng(24), (10, 10, 6), 1.0),
}


@pytest.mark.parametrize("name", sorted(Q_CASES))
def test_return_q_in_polytope(name, backend):
    P = Q_CASES[name]
    result = solve(P, backend, return_q=True)
    q = result.q.numpy()
    assert q.shape == P.shape and q.dtype == np.float64
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(1), P.sum(1), rtol=0, atol=1e-12, err_msg="Σ_x2 Q != P(x1, y)")
    np.testing.assert_allclose(q.sum(0), P.sum(0), rtol=0, atol=1e-12, err_msg="Σ_x1 Q != P(x2, y)")
    # Cells outside the support of P(x1, y) P(x2, y) are forced to zero in Δ_P.
    outside = (P.sum(1)[:, None, :] == 0) | (P.sum(0)[None, :, :] == 0)
    assert np.all(q[outside] == 0)
    # f(Q) = −H_Q(Y|X1,X2) gives the union information UI = H(Y) + f(Q) = mi − S.
    info = plugin_mi(P)
    h_y = -np.sum([p * np.log2(p) for p in P.sum((0, 1)) if p > 0])
    union = h_y + neg_conditional_entropy_bits(q)
    assert union == pytest.approx(field(result, "mi") - field(result, "synergy"), abs=1e-12)
    assert union == pytest.approx(float(info["y;x1x2"]) - field(result, "synergy"), abs=1e-12)
    # ... and Q is optimal to within the reported gap (cvxpy as an independent check).
    ref = reference_array("cvxpy", name, P)
    assert field(result, "synergy") == pytest.approx(ref[3], abs=ATOL[torch.float64])


def test_return_q_float32(backend):
    P = torch.tensor(Q_CASES["dirichlet0.5_3x4x2"], dtype=torch.float32)
    result = fastpid.pid(P, backend=backend, return_q=True)
    assert result.q.dtype == torch.float32 and result.q.shape == P.shape
    torch.testing.assert_close(result.q.sum(1), P.sum(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(result.q.sum(0), P.sum(0), rtol=0, atol=1e-6)


def test_no_q_unless_asked(backend):
    assert solve(CANONICAL["XOR"], backend).q is None


def test_thread_count_changes_nothing(backend, rng):
    """The suite runs single-threaded (conftest.py); the parallel paths give the same answers."""
    P = torch.tensor(batch_of_joints((6, 5, 4), rng))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = fastpid.pid(P, backend=backend)
        torch.set_num_threads(max(2, os.cpu_count() or 2))
        parallel = fastpid.pid(P, backend=backend)
    finally:
        torch.set_num_threads(before)
    for b in range(len(P)):
        bound = certified_bound(serial, parallel, index=b)
        assert_atoms_close(atoms_array(parallel, b), atoms_array(serial, b), bound, f"one thread, joint {b}")


# --------------------------------------------------------------------------
# Boundary resamples: 2×2×2 sample joints (counts of N = 1000) whose optimum has
# a unique information at 0 and a small pair mass Q(x1, x2).  Mehrotra's σ used
# to drive μ far below the marginal residual there: pair masses collapsed, the
# iteration jammed after 3 iterations at a gap of ~6e-4 bits (solver.py,
# "Infeasibility and centring").

BOUNDARY_RESAMPLES = {
    "resample_A": [230, 30, 44, 212, 46, 210, 184, 44],  # jammed on every backend
    "resample_B": [222, 34, 40, 214, 40, 219, 173, 58],  # jammed on the "cpu" backend
}


@pytest.mark.parametrize("name", sorted(BOUNDARY_RESAMPLES))
def test_boundary_resample_reproducers(name, backend):
    P = np.array(BOUNDARY_RESAMPLES[name], dtype=np.float64).reshape(2, 2, 2) / 1000
    result = solve(P, backend)
    assert field(result, "converged"), f"not converged (gap {field(result, 'gap'):.3g} bits)"
    assert field(result, "gap") <= 1e-8
    assert_atoms_close(atoms_array(result), reference_array("cvxpy", name, P), ATOL[torch.float64], "cvxpy/Clarabel")
    assert_identities(result, P, ATOL[torch.float64])


def boundary_resamples(rng, count: int) -> np.ndarray:
    """Multinomial (N = 1000) resamples of noisy-XOR populations, of the two
    reproducers' frequencies and of Markov-chain populations (unique2 = 0)."""
    populations = [np.array(counts, dtype=np.float64) / 1000 for counts in BOUNDARY_RESAMPLES.values()]
    xor = np.array([[[0, 1], [1, 0]], [[1, 0], [0, 1]]], dtype=np.float64)  # P(y | x1, x2) of y = x1 ⊕ x2
    for noise in (0.05, 0.1, 0.13, 0.2):
        populations.append((0.25 * ((1 - noise) * xor + noise * (1 - xor))).ravel())
    populations += [boundary_joint(rng, (2, 2, 2)).ravel() for _ in range(4)]
    samples = [rng.multinomial(1000, populations[i % len(populations)]) / 1000 for i in range(count)]
    return np.array(samples).reshape(count, 2, 2, 2)


def test_boundary_resamples_converge(backend):
    P = boundary_resamples(np.random.default_rng(2024), 400)
    result = fastpid.pid(torch.tensor(P), backend=backend)
    gap = result.gap.numpy()
    assert result.converged.all(), (
        f"{(~result.converged).sum().item()} of {len(P)} not converged, gaps "
        f"{np.sort(gap[~result.converged.numpy()])[-5:]}"
    )
    assert gap.max() <= 1e-8
