"""FastPID compute kernels: the "triton" backend of ``fastpid.pid``.

``fastpid.kernels.broja_triton``: fused Triton kernels for the passes of the
BROJA iteration (``fastpid.solver.Passes``) and ``envelope_gradient``, its
fused backward.  ``fastpid.kernels.small_joint_solver``: one program per small
joint runs the whole iteration on chip (up to SMALL_MAX_DUALS dual variables).
``backend()`` is this package's record for the core's registry
(``fastpid.backends``, entry-point group ``fastpid.backends``): the core loads
it when "triton" is first asked for and never imports this package otherwise.
Importing this package never fails: without Triton, ``HAS_TRITON`` is False,
``TRITON_PASSES`` is None and ``backend()`` says what to install.  To run the
kernels on CPU tensors (Triton's interpreter: for tests), set
``TRITON_INTERPRET=1`` before ``triton`` is first imported in the process.
"""

from __future__ import annotations

import os

from fastpid import backends, solver

try:
    import triton  # noqa: F401
except ImportError:
    HAS_TRITON = False
else:
    HAS_TRITON = True

if HAS_TRITON:
    from . import small_joint_solver
    from .broja_triton import (  # noqa: F401  (the package's API: tests and benchmarks call the kernels)
        TRITON_PASSES,
        certificate,
        costs,
        envelope_gradient,
        newton_matrix,
        pair_softmax,
        weighted_marginals,
    )
else:
    TRITON_PASSES = None

MISSING = "backend 'triton' needs Triton (`pip install triton`), which this installation lacks"


def interpreting() -> bool:
    """Whether Triton runs its kernels on CPU tensors in this process (TRITON_INTERPRET)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")


def solve(p, tol: float, max_iter: int, patience: int) -> solver.Solution:
    """Small joints (``small_joint_solver.fits``, where the side elimination is the
    one to use): one program per joint runs the whole iteration.  Larger joints:
    the reference iteration with fused Triton passes (``TRITON_PASSES``)."""
    _, n1, n2, ny = p.shape
    if small_joint_solver.fits(n1, n2, ny) and solver.default_elimination(n1, n2, ny) == "side":
        return small_joint_solver.solve(p, tol, max_iter, patience)
    return solver.solve(p, tol, max_iter, patience, passes=TRITON_PASSES)


def backend() -> backends.Backend:
    """The "triton" backend: CUDA joints, and CPU joints under Triton's interpreter.
    Named explicitly only, never picked by "auto": not yet timed against "torch" on a GPU."""
    if not HAS_TRITON:
        return backends.unavailable("triton", MISSING)
    interpret = interpreting()
    return backends.python_backend(
        "triton",
        solve,
        gradient=envelope_gradient,
        solves_on=lambda device: device.type == "cuda" or (device.type == "cpu" and interpret),
        where="CUDA joints, or CPU joints with TRITON_INTERPRET=1 set before Triton is imported",
        auto=False,
    )
