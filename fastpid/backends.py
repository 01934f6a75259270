"""Solver backends behind ``fastpid.pid``: one algorithm, several implementations.

A backend is one ``Backend`` record: its ``solve`` maps a float64 batch of
normalised joints (B, n1, n2, ny) to a ``fastpid.solver.Solution`` (dual
variables λ1, λ2, pair masses w, iterations, converged); its ``forward`` is
``fastpid.pid``'s: check and rescale the joints (``fastpid._checks.check_joint``),
solve, certify (the same duality gap for every backend: ``torch_certificate``,
or the compiled op that computes it), and return the measures [H(Y), H(Y|X1),
H(Y|X2), H(Y|X1,X2), V] (..., 5), the gap, Q, λ1, λ2, iterations and
converged, shaped like the batch.  The compiled backends do all of it in one op
(``fastpid::broja_forward``, csrc/broja_forward.cpp); the others compose it
here (``python_forward``).  ``gradient`` is a fused backward computing
``fastpid.decomposition.envelope_gradient`` (the reference, used where a
backend has none).

The built-in backends ("cpu", "cuda", "torch") are records here, with the
reason they are unavailable in a build that lacks them.  Other packages plug
backends in through the ``fastpid.backends`` entry-point group: a callable
returning a ``Backend``, loaded when its name is first asked for (the
"triton" backend of ``fastpid.kernels``).  The core never imports them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch

from . import solver
from ._checks import SUM_TOLERANCE, check_joint, raise_for_values
from .information import conditional_entropies


def _load_ops():
    """The ``torch.ops.fastpid`` namespace if the C++ extension is built, else None."""
    try:
        from . import _C  # noqa: F401  (loading the library registers the ops)
    except ImportError:
        return None
    return torch.ops.fastpid


# Looked up once at import: ``available`` and ``resolve`` then read only Python
# constants, so ``torch.compile`` traces ``fastpid.pid`` through them.
_OPS = _load_ops()
_HAS_CUDA_KERNEL = _OPS is not None and torch._C._dispatch_has_kernel_for_dispatch_key("fastpid::broja_solve", "CUDA")


def compiled_ops():
    """The ``torch.ops.fastpid`` namespace where the C++ extension is built, else None."""
    return _OPS


def has_cuda_kernel() -> bool:
    """Whether the built extension has the CUDA implementation of the op (FASTPID_CUDA builds)."""
    return _HAS_CUDA_KERNEL


def _compiled(p: torch.Tensor, tol: float, max_iter: int, patience: int) -> solver.Solution:
    """The compiled op, on p's device (CPU: csrc/cpu, CUDA: csrc/cuda; the same csrc/broja.h)."""
    lam1, lam2, w, iterations, converged = _OPS.broja_solve(p.contiguous(), tol, max_iter, patience)
    return solver.Solution(lam1, lam2, w, iterations, converged)


def _compiled_gradient(
    p: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor, grad_atoms: torch.Tensor
) -> torch.Tensor:
    """The compiled backward op (csrc/broja_backward.h) on p's device, for joints of shape (..., n1, n2, ny)."""
    *batch, n1, n2, ny = p.shape
    flat = p.to(torch.float64).reshape(-1, n1, n2, ny).contiguous()
    grad = _OPS.broja_backward(
        flat,
        lam1.reshape(-1, n1, ny).contiguous(),
        lam2.reshape(-1, n2, ny).contiguous(),
        grad_atoms.to(torch.float64).reshape(-1, 5).contiguous(),
    )
    return grad.reshape(p.shape)


def _compiled_forward(p: torch.Tensor, normalize: bool, tol: float, max_iter: int) -> tuple[torch.Tensor, ...]:
    """``python_forward`` of the compiled ops in one call (``fastpid::broja_forward``), on p's device."""
    *outputs, fine = _OPS.broja_forward(p, normalize, SUM_TOLERANCE[p.dtype], tol, max_iter, solver.PATIENCE)
    if not bool(fine.all()):
        raise_for_values(p, normalize, fine)
    return tuple(outputs)


def _on_host(p: torch.Tensor, outputs):
    """``outputs`` (a tensor, a tuple of them or a ``Solution``) of a computation on p's host
    copy, back on p's device."""
    if p.device.type == "cpu":
        return outputs
    if isinstance(outputs, torch.Tensor):
        return outputs.to(p.device)
    if isinstance(outputs, solver.Solution):
        return solver.Solution(*(getattr(outputs, name).to(p.device) for name in solver.SOLUTION_FIELDS))
    return tuple(output.to(p.device) for output in outputs)


def _host_solve(p, tol, max_iter, patience):
    """The CPU op on a host copy of joints stored on any device."""
    return _on_host(p, _compiled(p.cpu(), tol, max_iter, patience))


def _host_forward(p, normalize, tol, max_iter):
    return _on_host(p, _compiled_forward(p.cpu(), normalize, tol, max_iter))


def _host_gradient(p, lam1, lam2, grad_atoms):
    return _on_host(p, _compiled_gradient(p.cpu(), lam1.cpu(), lam2.cpu(), grad_atoms.cpu()))


