"""Shared fixtures and helpers for the fastpid test suite.

Every test that calls ``fastpid.pid`` takes the ``backend`` fixture, so the same
test runs once per backend that this installation can use ("torch" always,
"cpu" once the C++ extension is built).

Tolerances (bits) follow the accuracy targets of the project:

* float64 input: every atom within ``ATOL[torch.float64]`` = 1e-7 of the
  reference, certified gap at most 1e-7;
* float32 input: within ``ATOL[torch.float32]`` = 1e-4.

Invariance tests (swap, relabel, pad, batch) use the certificate instead of a
fixed tolerance: every atom is within ``gap`` of the exact value, so two
answers for the same exact value may differ by at most ``gap_a + gap_b`` (plus
floating-point rounding, ``ROUNDING``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import fastpid
from fastpid import solver
from fastpid.references import ATOMS, cvxpy_pid, dit_pid

# One intra-op thread unless FASTPID_TEST_THREADS says otherwise: on a small
# shared machine, torch's OpenMP threads spin against OpenBLAS's (cvxpy, dit run
# in the same process) and against other processes, which made the "torch"
# backend 10-70x slower (0.04 s -> 3 s on a 20x20x6 joint).  The multithreaded
# paths are still checked: test_accuracy.py::test_thread_count_changes_nothing.
TEST_THREADS = int(os.environ.get("FASTPID_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)

BACKENDS = fastpid.available_backends()
# The CPU, and a CUDA device where there is one: tests of code that runs where its tensors are.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
FIELDS = ATOMS + ("mi",)
ATOL = {torch.float64: 1e-7, torch.float32: 1e-4}
GAP_MAX = 1e-7  # bits: the certificate every float64 answer must carry
ROUNDING = 1e-12  # bits: floating-point slack on top of a certified bound
DIT_MAX_CELLS = 250  # dit's cone solver: ~0.04 s at 5³, ~2 s at 10³
CVXPY_MAX_CELLS = 2500  # cvxpy/Clarabel: ~0.2 s at 20×20×6, minutes at 20³


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend that can solve joints on the CPU."""
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    """Deterministic torch randomness in every test."""
    torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded numpy generator for each test."""
    return np.random.default_rng(12345)


def atoms_array(result, index=()) -> np.ndarray:
    """The four atoms (R, U1, U2, S) of one joint of a result as float64 numpy."""
    return np.array([float(np.asarray(_plain(getattr(result, atom)))[index]) for atom in ATOMS])


def field(result, name, index=()) -> float:
    """One field of one joint of a result as a Python float."""
    return float(np.asarray(_plain(getattr(result, name)))[index])


def _plain(value):
    """A tensor as numpy (numpy input gives numpy fields already)."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def certified_bound(*results, index=()) -> float:
    """How far two answers for the same exact atoms may lie apart: Σ gaps + rounding."""
    return sum(max(field(r, "gap", index), 0.0) for r in results) + ROUNDING


_REFERENCE_CACHE: dict = {}


def reference(solver: str, key: str, P: np.ndarray) -> dict:
    """Atoms of P in bits from "dit" (cone) or "cvxpy" (Clarabel), cached by ``key``
    for the whole session so float32 and float64 tests share one reference solve."""
    cache_key = (solver, key, P.shape, hash(np.asarray(P, dtype=np.float64).tobytes()))
    if cache_key not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[cache_key] = (dit_pid if solver == "dit" else cvxpy_pid)(P)
    return _REFERENCE_CACHE[cache_key]


def reference_array(solver: str, key: str, P: np.ndarray) -> np.ndarray:
    ref = reference(solver, key, P)
    return np.array([ref[atom] for atom in ATOMS])


def plugin_mi(P) -> dict:
    """I(Y;X1), I(Y;X2), I(Y;X1,X2) in bits via ``fastpid.mutual_information`` (float64)."""
    tensor = torch.tensor(np.asarray(P, dtype=np.float64))
    tensor = tensor / tensor.sum((-3, -2, -1), keepdim=True)
    return {k: v.numpy() for k, v in fastpid.mutual_information(tensor).items()}


def assert_identities(result, P, atol: float) -> None:
    """R+U1+U2+S = I(Y;X1,X2) = mi, R+U1 = I(Y;X1), R+U2 = I(Y;X2), to ``atol`` bits."""
    R, U1, U2, S, mi = (np.asarray(_plain(getattr(result, name)), dtype=np.float64) for name in FIELDS)
    info = plugin_mi(P)
    np.testing.assert_allclose(R + U1 + U2 + S, mi, rtol=0, atol=atol, err_msg="R + U1 + U2 + S != mi")
    np.testing.assert_allclose(mi, info["y;x1x2"], rtol=0, atol=atol, err_msg="mi != I(Y; X1, X2)")
    np.testing.assert_allclose(R + U1, info["y;x1"], rtol=0, atol=atol, err_msg="R + U1 != I(Y; X1)")
    np.testing.assert_allclose(R + U2, info["y;x2"], rtol=0, atol=atol, err_msg="R + U2 != I(Y; X2)")


