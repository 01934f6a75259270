"""FastPID compute kernels: the "triton" backend of ``fastpid.pid``.

``fastpid.kernels.broja_triton``: fused Triton kernels for the passes of the
BROJA iteration (``fastpid.solver.Passes``) and ``envelope_gradient``, its
fused backward.  ``fastpid.kernels.small_joint_solver``: one program per small
joint runs the whole iteration on chip (up to SMALL_MAX_DUALS dual variables).
``fastpid.kernels.build``: the kernels compiled ahead of time, with no GPU, for
their build evidence.
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
        newton_blocks,
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
    """One program per joint (``small_joint_solver``) where ``one_program_per_joint``
    says so; else the reference iteration with fused Triton passes (``TRITON_PASSES``)."""
    if one_program_per_joint(p.shape, p.device):
        return small_joint_solver.solve(p, tol, max_iter, patience)
    return solver.solve(p, tol, max_iter, patience, passes=TRITON_PASSES)


def one_program_per_joint(shape, device) -> bool:
    """Whether a batch of this shape (B, n1, n2, ny) runs one program per joint: small
    joints (``small_joint_solver.fits``, the side elimination's), in a batch that the
    GPU runs in one wave (``small_joint_solver.resident_programs``; any batch under
    the interpreter).  Beyond one wave the per-joint programs run wave after wave
    while the fused passes take the whole batch in each launch: the prediction
    (bench/results/gpu-prediction-2026-12-07.md) puts the crossover at one to a
    few waves; bench/bench_gpu.py times both to set it."""
    batch, n1, n2, ny = shape
    if not small_joint_solver.fits(n1, n2, ny) or solver.default_elimination(n1, n2, ny) != "side":
        return False
    wave = small_joint_solver.resident_programs(device, n1, n2, ny)
    return wave is None or batch <= wave


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
