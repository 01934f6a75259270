"""The compiled CPU op ``torch.ops.fastpid.broja_solve`` against the reference
``fastpid.solver.solve``: same iteration, joint by joint.

The op runs the reference's algorithm with different linear algebra (a Schur
complement instead of one dense Cholesky), so iterates agree to rounding, not
bit for bit.  What must hold: the same best-iterate index (within 1), values
V = f(Q) of the certificate within 1e-10 nats, certified gaps ≤ 1e-9 nats, and
the output conventions of ``fastpid.solver.Solution`` (λ = 0 at masked cells).
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

pytest.importorskip("fastpid._C")

from conftest import SOLVE_TOL, assert_same_solution, joint_batch  # noqa: E402

import fastpid  # noqa: E402
from fastpid import solver  # noqa: E402
from fastpid.examples import CANONICAL, degenerate_joints, dirichlet_joint, sparse_joint  # noqa: E402

SCHEMA = (
    "fastpid::broja_solve(Tensor p, float tol, int max_iter, int patience) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)


def cpu_solve(p: torch.Tensor, tol: float = SOLVE_TOL, max_iter: int = 100, patience: int = solver.PATIENCE):
    return solver.Solution(*torch.ops.fastpid.broja_solve(p, tol, max_iter, patience))


def assert_matches_reference(p: torch.Tensor, tol: float = SOLVE_TOL) -> None:
    ours = cpu_solve(p, tol)
    assert_same_solution(ours, solver.solve(p, tol=tol), p, tol)
    support = solver.Support.of(p)
    # Output convention of the reference: the pinned λ2 (heaviest x2 per target
    # value) keeps its start value log P2.
    pinned = support.p2.argmax(1, keepdim=True)
    start = torch.where(support.p2 > 0, support.p2.log(), torch.zeros_like(support.p2))
    torch.testing.assert_close(ours.lam2.gather(1, pinned), start.gather(1, pinned), rtol=0, atol=1e-14)


def test_reference_constants_are_the_compiled_ones():
    """csrc/ repeats these constants of fastpid/solver.py: the op reports its own."""
    compiled = torch.ops.fastpid.broja_constants()
    assert dict(zip(solver.COMPILED_CONSTANTS, compiled)) == {
        name: float(getattr(solver, name)) for name in solver.COMPILED_CONSTANTS
    }


@pytest.mark.parametrize("tol", [1e-8, 1e-12, 1e-2])
def test_certificates_far_from_the_optimum_are_skipped_without_effect(tol):
    """Certificates are taken only where Σ w h ≤ CERTIFY_ABOVE max(tol, STALL_GAP) or at
    max_iter: every max_iter still returns its last iterate (the gaps fall on these
    joints), converged where the full solve would be, alike in both implementations."""
    rng = np.random.default_rng(29)
    for shape, concentration in (((12, 10, 6), 1.0), ((5, 5, 5), 0.3)):
        p = joint_batch(dirichlet_joint(rng, shape, concentration) for _ in range(3))
        full = cpu_solve(p, tol)
        assert full.converged.all()
        for k in range(int(full.iterations.max()) + 1):
            ours, ref = cpu_solve(p, tol, k), solver.solve(p, tol=tol, max_iter=k)
            assert torch.equal(ours.iterations, torch.minimum(torch.tensor(k), full.iterations))
            assert torch.equal(ours.iterations, ref.iterations) and torch.equal(ours.converged, ref.converged)


def test_trajectory_follows_the_reference():
    """Iterate by iterate (tol 0, no stall): the certificates agree along the way."""
    rng = np.random.default_rng(23)
    p = joint_batch(dirichlet_joint(rng, (4, 3, 5), 0.5) for _ in range(8))
    support = solver.Support.of(p)
    for k in (1, 2, 4, 6):
        ours = cpu_solve(p, 0.0, k, 1000)
        ref = solver.solve(p, tol=0.0, max_iter=k, patience=1000)
        assert torch.equal(ours.iterations, ref.iterations)
        _, value, gap = solver.certificate(ours.lam1, ours.lam2, ours.w, support)
        _, ref_value, ref_gap = solver.certificate(ref.lam1, ref.lam2, ref.w, support)
        torch.testing.assert_close(gap, ref_gap, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(value, ref_value, rtol=0, atol=1e-10)


def test_schema():
    assert str(torch.ops.fastpid.broja_solve.default._schema) == SCHEMA


@pytest.mark.parametrize(
    "shape, count",
    [((2, 2, 2), 40), ((3, 4, 2), 40), ((4, 2, 3), 40), ((5, 5, 5), 24), ((10, 10, 6), 3), ((20, 20, 6), 1)],
)
def test_dirichlet_joints(shape, count):
    rng = np.random.default_rng(sum(shape))
    assert_matches_reference(joint_batch(dirichlet_joint(rng, shape, 1.0) for _ in range(count)))


@pytest.mark.parametrize("concentration", [0.2, 5.0])
def test_skewed_and_flat_joints(concentration):
    rng = np.random.default_rng(7)
    assert_matches_reference(joint_batch(dirichlet_joint(rng, (4, 5, 3), concentration) for _ in range(16)))


@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 3, 5), (10, 10, 6)])
def test_structural_zeros(shape):
    """Empty symbols, empty target classes, point mass, constant and independent targets."""
    assert_matches_reference(joint_batch(degenerate_joints(shape).values()))


def test_sparse_joints():
    rng = np.random.default_rng(3)
    assert_matches_reference(joint_batch(sparse_joint(rng, (4, 3, 5), 0.6) for _ in range(16)))


@pytest.mark.parametrize("shape, samples", [((20, 20, 10), 1280), ((8, 6, 4), 60)])
def test_plug_in_joints_with_most_cells_off_the_domain(shape, samples):
    """Plug-in joints of samples whose x1 and x2 each take a few symbols per y: the
    solver's sparse-cell loops (csrc/broja/joint.h, "Sparse joints") against the reference."""
    generator = torch.Generator().manual_seed(7)
    n1, n2, ny = shape
    y = torch.randint(ny, (8, samples), generator=generator)
    x1 = (2 * y + torch.randint(3, y.shape, generator=generator)) % n1
    x2 = (y + torch.randint(4, y.shape, generator=generator)) % n2
    p = fastpid.joint_from_samples(x1, x2, y, n1, n2, ny).double()
    support = solver.Support.of(p)
    on_domain = (support.p1[:, :, None] > 0) & (support.p2[:, None] > 0)
    assert on_domain.flatten(1).double().mean(1).max() < 0.5  # most cells off the domain
    assert_matches_reference(p)


