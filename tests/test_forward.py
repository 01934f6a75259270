"""The compiled forward ``torch.ops.fastpid.broja_forward`` (csrc/broja_forward.cpp)
against the same steps composed in Python: ``check_joint``, ``broja_solve`` and
``broja_certificate``.  It must give the same answer bit for bit, accept and
refuse the same joints, and report which joints it refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastpid._C")

import fastpid  # noqa: E402
from fastpid import backends, solver  # noqa: E402
from fastpid._checks import SUM_TOLERANCE, check_joint  # noqa: E402
from fastpid.examples import degenerate_joints, dirichlet_joint, sparse_joint  # noqa: E402

SCHEMA = (
    "fastpid::broja_forward(Tensor p, bool normalize, float sum_tolerance, float tol, int max_iter, "
    "int patience) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
TOL = 1e-8


def forward(p, normalize=False, max_iter=100):
    return torch.ops.fastpid.broja_forward(p, normalize, SUM_TOLERANCE[p.dtype], TOL, max_iter, solver.PATIENCE)


def composed(p, normalize=False, max_iter=100):
    """The forward from the separate ops, shaped like the batch."""
    joint = check_joint(p, normalize).to(torch.float64)
    batch, cells = joint.shape[:-3], joint.shape[-3:]
    flat = joint.reshape(-1, *cells).contiguous()
    lam1, lam2, w, iterations, converged = torch.ops.fastpid.broja_solve(flat, TOL, max_iter, solver.PATIENCE)
    q, value, gap, entropies = torch.ops.fastpid.broja_certificate(flat, lam1, lam2, w)
    outputs = (torch.cat([entropies, value[:, None]], 1), gap, q, lam1, lam2, iterations, converged)
    return [out.reshape(batch + out.shape[1:]) for out in outputs]


def joints(shape, count, seed):
    rng = np.random.default_rng(seed)
    return np.stack(
        [dirichlet_joint(rng, shape, 0.5) for _ in range(count - 2)]
        + [sparse_joint(rng, shape, 0.4), degenerate_joints(shape, rng)["empty_target_class"]]
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("batch", [(), (6,), (2, 3)], ids=["single", "flat", "2x3"])
@pytest.mark.parametrize("shape", [(3, 4, 2), (5, 5, 5), (12, 9, 4)], ids=lambda s: "x".join(map(str, s)))
def test_matches_composed_ops(shape, batch, dtype):
    count = int(np.prod(batch, dtype=int)) if batch else 1
    p = torch.tensor(joints(shape, max(count, 2), seed=sum(shape))[:count], dtype=dtype).reshape(*batch, *shape)
    *ours, fine = forward(p)
    assert fine.shape == batch and fine.all()
    for mine, theirs in zip(ours, composed(p)):
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_rescales_like_check_joint():
    """normalize=True, a non-contiguous view, and totals within the tolerance of 1."""
    rng = np.random.default_rng(3)
    base = torch.tensor(np.stack([dirichlet_joint(rng, (4, 3, 5), 1.0) for _ in range(4)]))
    scaled = base * torch.tensor([0.5, 3.0, 1e-30, 7e20], dtype=torch.float64)[:, None, None, None]
    view = scaled.transpose(1, 2)  # non-contiguous
    for p, normalize in ((scaled, True), (view, True), (base * (1 + 5e-6), False)):
        *ours, fine = forward(p, normalize)
        assert fine.all()
        for mine, theirs in zip(ours, composed(p, normalize)):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(
    "bad, refused_with_normalize",
    [(-0.1, True), (float("nan"), True), (float("inf"), True), (5.0, False)],
    ids=["negative", "nan", "inf", "off_sum"],
)
def test_flags_the_joints_it_refuses(bad, refused_with_normalize, normalize):
    """Where check_joint refuses a joint, the op solves nothing, flags it, and fastpid.pid names it."""
    p = torch.tensor(joints((3, 2, 4), 6, seed=5)).reshape(2, 3, 3, 2, 4)
    p[1, 2, 0, 1, 3] = bad
    refused = refused_with_normalize or not normalize
    *outputs, fine = forward(p, normalize)
    expected = torch.ones(2, 3, dtype=torch.bool)
    expected[1, 2] = not refused
    assert torch.equal(fine, expected)
    if refused:
        assert all(out.numel() == 0 for out in outputs)
        with pytest.raises(ValueError, match=r"joint \(1, 2\)"):
            fastpid.pid(p, backend="cpu", normalize=normalize)


def test_python_forward_agrees():
    """The "cpu" forward (the op) and its Python form (the same solver, the torch certificate)."""
    p = torch.tensor(joints((4, 4, 3), 5, seed=9))
    for ours, theirs in zip(
        backends.get("cpu").forward(p, False, TOL, 100),
        backends.python_forward(backends.get("cpu").solve, p, False, TOL, 100),
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_schema_fake_and_opcheck():
    assert str(torch.ops.fastpid.broja_forward.default._schema) == SCHEMA
    p = torch.tensor(joints((3, 2, 3), 4, seed=11)).reshape(2, 2, 3, 2, 3)
    torch.library.opcheck(
        torch.ops.fastpid.broja_forward.default,
        (p, False, SUM_TOLERANCE[p.dtype], TOL, 100, solver.PATIENCE),
        test_utils=("test_schema", "test_faketensor"),
    )


@pytest.mark.parametrize(
    "p, message",
    [
        (torch.ones(2, 2, 2, dtype=torch.int64), "float32 or float64"),
        (torch.ones(2, 2, dtype=torch.float64) / 4, r"shape \(\.\.\., n1, n2, ny\)"),
        (torch.ones(0, 2, 2, 2, dtype=torch.float64), "no empty axis"),
    ],
)
def test_input_checks(p, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fastpid.broja_forward(p, False, 1e-5, TOL, 100, solver.PATIENCE)