def torch_certificate(
    p: torch.Tensor, solution: solver.Solution
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, f(Q), gap (``fastpid.solver.certificate``) of a solution of the normalised joints p
    (B, n1, n2, ny), and their entropies (B, 4): H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2); nats."""
    h = conditional_entropies(p)
    entropies = torch.stack([h["y"], h["y|x1"], h["y|x2"], h["y|x1x2"]], 1)
    return *solver.certificate(solution.lam1, solution.lam2, solution.w, solver.Support.of(p)), entropies


def python_forward(
    solve: Callable, p: torch.Tensor, normalize: bool, tol: float, max_iter: int
) -> tuple[torch.Tensor, ...]:
    """The forward of ``fastpid.pid`` with the solver ``solve`` and ``torch_certificate``."""
    joint = check_joint(p, normalize).to(torch.float64)
    batch_shape, cells = joint.shape[:-3], joint.shape[-3:]
    flat = joint.reshape(-1, *cells)
    solution = solve(flat, tol, max_iter, solver.PATIENCE)
    q, value, gap, entropies = torch_certificate(flat, solution)
    outputs = (
        torch.cat([entropies, value[:, None]], 1),
        gap,
        q,
        solution.lam1,
        solution.lam2,
        solution.iterations,
        solution.converged,
    )
    return tuple(out.reshape(batch_shape + out.shape[1:]) for out in outputs)


@dataclass(frozen=True)
class Backend:
    """One backend of ``fastpid.pid``: how it solves, runs the forward and the backward,
    which joints it takes, and why it cannot be used in this installation (``missing``)."""

    name: str
    solve: Callable | None  # (p, tol, max_iter, patience) -> solver.Solution
    forward: Callable | None  # (p, normalize, tol, max_iter) -> the outputs above
    gradient: Callable | None = None  # fused envelope gradient, or None for the reference
    solves_on: Callable[[torch.device], bool] = lambda device: True
    where: str = ""  # the joints it takes, in words, for messages
    auto: bool = True  # a candidate of backend="auto"
    missing: str | None = None  # None where usable; else what is missing and how to get it


def python_backend(name: str, solve: Callable, **fields) -> Backend:
    """A ``Backend`` whose forward composes ``solve`` with ``torch_certificate`` (``python_forward``)."""
    return Backend(name, solve, functools.partial(python_forward, solve), **fields)


def unavailable(name: str, missing: str) -> Backend:
    """The record of a backend this installation lacks."""
    return Backend(name, None, None, missing=missing)


# Why a built-in backend is missing from a build, and how to get it.
MISSING = {
    "cpu": "backend 'cpu' needs fastpid's C++ extension, which this installation lacks (fastpid._C did not "
    "import); reinstall with `pip install --no-build-isolation .` where a C++ compiler is found, "
    "or use backend='torch'",
    "cuda": "backend 'cuda' needs fastpid's C++ extension built with CUDA, and this build has no CUDA kernels "
    "(nvcc was not found, or FASTPID_CUDA=0); reinstall with CUDA_HOME set, e.g. "
    "`CUDA_HOME=/usr/local/cuda pip install --no-build-isolation .`, or use backend='torch' on CUDA tensors",
}


def _built_in() -> dict[str, Backend]:
    """ "cpu", "cuda" and "torch", in the order "auto" prefers them.

    Safe default: no GPU kernel has been measured on a GPU yet (docs/gpu.md), so "auto"
    on CUDA joints takes the CPU op on a host copy (the results come back to the
    joints' device); "cuda" runs only when named."""
    cpu = (
        unavailable("cpu", MISSING["cpu"])
        if _OPS is None
        else Backend(
            "cpu",
            _host_solve,
            _host_forward,
            _host_gradient,
            lambda device: True,
            "joints on any device (those not on the CPU through a host copy)",
        )
    )
    cuda = (
        Backend(
            "cuda",
            _compiled,
            _compiled_forward,
            _compiled_gradient,
            lambda device: device.type == "cuda",
            "CUDA joints",
            auto=False,
        )
        if has_cuda_kernel()
        else unavailable("cuda", MISSING["cuda"])
    )
    return {"cpu": cpu, "cuda": cuda, "torch": python_backend("torch", solver.solve, where="joints on any device")}


BUILT_IN = _built_in()
PLUGINS = "fastpid.backends"  # entry-point group of the backends other packages provide


@functools.cache
def _plugins() -> dict:
    return {entry.name: entry for entry in entry_points(group=PLUGINS) if entry.name not in BUILT_IN}


@functools.cache
def _plugin(name: str) -> Backend:
    return _plugins()[name].load()()


def names() -> list[str]:
    """Every backend name this installation knows, usable or not."""
    return [*BUILT_IN, *sorted(_plugins())]


def get(name: str) -> Backend:
    """The record of backend ``name`` (a plug-in is loaded on first use); ValueError if unknown."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if name not in _plugins():
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {names()}")
    return _plugin(name)


def available(device: torch.device | str = "cpu") -> list[str]:
    """Backends that "auto" may pick for joints stored on ``device``, fastest first
    (plug-ins are named explicitly only: none has been timed against these)."""
    device = torch.device(device)
    return [
        name
        for name, backend in BUILT_IN.items()
        if backend.auto and backend.missing is None and backend.solves_on(device)
    ]


def resolve(name: str, device: torch.device, shape: tuple[int, ...] | None = None) -> str:
    """Check a backend name against the device; ``"auto"`` picks the first of
    ``available(device)`` (``shape``, the joints' (..., n1, n2, ny), is for rules by
    joint size, which wait for measured GPU crossovers: docs/gpu.md)."""
    if name == "auto":
        return available(device)[0]
    backend = get(name)
    if backend.missing is not None:
        raise ValueError(backend.missing)
    if not backend.solves_on(device):
        raise ValueError(
            f"backend {name!r} cannot solve joints on {device} (it takes {backend.where}); "
            f"available there: {available(device)}"
        )
    return name