def neg_conditional_entropy_bits(q: np.ndarray) -> float:
    """f(Q) = Σ Q log[Q / Q(x1, x2)] = −H_Q(Y | X1, X2), in bits."""
    q = np.asarray(q, dtype=np.float64)
    pair = q.sum(-1)
    xlogx = lambda a: np.where(a > 0, a * np.log2(np.where(a > 0, a, 1.0)), 0.0).sum()  # noqa: E731
    return float(xlogx(q) - xlogx(pair))


def smallest_positive_cell(P: np.ndarray) -> float:
    return float(P[P > 0].min())


# Comparing a compiled backend's solve with the reference iteration (nats):
# strict, so that both solvers run to their accuracy limit.
def joint_batch(joints, device="cpu") -> torch.Tensor:
    """Joints of one shape as a float64 batch (B, n1, n2, ny) on ``device``."""
    return torch.tensor(np.stack([np.asarray(P, dtype=np.float64) for P in joints]), device=device)


SOLVE_TOL = 1e-10
SOLVE_VALUE_ATOL = 1e-10
SOLVE_GAP_MAX = 1e-9


def assert_same_solution(ours, ref, p: torch.Tensor, tol: float = SOLVE_TOL):
    """Two ``fastpid.solver.Solution`` of the batch ``p``: both certified, the same
    value and (within one) the same iteration count; ``converged`` matches the gap
    and λ = 0 where P1 or P2 vanishes.  Returns our certified values."""
    support = solver.Support.of(p)
    _, value, gap = solver.certificate(ours.lam1, ours.lam2, ours.w, support)
    _, ref_value, ref_gap = solver.certificate(ref.lam1, ref.lam2, ref.w, support)
    assert torch.isfinite(value).all() and torch.isfinite(gap).all()
    assert (ours.iterations - ref.iterations).abs().max() <= 1, (ours.iterations, ref.iterations)
    assert gap.max() <= SOLVE_GAP_MAX and ref_gap.max() <= SOLVE_GAP_MAX, (gap, ref_gap)
    assert (value - ref_value).abs().max() <= SOLVE_VALUE_ATOL, value - ref_value
    assert torch.equal(ours.converged, gap <= tol)
    assert torch.all(ours.lam1[support.p1 == 0] == 0) and torch.all(ours.lam2[support.p2 == 0] == 0)
    return value


def cpu_side_solve(monkeypatch, p: torch.Tensor, tol: float = SOLVE_TOL) -> solver.Solution:
    """The CPU op with the device's elimination (side) and every joint alone (no lanes)."""
    with monkeypatch.context() as patch:
        patch.setenv("FASTPID_ELIMINATION", "side")
        patch.setenv("FASTPID_CPU_LANES", "0")
        return solver.Solution(*torch.ops.fastpid.broja_solve(p, tol, 100, solver.PATIENCE))


def assert_agrees_with_reference_and_cpu_op(monkeypatch, p: torch.Tensor, ours) -> None:
    """``ours``, a device solver's ``Solution`` of ``p`` run on the host, against the
    reference's and the CPU op's answers: the same certified values and gaps, the
    same convergence, iteration counts within one; λ = 0 where P1 or P2 vanishes.  (A
    joint may stop unconverged with a gap below the stall threshold in all three.)"""
    support = solver.Support.of(p)
    _, value, gap = solver.certificate(ours.lam1, ours.lam2, ours.w, support)
    assert torch.isfinite(value).all() and torch.equal(ours.converged, gap <= SOLVE_TOL)
    assert torch.all(ours.lam1[support.p1 == 0] == 0) and torch.all(ours.lam2[support.p2 == 0] == 0)
    for other in (solver.solve(p, tol=SOLVE_TOL), cpu_side_solve(monkeypatch, p)):
        _, other_value, other_gap = solver.certificate(other.lam1, other.lam2, other.w, support)
        assert (ours.iterations - other.iterations).abs().max() <= 1, (ours.iterations, other.iterations)
        assert torch.equal(ours.converged, other.converged)
        assert (value - other_value).abs().max() <= SOLVE_VALUE_ATOL, value - other_value
        assert (gap - other_gap).abs().max() <= SOLVE_GAP_MAX, gap - other_gap
