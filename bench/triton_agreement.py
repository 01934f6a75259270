"""The per-joint Triton solver against the torch and C++ solvers on many random joints.

    TRITON_INTERPRET=1 python bench/triton_agreement.py > bench/results/triton-agreement-<date>.md

A wider check than tests/test_triton.py can afford in CI (the interpreter takes
seconds a joint): 18 joints of each of the accuracy families (Dirichlet 1, 0.1
and 0.02, plug-in, deterministic, near-empty symbols, boundary, sparse, the
degenerate cases) at ten small shapes, solved by ``small_joint_solver.solve``,
``solver.solve(elimination="side")`` and the C++ per-joint solver (backend
"cpu"), all to tol = 1e-8 bits.  Counts, per shape, the joints where the
convergence differs, where the iteration counts differ by more than one, and the
largest value difference (bits) among the joints all solvers converge on.
"""

from __future__ import annotations

import datetime
import subprocess

import numpy as np
import torch

from fastpid import backends, solver
from fastpid.examples import (
    boundary_joint,
    degenerate_joints,
    deterministic_batch,
    dirichlet_batch,
    near_degenerate_batch,
    plugin_batch,
    sparse_joint,
)
from fastpid.information import LN2
from fastpid.kernels import small_joint_solver

SHAPES = [(2, 2, 2), (2, 3, 4), (3, 3, 3), (4, 2, 3), (3, 7, 2), (4, 4, 4), (2, 2, 8), (5, 5, 5), (6, 2, 5), (4, 4, 8)]
TOL = 1e-8 * LN2


def joints(rng: np.random.Generator, shape) -> np.ndarray:
    return np.stack(
        [
            *dirichlet_batch(rng, shape, 2, 1.0),
            *dirichlet_batch(rng, shape, 1, 0.1),
            *dirichlet_batch(rng, shape, 1, 0.02),
            *plugin_batch(rng, shape, 2, 100),
            *deterministic_batch(rng, shape, 2),
            *near_degenerate_batch(rng, shape, 2),
            boundary_joint(rng, shape),
            sparse_joint(rng, shape, 0.7),
            *degenerate_joints(shape, rng).values(),
        ]
    )


def compare(ours: solver.Solution, other: solver.Solution, p: torch.Tensor) -> tuple[int, int, float]:
    """Joints whose convergence differs, joints both converge on whose iteration counts
    differ by more than one, and the largest value difference (bits) on those."""
    support = solver.Support.of(p)
    value = solver.certificate(ours.lam1, ours.lam2, ours.w, support)[1]
    other_value = solver.certificate(other.lam1, other.lam2, other.w, support)[1]
    both = ours.converged & other.converged
    iterations = int(((ours.iterations - other.iterations).abs() > 1)[both].sum())
    largest = float(((value - other_value).abs()[both] / LN2).max()) if both.any() else 0.0
    return int((ours.converged != other.converged).sum()), iterations, largest


def main() -> None:
    rng = np.random.default_rng(12345)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# The per-joint Triton solver against the torch and C++ solvers, {datetime.date.today()}\n")
    print(f"Commit {commit}; `TRITON_INTERPRET=1 python bench/triton_agreement.py` (module docstring).\n")
    print(
        "| shape | joints | unconverged | vs torch: convergence, iterations > ±1, max Δ value (bits) "
        "| vs C++: convergence, iterations > ±1, max Δ value (bits) |"
    )
    print("| --- | ---: | ---: | --- | --- |")
    for shape in SHAPES:
        p = torch.tensor(joints(rng, shape))
        ours = small_joint_solver.solve(p, TOL, 100, solver.PATIENCE)
        torch_solution = solver.solve(p, TOL, 100, solver.PATIENCE, elimination="side")
        cpp_solution = backends.get("cpu").solve(p, TOL, 100, solver.PATIENCE)
        rows = [compare(ours, other, p) for other in (torch_solution, cpp_solution)]
        cells = [f"{c}, {i}, {v:.1e}" for c, i, v in rows]
        print(f"| {'×'.join(map(str, shape))} | {len(p)} | {int((~ours.converged).sum())} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
