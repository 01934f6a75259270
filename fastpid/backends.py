"""Solver backends behind ``fastpid.pid``: one algorithm, several implementations.

Each backend maps a float64 batch of normalised joints (B, n1, n2, ny) to a
``fastpid.solver.Solution`` (dual variables λ1, λ2, pair masses w, iterations,
converged) (``SOLVERS``), and every solution is certified by the same duality
gap (``torch_certificate``: ``fastpid.solver.certificate`` and the entropies
of the joints, or the compiled op that computes both).

``FORWARDS`` holds the forward of ``fastpid.pid`` for each backend: check and
rescale the joints (``fastpid._checks.check_joint``), solve, certify, and
return the measures [H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2), V] (..., 5) that the
atoms are made of, the gap, Q, λ1, λ2, iterations and converged, shaped like
the batch.  The compiled backends do all of it in one op
(``fastpid::broja_forward``, csrc/broja_forward.cpp); the others compose it
here (``python_forward``).  ``GRADIENTS`` holds the fused backward kernels,
each computing ``fastpid.pid.envelope_gradient(p, lam1, lam2, grad_atoms)``
(the reference, used by the backends without one).
"""
from __future__ import annotations

import functools
import importlib.util
import os

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
_HAS_CUDA_KERNEL = _OPS is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
    "fastpid::broja_solve", "CUDA")


def has_cuda_kernel() -> bool:
    """Whether the built extension has the CUDA implementation of the op (FASTPID_CUDA builds)."""
    return _HAS_CUDA_KERNEL


def _compiled(p: torch.Tensor, tol: float, max_iter: int, patience: int) -> solver.Solution:
    """The compiled op, on p's device (CPU: csrc/cpu, CUDA: csrc/cuda; the same csrc/broja.h)."""
    lam1, lam2, w, iterations, converged = _OPS.broja_solve(p.contiguous(), tol, max_iter, patience)
    return solver.Solution(lam1, lam2, w, iterations, converged)


def _compiled_gradient(p: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor,
                       grad_atoms: torch.Tensor) -> torch.Tensor:
    """The compiled backward op (csrc/broja_backward.h) on p's device, for joints of shape (..., n1, n2, ny)."""
    *batch, n1, n2, ny = p.shape
    flat = p.to(torch.float64).reshape(-1, n1, n2, ny).contiguous()
    grad = _OPS.broja_backward(flat, lam1.reshape(-1, n1, ny).contiguous(), lam2.reshape(-1, n2, ny).contiguous(),
                               grad_atoms.to(torch.float64).reshape(-1, 5).contiguous())
    return grad.reshape(p.shape)


def _compiled_forward(p: torch.Tensor, normalize: bool, tol: float, max_iter: int) -> tuple[torch.Tensor, ...]:
    """``python_forward`` of the compiled ops in one call (``fastpid::broja_forward``), on p's device."""
    *outputs, fine = _OPS.broja_forward(p, normalize, SUM_TOLERANCE[p.dtype], tol, max_iter, solver.PATIENCE)
    if not bool(fine.all()):
        raise_for_values(p, normalize, fine)
    return tuple(outputs)


def torch_certificate(p: torch.Tensor, solution: solver.Solution
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, f(Q), gap (``fastpid.solver.certificate``) of a solution of the normalised joints p
    (B, n1, n2, ny), and their entropies (B, 4): H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2); nats."""
    h = conditional_entropies(p)
    entropies = torch.stack([h["y"], h["y|x1"], h["y|x2"], h["y|x1x2"]], 1)
    return *solver.certificate(solution.lam1, solution.lam2, solution.w, solver.Support.of(p)), entropies


def python_forward(name: str, p: torch.Tensor, normalize: bool, tol: float, max_iter: int
                   ) -> tuple[torch.Tensor, ...]:
    """The forward of ``fastpid.pid`` (``FORWARDS``) with backend ``name``'s solver and ``torch_certificate``."""
    joint = check_joint(p, normalize).to(torch.float64)
    batch_shape, cells = joint.shape[:-3], joint.shape[-3:]
    flat = joint.reshape(-1, *cells)
    solution = SOLVERS[name](flat, tol, max_iter, solver.PATIENCE)
    q, value, gap, entropies = torch_certificate(flat, solution)
    outputs = (torch.cat([entropies, value[:, None]], 1), gap, q, solution.lam1, solution.lam2,
               solution.iterations, solution.converged)
    return tuple(out.reshape(batch_shape + out.shape[1:]) for out in outputs)


SOLVERS = {"torch": solver.solve}
FORWARDS = {"torch": functools.partial(python_forward, "torch")}
GRADIENTS = {}
if _OPS is not None:  # the C++ extension is built: "cpu" is a backend name only where it exists
    SOLVERS["cpu"] = _compiled
    FORWARDS["cpu"] = _compiled_forward
    GRADIENTS["cpu"] = _compiled_gradient