def test_zero_rows_columns_and_target_classes_together():
    rng = np.random.default_rng(5)
    P = dirichlet_joint(rng, (5, 4, 4), 1.0)
    P[1], P[:, 2], P[..., 0] = 0.0, 0.0, 0.0
    P[3, :, 1] = 0.0  # a zero row of P1 inside a live target class
    assert_matches_reference(joint_batch([P / P.sum()]))


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_canonical_gates(name):
    assert_matches_reference(joint_batch([CANONICAL[name]]))


def test_boundary_resamples():
    """2×2×2 sample joints (N = 1000) with unique1 or unique2 at 0, where the
    iteration used to jam (solver.py, "Infeasibility and centring"): the two
    reproducers and resamples of a noisy XOR."""
    rng = np.random.default_rng(29)
    joints = [
        np.array(c, dtype=np.float64).reshape(2, 2, 2) / 1000
        for c in ([230, 30, 44, 212, 46, 210, 184, 44], [222, 34, 40, 214, 40, 219, 173, 58])
    ]
    xor = np.array([[[0.87, 0.13], [0.13, 0.87]], [[0.13, 0.87], [0.87, 0.13]]]) / 4
    joints += [rng.multinomial(1000, xor.ravel()).reshape(2, 2, 2) / 1000 for _ in range(30)]
    assert_matches_reference(joint_batch(joints))


def test_batch_mixes_early_and_late_joints():
    """Joints that stop at different iterations do not affect each other."""
    rng = np.random.default_rng(11)
    shape = (4, 4, 3)
    point = np.zeros(shape)
    point[1, 2, 0] = 1.0
    joints = [
        point,
        CANONICAL["XOR"].reshape(2, 2, 2),
        dirichlet_joint(rng, shape, 0.1),
        dirichlet_joint(rng, shape, 5.0),
        sparse_joint(rng, shape, 0.5),
    ]
    padded = [np.pad(P, [(0, n - s) for n, s in zip(shape, P.shape)]) for P in joints]
    p = joint_batch(padded)
    together = cpu_solve(p)
    assert together.iterations.min() < together.iterations.max()
    for i in range(len(padded)):
        alone = cpu_solve(p[i : i + 1])
        for field in ("lam1", "lam2", "w", "iterations", "converged"):
            assert torch.equal(getattr(together, field)[i : i + 1], getattr(alone, field)), field
    assert_matches_reference(p)


