"""FastPID compute kernels.

``fastpid.kernels.broja_triton``: fused Triton kernels for the passes of the
BROJA iteration (``fastpid.solver.Passes``), the "triton" backend of
``fastpid.pid``, and ``envelope_gradient``, its fused backward.  Importing this package never fails: without Triton,
``HAS_TRITON`` is False and ``TRITON_PASSES`` is None.  To run the kernels on
CPU tensors (Triton's interpreter: for tests), set ``TRITON_INTERPRET=1``
before ``triton`` is first imported in the process.
"""
from __future__ import annotations

try:
    import triton  # noqa: F401
except ImportError:
    HAS_TRITON = False
else:
    HAS_TRITON = True

if HAS_TRITON:
    from .broja_triton import (
        TRITON_PASSES,
        certificate,
        costs,
        envelope_gradient,
        newton_matrix,
        pair_softmax,
        weighted_marginals,
    )

    __all__ = [
        "HAS_TRITON",
        "TRITON_PASSES",
        "certificate",
        "costs",
        "envelope_gradient",
        "newton_matrix",
        "pair_softmax",
        "weighted_marginals",
    ]
else:
    TRITON_PASSES = None
    __all__ = ["HAS_TRITON", "TRITON_PASSES"]
