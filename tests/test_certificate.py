"""The compiled certificate ``torch.ops.fastpid.broja_certificate`` (csrc/broja.h's
``certify_joint``) against the reference ``fastpid.solver.certificate``.

It must agree on any solution it may be given, not only on optimal ones: the
start point, iterates part-way, and arbitrary dual variables and pair masses,
on joints with structural zeros, empty symbols and target values, point masses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastpid._C")

import fastpid  # noqa: E402
from fastpid import backends, solver  # noqa: E402
from fastpid.examples import degenerate_joints, dirichlet_joint, sparse_joint  # noqa: E402

SCHEMA = "fastpid::broja_certificate(Tensor p, Tensor lam1, Tensor lam2, Tensor w) -> (Tensor, Tensor, Tensor, Tensor)"


def batches():
    rng = np.random.default_rng(41)
    yield "dirichlet_5x5x5", [dirichlet_joint(rng, (5, 5, 5), 0.5) for _ in range(6)]
    yield "sparse_4x3x6", [sparse_joint(rng, (4, 3, 6), 0.4) for _ in range(5)]
    yield "degenerate_2x3x2", list(degenerate_joints((2, 3, 2), rng).values())
    yield "dirichlet_20x20x6", [dirichlet_joint(rng, (20, 20, 6), 0.1)]
    # Plug-in joints of 80 samples, x1 and x2 on a few symbols per y: most cells off the
    # domain (csrc/broja/joint.h, "Sparse joints").
    y = torch.from_numpy(rng.integers(0, 5, (3, 80)))
    x1 = (2 * y + torch.from_numpy(rng.integers(0, 3, y.shape))) % 10
    x2 = (y + torch.from_numpy(rng.integers(0, 4, y.shape))) % 12
    yield "plugin_10x12x5", list(fastpid.joint_from_samples(x1, x2, y, 10, 12, 5).double().numpy())
    # Joints with positive marginals are certified four at a time (csrc/cpu/lanes.h), the others alone.
    yield (
        "mixed_4x4x3",
        (
            [dirichlet_joint(rng, (4, 4, 3), 0.3) for _ in range(7)]
            + [sparse_joint(rng, (4, 4, 3), 0.4) for _ in range(3)]
            + list(degenerate_joints((4, 4, 3), rng).values())
        ),
    )


def solutions(p: torch.Tensor, seed: int):
    """Solutions to certify: the start, two iterates, the optimum, and random λ, w
    (masked like the solver's, where the reference's conventions hold)."""
    for max_iter in (0, 1, 3, 100):
        yield f"iterate{max_iter}", solver.solve(p, tol=1e-12, max_iter=max_iter)
    gen = torch.Generator().manual_seed(seed)
    support = solver.Support.of(p)
    batch, n1, n2, ny = p.shape
    lam1 = torch.randn(batch, n1, ny, generator=gen, dtype=torch.float64) * (support.p1 > 0)
    lam2 = torch.randn(batch, n2, ny, generator=gen, dtype=torch.float64) * (support.p2 > 0)
    w = torch.rand(batch, n1, n2, generator=gen, dtype=torch.float64) * support.pair
    yield (
        "random",
        solver.Solution(lam1, lam2, w, torch.zeros(batch, dtype=torch.int64), torch.zeros(batch, dtype=torch.bool)),
    )


@pytest.mark.parametrize("isa", ["default", "baseline", "no_lanes"])
@pytest.mark.parametrize("name,joints", list(batches()), ids=[name for name, _ in batches()])
def test_matches_reference(name, joints, isa, monkeypatch):
    """Both copies of the op (AVX2 + FMA where the processor has it, and the
    baseline), with small joints in lanes and (FASTPID_CPU_LANES=0) without."""
    if isa == "baseline":
        monkeypatch.setenv("FASTPID_CPU_ISA", "baseline")
    if isa == "no_lanes":
        monkeypatch.setenv("FASTPID_CPU_LANES", "0")
    p = torch.tensor(np.stack(joints))
    for label, solution in solutions(p, seed=len(name)):
        q, value, gap, entropies = torch.ops.fastpid.broja_certificate(p, solution.lam1, solution.lam2, solution.w)
        ref_q, ref_value, ref_gap, ref_entropies = backends.torch_certificate(p, solution)
        torch.testing.assert_close(entropies, ref_entropies, rtol=1e-12, atol=1e-14, msg=label)
        torch.testing.assert_close(q, ref_q, rtol=1e-12, atol=1e-15, msg=label)
        torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-13, msg=label)
        torch.testing.assert_close(gap, ref_gap, rtol=1e-9, atol=1e-13, msg=label)
        assert torch.isfinite(gap).all() and (gap >= -1e-13).all(), label


def test_q_is_exactly_feasible():
    """Q has the pairwise marginals of P to rounding and no negative mass."""
    rng = np.random.default_rng(43)
    p = torch.tensor(np.stack([sparse_joint(rng, (6, 5, 4), 0.5) for _ in range(4)]))
    solution = solver.solve(p, tol=1e-6, max_iter=2)
    q, *_ = torch.ops.fastpid.broja_certificate(p, solution.lam1, solution.lam2, solution.w)
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(2), p.sum(2), rtol=0, atol=1e-15)
    torch.testing.assert_close(q.sum(1), p.sum(1), rtol=0, atol=1e-15)


def test_schema_fake_and_opcheck():
    assert str(torch.ops.fastpid.broja_certificate.default._schema) == SCHEMA
    rng = np.random.default_rng(47)
    p = torch.tensor(np.stack([dirichlet_joint(rng, (3, 2, 3), 1.0) for _ in range(3)]))
    solution = solver.solve(p)
    args = (p, solution.lam1, solution.lam2, solution.w)
    torch.library.opcheck(
        torch.ops.fastpid.broja_certificate.default, args, test_utils=("test_schema", "test_faketensor")
    )


def test_empty_batch():
    out = torch.ops.fastpid.broja_certificate(
        *(torch.zeros(shape, dtype=torch.float64) for shape in ((0, 3, 4, 2), (0, 3, 2), (0, 4, 2), (0, 3, 4)))
    )
    assert [t.shape for t in out] == [(0, 3, 4, 2), (0,), (0,), (0, 4)]


def _args(p=(1, 2, 2, 2), lam1=(1, 2, 2), lam2=(1, 2, 2), w=(1, 2, 2), dtype=torch.float64):
    return [torch.full(shape, 0.125, dtype=dtype) for shape in (p, lam1, lam2, w)]


@pytest.mark.parametrize(
    "args, message",
    [
        (_args(dtype=torch.float32), "dtype float64"),
        (_args(p=(2, 2, 2)), "shape"),
        (_args(w=(1, 2, 3)), "w \\(B, n1, n2\\)"),
        ([torch.full((1, 2, 2, 4), 0.0625, dtype=torch.float64)[..., ::2], *_args()[1:]], "contiguous"),
    ],
)
def test_input_checks(args, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fastpid.broja_certificate(*args)