def test_thread_count_changes_nothing():
    rng = np.random.default_rng(13)
    p = joint_batch(dirichlet_joint(rng, (3, 3, 4), 1.0) for _ in range(64))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu_solve(p)
        torch.set_num_threads(2)
        two = cpu_solve(p)
    finally:
        torch.set_num_threads(threads)
    for field in ("lam1", "lam2", "w", "iterations", "converged"):
        assert torch.equal(getattr(one, field), getattr(two, field)), field


def test_max_iter_zero_returns_the_start_point():
    rng = np.random.default_rng(17)
    p = joint_batch(dirichlet_joint(rng, (3, 2, 4), 1.0) for _ in range(4))
    ours, ref = cpu_solve(p, max_iter=0), solver.solve(p, tol=SOLVE_TOL, max_iter=0)
    assert torch.equal(ours.iterations, ref.iterations) and not ours.converged.any()
    for field in ("lam1", "lam2", "w"):
        torch.testing.assert_close(getattr(ours, field), getattr(ref, field), rtol=1e-14, atol=1e-14)


def test_output_types_and_empty_batch():
    out = torch.ops.fastpid.broja_solve(torch.zeros(0, 3, 4, 2, dtype=torch.float64), SOLVE_TOL, 100, 5)
    assert [t.shape for t in out] == [(0, 3, 2), (0, 4, 2), (0, 3, 4), (0,), (0,)]
    assert [t.dtype for t in out] == [torch.float64] * 3 + [torch.int64, torch.bool]


def test_fake_tensor_shapes():
    """The Meta kernel gives torch.compile the output shapes without solving."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = torch.ops.fastpid.broja_solve(torch.empty(7, 3, 4, 2, dtype=torch.float64), SOLVE_TOL, 100, 5)
    assert [tuple(t.shape) for t in out] == [(7, 3, 2), (7, 4, 2), (7, 3, 4), (7,), (7,)]
    assert [t.dtype for t in out] == [torch.float64] * 3 + [torch.int64, torch.bool]


def test_opcheck():
    rng = np.random.default_rng(19)
    p = joint_batch(dirichlet_joint(rng, (3, 2, 3), 1.0) for _ in range(3))
    torch.library.opcheck(
        torch.ops.fastpid.broja_solve.default, (p, SOLVE_TOL, 50, 5), test_utils=("test_schema", "test_faketensor")
    )


@pytest.mark.parametrize(
    "p, message",
    [
        (torch.full((1, 2, 2, 2), 0.125, dtype=torch.float32), "float64"),
        (torch.full((2, 2, 2), 0.125, dtype=torch.float64), "shape"),
        (torch.full((1, 2, 2, 4), 0.0625, dtype=torch.float64)[..., ::2], "contiguous"),
    ],
)
def test_input_checks(p, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fastpid.broja_solve(p, SOLVE_TOL, 100, 5)


@pytest.mark.parametrize("max_iter, patience", [(-1, 5), (10, -1)])
def test_argument_checks(max_iter, patience):
    with pytest.raises(RuntimeError, match="non-negative"):
        torch.ops.fastpid.broja_solve(
            torch.full((1, 2, 2, 2), 0.125, dtype=torch.float64), SOLVE_TOL, max_iter, patience
        )


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the AVX2 copy is x86-64 only")
def test_avx2_copy_uses_sleef():
    """x86-64 builds of torch export SLEEF's vector exp and log; setup.py then builds the AVX2
    copy's long passes on them (without, it would silently fall back to scalar libm calls)."""
    from fastpid import _C

    assert _C.cpu_vector_math == "sleef"


def test_instruction_set_copies_agree(monkeypatch):
    """The solver copy built for AVX2 + FMA (csrc/cpu/broja_cpu_avx2.cpp, where the
    processor has both) and the baseline copy: the same solution to rounding."""
    from fastpid import _C

    rng = np.random.default_rng(19)
    small = joint_batch(dirichlet_joint(rng, (5, 5, 5), 0.5) for _ in range(16))
    large = joint_batch([dirichlet_joint(rng, (20, 20, 6), 0.5), sparse_joint(rng, (20, 20, 6), 0.5)])
    default = [cpu_solve(p) for p in (small, large)]
    monkeypatch.setenv("FASTPID_CPU_ISA", "baseline")
    assert _C.cpu_instruction_set() == "baseline"
    for p, ours in zip((small, large), default):
        assert_same_solution(ours, cpu_solve(p), p)