if has_cuda_kernel():  # a FASTPID_CUDA build: "cuda" is a backend name only where it exists
    SOLVERS["cuda"] = _compiled
    FORWARDS["cuda"] = _compiled_forward
    GRADIENTS["cuda"] = _compiled_gradient

# "triton": solver.solve with fused Triton kernels for its passes over the cells
# (fastpid.kernels), where Triton is installed.  It solves CUDA joints, and CPU
# joints under Triton's interpreter (TRITON_INTERPRET=1 when fastpid is imported:
# slow, for tests).  It is named explicitly, never picked by "auto" (so it is not
# in ``available``): it has not yet been timed against "torch" on a GPU.
try:
    _HAS_TRITON = importlib.util.find_spec("triton") is not None
except (ImportError, ValueError):  # a stub or broken entry in sys.modules
    _HAS_TRITON = False
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")


def _triton(p: torch.Tensor, tol: float, max_iter: int, patience: int) -> solver.Solution:
    """The reference iteration with fused Triton passes (``fastpid.kernels.TRITON_PASSES``)."""
    # Imported on first use: Triton decorates the kernels then (and reads TRITON_INTERPRET).
    from .kernels import TRITON_PASSES
    return solver.solve(p, tol, max_iter, patience, passes=TRITON_PASSES)


def _triton_gradient(p: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor,
                     grad_atoms: torch.Tensor) -> torch.Tensor:
    """The fused Triton backward (``fastpid.kernels.envelope_gradient``)."""
    from .kernels import envelope_gradient
    return envelope_gradient(p, lam1, lam2, grad_atoms)


if _HAS_TRITON:
    SOLVERS["triton"] = _triton
    FORWARDS["triton"] = functools.partial(python_forward, "triton")
    GRADIENTS["triton"] = _triton_gradient


def _triton_solves_on(device: torch.device) -> bool:
    return _HAS_TRITON and (device.type == "cuda" or (device.type == "cpu" and _TRITON_INTERPRET))


def available(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can solve joints stored on ``device``, fastest first ("auto"'s
    candidates; "triton", named explicitly only, is not listed)."""
    device = torch.device(device)
    names = []
    if device.type == "cpu" and _OPS is not None:
        names.append("cpu")
    if device.type == "cuda" and has_cuda_kernel():
        names.append("cuda")
    names.append("torch")
    return names


# "cuda" runs one thread per joint, so its time grows with the cost of one joint
# (bench/roofline.py), whatever the batch.  bench/gpu_model.py predicts it slower
# than the batched dense path of "torch" once a joint has more than this many
# dual variables (n1 + n2) ny: at 20×20×6 (240) it is ahead, at one 32×32×32
# (2,048) it would take ~3 s per forward against ~12 ms.  A prediction: to be
# replaced by the crossover that bench_gpu.py measures.
CUDA_MAX_DUALS = 512


# Why a backend that the README lists is missing from this installation, and how to get it.
UNAVAILABLE = {
    "cpu": "backend 'cpu' needs fastpid's C++ extension, which this installation lacks (fastpid._C did not "
           "import); reinstall with `pip install --no-build-isolation .` where a C++ compiler is found, "
           "or use backend='torch'",
    "cuda": "backend 'cuda' needs fastpid's C++ extension built with CUDA, and this build has no CUDA kernels "
            "(nvcc was not found, or FASTPID_CUDA=0); reinstall with CUDA_HOME set, e.g. "
            "`CUDA_HOME=/usr/local/cuda pip install --no-build-isolation .`, or use backend='torch' on CUDA tensors",
    "triton": "backend 'triton' needs Triton (`pip install triton`), which this installation lacks",
}


def resolve(name: str, device: torch.device, shape: tuple[int, ...] | None = None) -> str:
    """Check a backend name against the device; ``"auto"`` picks the fastest for
    the device and, given the joints' ``shape`` (..., n1, n2, ny), their size."""
    if name == "auto":
        names = available(device)
        if shape is not None and names[0] == "cuda" and (shape[-3] + shape[-2]) * shape[-1] > CUDA_MAX_DUALS:
            return names[1]
        return names[0]
    if name not in SOLVERS:
        unknown = f"unknown backend {name!r}; expected 'auto' or one of {sorted(SOLVERS)}"
        raise ValueError(UNAVAILABLE.get(name, unknown))
    if name not in available(device) and not (name == "triton" and _triton_solves_on(device)):
        hint = (" ('triton' needs CUDA joints, or TRITON_INTERPRET=1 before fastpid is imported)"
                if name == "triton" else "")
        raise ValueError(
            f"backend {name!r} cannot solve joints on {device}; available there: {available(device)}{hint}")
    return name
