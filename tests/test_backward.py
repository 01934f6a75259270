"""The fused backward ``torch.ops.fastpid.broja_backward`` (csrc/broja_backward.h)
against the reference ``fastpid.decomposition.envelope_gradient``.

The gradient's correctness itself (against finite differences, gradcheck in
float64) is tests/test_gradients.py's, for every backend; here the fused op must
equal the reference formula on any input it may get: joints of any positive
scale with structural zeros, empty symbols and target values, point masses,
and arbitrary dual variables and upstream gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastpid._C")

import fastpid  # noqa: E402
from fastpid.examples import degenerate_joints, dirichlet_joint, sparse_joint  # noqa: E402

envelope_gradient = fastpid.decomposition.envelope_gradient
SCHEMA = "fastpid::broja_backward(Tensor p, Tensor lam1, Tensor lam2, Tensor grad_atoms) -> Tensor"


def inputs(joints, seed: int, scale: float = 1.0):
    """(p, λ1, λ2, upstream gradients) for a list of joints of one shape."""
    gen = torch.Generator().manual_seed(seed)
    p = scale * torch.tensor(np.stack(joints))
    batch, n1, n2, ny = p.shape
    lam1 = torch.randn(batch, n1, ny, generator=gen, dtype=torch.float64)
    lam2 = torch.randn(batch, n2, ny, generator=gen, dtype=torch.float64)
    return p, lam1, lam2, torch.randn(batch, 5, generator=gen, dtype=torch.float64)


def batches():
    rng = np.random.default_rng(23)
    yield "dirichlet_5x5x5", [dirichlet_joint(rng, (5, 5, 5), 0.5) for _ in range(6)], 1.0
    yield "sparse_4x3x6_scaled", [sparse_joint(rng, (4, 3, 6), 0.4) for _ in range(5)], 37.0
    yield "degenerate_2x3x2", list(degenerate_joints((2, 3, 2), rng).values()), 1.0
    yield "dirichlet_20x20x6", [dirichlet_joint(rng, (20, 20, 6), 0.1)], 1e-3


@pytest.mark.parametrize("name,joints,scale", list(batches()), ids=[name for name, *_ in batches()])
def test_matches_reference(name, joints, scale):
    args = inputs(joints, seed=len(name), scale=scale)
    fused = torch.ops.fastpid.broja_backward(*args)
    torch.testing.assert_close(fused, envelope_gradient(*args), rtol=1e-12, atol=1e-12 / scale)
    assert torch.isfinite(fused).all()


def test_pid_backward_uses_the_fused_op_and_agrees():
    """Through ``fastpid.pid``: the "cpu" backend's gradient (fused) equals the
    "torch" backend's (reference) on a batch with a leading shape."""
    rng = np.random.default_rng(29)
    P = torch.tensor(np.stack([sparse_joint(rng, (3, 4, 2), 0.5) for _ in range(6)]).reshape(2, 3, 3, 4, 2))
    weights = torch.randn(5, dtype=torch.float64)
    grads = []
    for backend in ("cpu", "torch"):
        leaf = P.clone().requires_grad_()
        result = fastpid.pid(leaf, backend=backend, tol=1e-12)
        atoms = torch.stack([result.redundancy, result.unique1, result.unique2, result.synergy, result.mi], -1)
        (atoms * weights).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_pid_with_jacobian_equals_autograd_atom_by_atom(backend):
    """``pid_with_jacobian``'s five gradients in one fused call are autograd's, one
    backward pass per atom, on a batch with a leading shape and zero cells."""
    rng = np.random.default_rng(37)
    P = torch.tensor(np.stack([sparse_joint(rng, (3, 4, 3), 0.5) for _ in range(6)]).reshape(3, 2, 3, 4, 3))
    result, jacobian = fastpid.decomposition.pid_with_jacobian(P, backend=backend, tol=1e-12)
    assert jacobian.shape == (*P.shape, 5)
    leaf = P.clone().requires_grad_()
    atoms = fastpid.resampling.quantities(fastpid.pid(leaf, backend=backend, tol=1e-12))
    torch.testing.assert_close(atoms.detach(), fastpid.resampling.quantities(result), rtol=0, atol=0)
    for a in range(5):
        (expected,) = torch.autograd.grad(atoms[..., a].sum(), leaf, retain_graph=True)
        torch.testing.assert_close(jacobian[..., a], expected, rtol=1e-12, atol=1e-12)


def test_schema_fake_and_opcheck():
    assert str(torch.ops.fastpid.broja_backward.default._schema) == SCHEMA
    rng = np.random.default_rng(31)
    args = inputs([dirichlet_joint(rng, (3, 2, 3), 1.0) for _ in range(3)], seed=3)
    torch.library.opcheck(torch.ops.fastpid.broja_backward.default, args, test_utils=("test_schema", "test_faketensor"))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = torch.ops.fastpid.broja_backward(*(torch.empty(t.shape, dtype=t.dtype) for t in args))
    assert out.shape == (3, 3, 2, 3) and out.dtype == torch.float64


def test_empty_batch():
    args = (
        torch.zeros(0, 3, 4, 2, dtype=torch.float64),
        torch.zeros(0, 3, 2, dtype=torch.float64),
        torch.zeros(0, 4, 2, dtype=torch.float64),
        torch.zeros(0, 5, dtype=torch.float64),
    )
    assert torch.ops.fastpid.broja_backward(*args).shape == (0, 3, 4, 2)


def _args(p=(1, 2, 2, 2), lam1=(1, 2, 2), lam2=(1, 2, 2), grad_atoms=(1, 5), dtype=torch.float64):
    return [torch.full(shape, 0.125, dtype=dtype) for shape in (p, lam1, lam2, grad_atoms)]


@pytest.mark.parametrize(
    "args, message",
    [
        (_args(dtype=torch.float32), "dtype float64"),
        (_args(p=(2, 2, 2)), "shape"),
        (_args(lam1=(1, 3, 2)), "lam1 \\(B, n1, ny\\)"),
        (_args(grad_atoms=(1, 4)), "grad_atoms \\(B, 5\\)"),
        ([torch.full((1, 2, 2, 4), 0.0625, dtype=torch.float64)[..., ::2], *_args()[1:]], "contiguous"),
    ],
)
def test_input_checks(args, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fastpid.broja_backward(*args)


def test_second_derivatives_are_refused():
    """The gradient holds λ*(P) as a constant, so a second derivative through it
    would be wrong: backward(create_graph=True) raises instead."""
    P = torch.full((2, 2, 2), 0.125, dtype=torch.float64, requires_grad=True)
    for backend in ("cpu", "torch"):
        synergy = fastpid.pid(P, backend=backend).synergy
        with pytest.raises(NotImplementedError, match="second derivatives"):
            torch.autograd.grad(synergy, P, create_graph=True)