def one_by_one(monkeypatch, p: torch.Tensor, **kwargs) -> solver.Solution:
    """The op with the lanes off (FASTPID_CPU_LANES=0): every joint solved alone."""
    with monkeypatch.context() as patch:
        patch.setenv("FASTPID_CPU_LANES", "0")
        return cpu_solve(p, **kwargs)


def mixed_small_batch(rng, shape, count: int) -> torch.Tensor:
    """Dirichlet joints of several concentrations (positive marginals: they go in
    lanes) and, every fifth, a sparse joint or one with an empty target class."""
    joints = []
    for i in range(count):
        if i % 5 == 4:
            P = sparse_joint(rng, shape, 0.5) if i % 10 == 4 else dirichlet_joint(rng, shape, 1.0)
            if i % 10 == 9:
                P[..., 0] = 0.0
                P = P / P.sum()
        else:
            P = dirichlet_joint(rng, shape, (0.2, 1.0, 5.0, 0.5)[i % 4])
        joints.append(P)
    return joint_batch(joints)


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 4, 2), (5, 5, 5), (4, 3, 6), (8, 8, 4)])
def test_lanes_match_one_by_one_and_the_reference(monkeypatch, shape):
    """Small joints with positive marginals are solved four at a time by the AVX2 copy
    (csrc/cpu/lanes.h, pinned at the first x2, moved to the heaviest-x2 gauge
    afterwards): certified, the reference's value and gauge, and the one-by-one
    solve's iteration count within one."""
    rng = np.random.default_rng(sum(shape) + 31)
    p = mixed_small_batch(rng, shape, 23)  # not a multiple of four: the last group is padded
    assert_matches_reference(p)
    ours, alone = cpu_solve(p), one_by_one(monkeypatch, p)
    assert_same_solution(ours, alone, p)
    from fastpid import _C

    if _C.cpu_instruction_set() == "avx2":  # the copy with lanes (csrc/cpu/lanes.h)
        support = solver.Support.of(p)
        in_lanes = (support.p1 > 0).flatten(1).all(1) & (support.p2 > 0).flatten(1).all(1)
        assert not torch.equal(ours.w[in_lanes], alone.w[in_lanes])  # the lanes ran: other roundings


def test_a_joints_lane_solution_does_not_depend_on_its_neighbours():
    """Lanes decide per joint (masks), so a joint's answer is bit for bit the same
    alone, in any order and beside any other joints."""
    rng = np.random.default_rng(37)
    p = mixed_small_batch(rng, (4, 4, 3), 18)
    together = cpu_solve(p)
    order = torch.from_numpy(rng.permutation(len(p)))
    shuffled = cpu_solve(p[order].contiguous())
    for field in ("lam1", "lam2", "w", "iterations", "converged"):
        assert torch.equal(getattr(shuffled, field), getattr(together, field)[order]), field
    for i in (0, 5, 17):
        alone = cpu_solve(p[i : i + 1])
        for field in ("lam1", "lam2", "w", "iterations", "converged"):
            assert torch.equal(getattr(alone, field), getattr(together, field)[i : i + 1]), field


@pytest.mark.parametrize("max_iter", [0, 3])
def test_joints_the_lanes_leave_unconverged_get_the_one_by_one_answer(monkeypatch, max_iter):
    """A joint not converged in lanes (here: too few iterations) is solved again alone."""
    rng = np.random.default_rng(41)
    p = mixed_small_batch(rng, (5, 5, 5), 9)
    ours, alone = cpu_solve(p, max_iter=max_iter), one_by_one(monkeypatch, p, max_iter=max_iter)
    assert not ours.converged.any()
    for field in ("lam1", "lam2", "w", "iterations", "converged"):
        assert torch.equal(getattr(ours, field), getattr(alone, field)), field


def test_joints_with_an_empty_marginal_cell_are_solved_one_by_one(monkeypatch):
    """Lanes share one structure; a joint with P1 or P2 = 0 somewhere keeps its own
    (the one-by-one solve's answer, bit for bit)."""
    rng = np.random.default_rng(43)
    p = mixed_small_batch(rng, (3, 4, 2), 20)
    support = solver.Support.of(p)
    sparse = ~(support.p1 > 0).flatten(1).all(1) | ~(support.p2 > 0).flatten(1).all(1)
    assert 0 < int(sparse.sum()) < len(p)
    ours, alone = cpu_solve(p), one_by_one(monkeypatch, p)
    for field in ("lam1", "lam2", "w", "iterations", "converged"):
        assert torch.equal(getattr(ours, field)[sparse], getattr(alone, field)[sparse]), field
