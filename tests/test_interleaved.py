"""The CUDA ops' code and workspace layout on the CPU.

``torch.ops.fastpid.broja_solve_interleaved`` and ``broja_certificate_interleaved``
run csrc/broja_interleaved.h, the code the CUDA kernels run (one thread per
joint, the workspaces of a warp's 32 joints interleaved element by element),
on the host (the joints of a group in parallel threads, as a warp runs them).
Against the reference and the CPU op (which runs
the same solver with contiguous workspaces and vectorised kernels): certified,
the same values, iteration counts within one, on the accuracy families.  And
the layout itself: a joint's answer is bit for bit the same whatever its lane
and its neighbours, so no lane reads or writes another's elements.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastpid._C")

from conftest import SOLVE_TOL, assert_agrees_with_reference_and_cpu_op, joint_batch  # noqa: E402

import fastpid  # noqa: E402
from fastpid import backends, solver  # noqa: E402
from fastpid.examples import (  # noqa: E402
    CANONICAL,
    boundary_joint,
    degenerate_joints,
    deterministic_batch,
    dirichlet_joint,
    near_degenerate_batch,
    sparse_joint,
)

GROUP = 32  # joints per interleaved workspace (csrc/broja_interleaved.h, kGroup)
FIELDS = ("lam1", "lam2", "w", "iterations", "converged")


def interleaved_solve(p: torch.Tensor, tol: float = SOLVE_TOL, max_iter: int = 100) -> solver.Solution:
    return solver.Solution(*torch.ops.fastpid.broja_solve_interleaved(p, tol, max_iter, solver.PATIENCE))


def assert_matches_reference_and_cpu_op(monkeypatch, p: torch.Tensor) -> None:
    assert_agrees_with_reference_and_cpu_op(monkeypatch, p, interleaved_solve(p))


@pytest.mark.parametrize(
    "shape, count", [((2, 2, 2), 40), ((3, 4, 2), 33), ((5, 5, 5), 37), ((8, 8, 4), 33), ((10, 10, 6), 3)]
)
def test_dirichlet_joints(monkeypatch, shape, count):
    """Batches past one group (the last one partly filled) and of less than one."""
    rng = np.random.default_rng(sum(shape) + 11)
    assert_matches_reference_and_cpu_op(
        monkeypatch, joint_batch(dirichlet_joint(rng, shape, 1.0) for _ in range(count))
    )


@pytest.mark.parametrize("concentration", [0.1, 5.0])
def test_skewed_and_flat_joints(monkeypatch, concentration):
    rng = np.random.default_rng(13)
    assert_matches_reference_and_cpu_op(
        monkeypatch, joint_batch(dirichlet_joint(rng, (4, 5, 3), concentration) for _ in range(36))
    )


@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 3, 5), (10, 10, 6)])
def test_structural_zeros_sparse_and_boundary_joints(monkeypatch, shape):
    rng = np.random.default_rng(17)
    joints = list(degenerate_joints(shape, rng).values())
    joints += [sparse_joint(rng, shape, z) for z in (0.5, 0.9)] + [boundary_joint(rng, shape)]
    assert_matches_reference_and_cpu_op(monkeypatch, joint_batch(joints))


def test_canonical_gates(monkeypatch):
    shapes = {P.shape for P in CANONICAL.values()}
    for shape in shapes:
        assert_matches_reference_and_cpu_op(monkeypatch, joint_batch(P for P in CANONICAL.values() if P.shape == shape))


@pytest.mark.parametrize("family", [deterministic_batch, near_degenerate_batch])
def test_boundary_optima_and_tiny_cells(monkeypatch, family):
    """Exact zeros on the optimum's face and near-empty symbols (cells down to 1e-15)."""
    rng = np.random.default_rng(19)
    assert_matches_reference_and_cpu_op(monkeypatch, torch.from_numpy(family(rng, (4, 3, 5), 40)))


def test_plug_in_joints_with_most_cells_off_the_domain(monkeypatch):
    """The sparse-cell loops (joints whose cells are listed pair by pair)."""
    generator = torch.Generator().manual_seed(7)
    y = torch.randint(4, (36, 60), generator=generator)
    x1 = (2 * y + torch.randint(3, y.shape, generator=generator)) % 8
    x2 = (y + torch.randint(4, y.shape, generator=generator)) % 6
    assert_matches_reference_and_cpu_op(monkeypatch, fastpid.joint_from_samples(x1, x2, y, 8, 6, 4).double())


def test_a_joints_answer_does_not_depend_on_its_lane_or_neighbours():
    """Interleaved workspaces: each lane reads and writes its own elements only.  The
    op runs a group's joints in parallel threads, as a warp runs them, so lanes that
    shared an element would spoil each other's solves.  A joint gives bit for bit the
    same answer alone (lane 0), in any lane and group, beside joints of other
    structure (dense, sparse, an empty target class), with one thread or four."""
    rng = np.random.default_rng(41)
    joints = []
    for i in range(2 * GROUP + 7):
        P = dirichlet_joint(rng, (4, 4, 3), (0.2, 1.0, 5.0)[i % 3]) if i % 4 else sparse_joint(rng, (4, 4, 3), 0.6)
        if i % 9 == 8:
            P[..., 1] = 0.0
            P = P / P.sum()
        joints.append(P)
    p = joint_batch(joints)
    order = torch.from_numpy(rng.permutation(len(p)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = {i: interleaved_solve(p[i : i + 1]) for i in (0, 5, GROUP + 3, 2 * GROUP + 6)}
        torch.set_num_threads(4)
        together = interleaved_solve(p)
        shuffled = interleaved_solve(p[order].contiguous())
    finally:
        torch.set_num_threads(threads)
    for name in FIELDS:
        assert torch.equal(getattr(shuffled, name), getattr(together, name)[order]), name
    for i, solution in alone.items():
        for name in FIELDS:
            assert torch.equal(getattr(solution, name), getattr(together, name)[i : i + 1]), name


@pytest.mark.parametrize("max_iter", [2, 100])
def test_certificate_matches_the_reference_and_the_cpu_op(max_iter):
    """At the optimum and part-way, with structural zeros."""
    rng = np.random.default_rng(5)
    p = joint_batch(
        [dirichlet_joint(rng, (5, 5, 5), 0.5) for _ in range(GROUP + 2)] + [sparse_joint(rng, (5, 5, 5), 0.4)]
    )
    solution = solver.solve(p, tol=SOLVE_TOL, max_iter=max_iter)
    args = (p, solution.lam1, solution.lam2, solution.w)
    ours = torch.ops.fastpid.broja_certificate_interleaved(*args)
    for got, ref, cpu in zip(ours, backends.torch_certificate(p, solution), torch.ops.fastpid.broja_certificate(*args)):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-13)
        torch.testing.assert_close(got, cpu, rtol=1e-12, atol=1e-14)


def test_empty_batch_and_input_checks():
    out = torch.ops.fastpid.broja_solve_interleaved(torch.empty(0, 2, 3, 2, dtype=torch.float64), 1e-8, 10, 5)
    assert [tuple(t.shape) for t in out] == [(0, 2, 2), (0, 3, 2), (0, 2, 3), (0,), (0,)]
    with pytest.raises(RuntimeError, match="float64"):
        torch.ops.fastpid.broja_solve_interleaved(torch.ones(1, 2, 2, 2), 1e-8, 10, 5)
    with pytest.raises(RuntimeError, match="max_iter"):
        torch.ops.fastpid.broja_solve_interleaved(torch.full((1, 2, 2, 2), 0.125, dtype=torch.float64), 1e-8, -1, 5)
