"""The closed-form (envelope) backward of ``fastpid.pid`` against finite differences.

Finite differences divide the solver's error by the step: with a step of 1e-6
a gap of 1e-9 bits would put 1e-3 of noise on every numerical derivative, so
these tests solve to ``tol=1e-13`` (bits), well below the default.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIELDS

import fastpid
from fastpid.examples import CANONICAL, boundary_joint, degenerate_joints, dirichlet_joint, sparse_joint

TIGHT = 1e-13  # bits


def fields_of(P, backend, normalize=False, tol=TIGHT):
    result = fastpid.pid(P, backend=backend, normalize=normalize, tol=tol)
    return tuple(getattr(result, name) for name in FIELDS)


def interior_joint(shape, seed, batch=()):
    """A joint with every cell > 0 (Dirichlet(2), floored at 1e-3 before renormalising)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(int(np.prod(shape)), 2.0), size=batch or None).reshape(*batch, *shape)
    P = np.maximum(P, 1e-3)
    return torch.tensor(P / P.sum((-3, -2, -1), keepdims=True), requires_grad=True)


GRADCHECK_SHAPES = [(2, 2, 2), (2, 3, 2), (3, 2, 4)]


@pytest.mark.parametrize("normalize", [False, True], ids=["exact", "normalize"])
@pytest.mark.parametrize("name", FIELDS)
@pytest.mark.parametrize("shape", GRADCHECK_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gradcheck(shape, name, normalize, backend):
    P = interior_joint(shape, seed=sum(shape))
    if normalize:
        # Any positive scale: the gradient must then be that of P / P.sum().
        P = (P.detach() * 2.5).requires_grad_()

    def atom(P):
        return getattr(fastpid.pid(P, backend=backend, normalize=normalize, tol=TIGHT), name)

    assert torch.autograd.gradcheck(atom, (P,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradcheck_batched_all_fields(backend):
    """A batch of joints and all five outputs at once."""
    P = interior_joint((2, 3, 2), seed=7, batch=(2,))
    assert torch.autograd.gradcheck(lambda P: fields_of(P, backend), (P,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradient_is_tangent_to_the_simplex(backend):
    """The joint is rescaled inside the graph: no gradient along P itself."""
    P = interior_joint((3, 3, 2), seed=8)
    for name, value in zip(FIELDS, fields_of(P, backend)):
        (grad,) = torch.autograd.grad(value, P, retain_graph=True)
        assert abs(float((grad * P.detach()).sum())) < 1e-10, name


# --------------------------------------------------------------------------
# Finite gradients where the derivative is one-sided: zeros, boundary, gates.

ZERO_JOINTS = {
    **{f"canonical_{name}": P for name, P in CANONICAL.items()},
    **{f"{name}_4x3x5": P for name, P in degenerate_joints((4, 3, 5)).items()},
    "sparse0.6_4x4x3": sparse_joint(np.random.default_rng(1), (4, 4, 3), 0.6),
    "sparse0.9_6x5x4": sparse_joint(np.random.default_rng(2), (6, 5, 4), 0.9),
    "boundary_3x4x2": boundary_joint(np.random.default_rng(3), (3, 4, 2)),
    "boundary_5x5x5": boundary_joint(np.random.default_rng(4), (5, 5, 5)),
    "dirichlet0.1_4x4x4": dirichlet_joint(np.random.default_rng(5), (4, 4, 4), 0.1),
}


@pytest.mark.parametrize("name", sorted(ZERO_JOINTS))
def test_gradients_finite(name, backend):
    P = torch.tensor(ZERO_JOINTS[name], requires_grad=True)
    for field, value in zip(FIELDS, fields_of(P, backend, tol=1e-8)):
        (grad,) = torch.autograd.grad(value, P, retain_graph=True)
        assert torch.isfinite(grad).all(), (
            f"{field}: non-finite gradient at {torch.nonzero(~torch.isfinite(grad))[:5].tolist()}"
        )


def test_gradients_finite_batched_with_zeros(backend):
    P = torch.tensor(np.stack(list(degenerate_joints((3, 3, 3)).values())), requires_grad=True)
    total = sum(value.sum() for value in fields_of(P, backend, tol=1e-8))
    (grad,) = torch.autograd.grad(total, P)
    assert torch.isfinite(grad).all()


def floored_sparse(seed):
    """A sparse joint (structural zeros) whose non-zero cells are all ≥ ~1e-3."""
    P = sparse_joint(np.random.default_rng(100 + seed), (4, 3, 3), 0.4, concentration=2.0)
    P = np.where(P > 0, np.maximum(P, 1e-3), 0.0)
    return P / P.sum()


# (joint, step, absolute tolerance).  On the boundary of Δ_P the atoms have
# large curvature along the face: a smaller step there.
FACE_JOINTS = {
    "sparse_seed0": (floored_sparse(0), 1e-5, 1e-6),
    "sparse_seed1": (floored_sparse(1), 1e-5, 1e-6),
    "sparse_seed2": (floored_sparse(2), 1e-5, 1e-6),
    "boundary_3x4x2": (boundary_joint(np.random.default_rng(3), (3, 4, 2)), 1e-6, 1e-5),
    # Solved by the fallbacks (tests/test_robustness.py): the gradient takes their dual point.
    "plugin_needs_fallback_2x2x2": (np.array([0, 11, 52, 0, 0, 31, 1, 5.0]).reshape(2, 2, 2) / 100, 1e-6, 1e-5),
}


def directional_derivatives(P0, backend, rng, eps, count=3):
    """Along random directions d that stay on P0's face (zero cells stay zero, Σ d = 0):
    for each field, (name, ∇·d from autograd, value at P0, at P0 + eps d, at P0 − eps d)."""
    support = P0 > 0
    P = torch.tensor(P0, requires_grad=True)
    values = fields_of(P, backend)
    for _ in range(count):
        d = rng.standard_normal(P0.shape) * support
        d -= support * d[support].mean()
        d /= np.abs(d).max()
        plus = fields_of(torch.tensor(P0 + eps * d), backend)
        minus = fields_of(torch.tensor(P0 - eps * d), backend)
        for name, value, a, b in zip(FIELDS, values, plus, minus):
            (grad,) = torch.autograd.grad(value, P, retain_graph=True)
            yield name, float((grad * torch.tensor(d)).sum()), float(value.detach()), float(a), float(b)


@pytest.mark.parametrize("case", sorted(FACE_JOINTS))
def test_directional_derivative_with_structural_zeros(case, backend):
    """Central differences along random directions that stay on the face of the
    simplex P lies on (zero cells stay zero, total mass stays 1)."""
    P0, eps, atol = FACE_JOINTS[case]
    for name, analytic, _, plus, minus in directional_derivatives(P0, backend, np.random.default_rng(0), eps):
        numeric = (plus - minus) / (2 * eps)
        assert numeric == pytest.approx(analytic, rel=1e-4, abs=atol), name


@pytest.mark.parametrize("gate", ["AND", "SUM", "RDNXOR"])
def test_gradient_within_one_sided_derivatives(gate, backend):
    """Where the optimal dual λ* is not unique (the gates), V(P) = max_λ <λ, (P1, P2)>
    has a kink and the atoms only one-sided derivatives along the face (on AND,
    along one direction, synergy has −0.214 forward and +1.203 backward).  The
    gradient, λ1* + λ2* for one optimal λ*, must then give a directional
    derivative between the two one-sided ones: the convex hull of the optimal
    λ maps onto that interval."""
    eps = 1e-6
    for name, analytic, value, plus, minus in directional_derivatives(
        CANONICAL[gate], backend, np.random.default_rng(1), eps
    ):
        forward, backward = (plus - value) / eps, (value - minus) / eps
        low, high = min(forward, backward), max(forward, backward)
        assert low - 1e-4 <= analytic <= high + 1e-4, (name, forward, analytic, backward)


@pytest.mark.parametrize("name", FIELDS)
def test_float32_gradients(name, backend):
    P64 = interior_joint((3, 2, 3), seed=9)
    P32 = P64.detach().float().requires_grad_()
    value32 = getattr(fastpid.pid(P32, backend=backend), name)
    assert value32.dtype == torch.float32
    (grad32,) = torch.autograd.grad(value32, P32)
    assert grad32.dtype == torch.float32
    assert torch.isfinite(grad32).all()
    (grad64,) = torch.autograd.grad(getattr(fastpid.pid(P64, backend=backend), name), P64)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-3, atol=1e-3)
