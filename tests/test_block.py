"""The block-per-joint CUDA op's code on the CPU.

``torch.ops.fastpid.broja_solve_block`` solves each joint by a team of ``lanes``
threads (csrc/broja_block.h: the solver's loops split among the lanes, sums and
extremes reduced across them; a thread block per joint on CUDA).  On the CPU the
same code runs with the team emulated: its lanes run one after the other between
syncs, in alternating order, so that a missing sync gives a wrong value.  Against
the reference and the CPU op: certified, the same values, iteration counts within
one, on the accuracy families, with teams of one lane, of a few and of a warp.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastpid._C")

from conftest import SOLVE_TOL, assert_agrees_with_reference_and_cpu_op, joint_batch  # noqa: E402

import fastpid  # noqa: E402
from fastpid import solver  # noqa: E402
from fastpid.examples import (  # noqa: E402
    CANONICAL,
    boundary_joint,
    degenerate_joints,
    deterministic_batch,
    dirichlet_joint,
    near_degenerate_batch,
    sparse_joint,
)

LANES = (1, 3, 32)  # a team of one, fewer lanes than most loops have entries, a warp


def block_solve(p: torch.Tensor, lanes: int, tol: float = SOLVE_TOL, max_iter: int = 100) -> solver.Solution:
    return solver.Solution(*torch.ops.fastpid.broja_solve_block(p, tol, max_iter, solver.PATIENCE, lanes))


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("shape, count", [((2, 2, 2), 6), ((3, 4, 2), 5), ((5, 5, 5), 5), ((8, 8, 4), 3)])
def test_dirichlet_joints(monkeypatch, shape, count, lanes):
    rng = np.random.default_rng(sum(shape) + 11)
    p = joint_batch(dirichlet_joint(rng, shape, 1.0) for _ in range(count))
    assert_agrees_with_reference_and_cpu_op(monkeypatch, p, block_solve(p, lanes))


@pytest.mark.parametrize("lanes", LANES)
def test_skewed_and_flat_joints(monkeypatch, lanes):
    rng = np.random.default_rng(13)
    p = joint_batch(dirichlet_joint(rng, (4, 5, 3), c) for c in (0.1, 0.1, 5.0, 5.0))
    assert_agrees_with_reference_and_cpu_op(monkeypatch, p, block_solve(p, lanes))


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 3, 5)])
def test_structural_zeros_sparse_and_boundary_joints(monkeypatch, shape, lanes):
    rng = np.random.default_rng(17)
    joints = list(degenerate_joints(shape, rng).values())
    joints += [sparse_joint(rng, shape, z) for z in (0.5, 0.9)] + [boundary_joint(rng, shape)]
    p = joint_batch(joints)
    assert_agrees_with_reference_and_cpu_op(monkeypatch, p, block_solve(p, lanes))


@pytest.mark.parametrize("lanes", LANES)
def test_canonical_gates(monkeypatch, lanes):
    for shape in {P.shape for P in CANONICAL.values()}:
        p = joint_batch(P for P in CANONICAL.values() if P.shape == shape)
        assert_agrees_with_reference_and_cpu_op(monkeypatch, p, block_solve(p, lanes))


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("family", [deterministic_batch, near_degenerate_batch])
def test_boundary_optima_and_tiny_cells(monkeypatch, family, lanes):
    """Exact zeros on the optimum's face and near-empty symbols (cells down to 1e-15)."""
    p = torch.from_numpy(family(np.random.default_rng(19), (4, 3, 5), 8))
    assert_agrees_with_reference_and_cpu_op(monkeypatch, p, block_solve(p, lanes))


@pytest.mark.parametrize("lanes", LANES)
def test_plug_in_joints_with_most_cells_off_the_domain(monkeypatch, lanes):
    """The sparse-cell loops (joints whose cells are listed pair by pair)."""
    generator = torch.Generator().manual_seed(7)
    y = torch.randint(4, (6, 60), generator=generator)
    x1 = (2 * y + torch.randint(3, y.shape, generator=generator)) % 8
    x2 = (y + torch.randint(4, y.shape, generator=generator)) % 6
    p = fastpid.joint_from_samples(x1, x2, y, 8, 6, 4).double()
    assert_agrees_with_reference_and_cpu_op(monkeypatch, p, block_solve(p, lanes))


def test_a_mid_size_joint_with_more_lanes_than_most_loops():
    """20 × 20 × 6, the mid regime's shape, by 128 lanes: the same iterate as by one."""
    p = joint_batch([dirichlet_joint(np.random.default_rng(3), (20, 20, 6), 1.0)])
    one, team = block_solve(p, 1), block_solve(p, 128)
    support = solver.Support.of(p)
    values = [solver.certificate(s.lam1, s.lam2, s.w, support)[1] for s in (one, team)]
    assert bool(one.converged.all()) and bool(team.converged.all())
    assert (one.iterations - team.iterations).abs().max() <= 1
    assert (values[0] - values[1]).abs().max() <= 1e-10


def test_teams_share_nothing_but_their_joint():
    """With several teams (threads), each joint's answer is bit for bit the one it has alone."""
    rng = np.random.default_rng(41)
    p = joint_batch(
        dirichlet_joint(rng, (4, 4, 3), 0.5) if i % 3 else sparse_joint(rng, (4, 4, 3), 0.6) for i in range(9)
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [block_solve(p[i : i + 1], 4) for i in range(len(p))]
        torch.set_num_threads(3)
        together = block_solve(p, 4)
    finally:
        torch.set_num_threads(threads)
    for i, solution in enumerate(alone):
        for name in ("lam1", "lam2", "w", "iterations", "converged"):
            assert torch.equal(getattr(solution, name), getattr(together, name)[i : i + 1]), name


def test_empty_batch_and_input_checks():
    out = torch.ops.fastpid.broja_solve_block(torch.empty(0, 2, 3, 2, dtype=torch.float64), 1e-8, 10, 5, 4)
    assert [tuple(t.shape) for t in out] == [(0, 2, 2), (0, 3, 2), (0, 2, 3), (0,), (0,)]
    p = torch.full((1, 2, 2, 2), 0.125, dtype=torch.float64)
    for lanes in (0, 257):
        with pytest.raises(RuntimeError, match="lanes"):
            torch.ops.fastpid.broja_solve_block(p, 1e-8, 10, 5, lanes)
    with pytest.raises(RuntimeError, match="float64"):
        torch.ops.fastpid.broja_solve_block(torch.ones(1, 2, 2, 2), 1e-8, 10, 5, 4)
