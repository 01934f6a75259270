"""Build evidence of the one-program-per-joint Triton solver, without a GPU.

    python bench/triton_build.py > bench/results/triton-build-<date>.md

Compiles ``fastpid.kernels.small_joint_solver``'s kernel ahead of time for
sm_80 and sm_90 at each shape (``compile_for``) and tabulates what the cubin
says (``build_evidence``): registers and stack per thread, DMMA (FP64 tensor
core) and local-memory instructions in the SASS.
"""

from __future__ import annotations

import datetime
import subprocess

import triton

from fastpid.kernels import small_joint_solver

SHAPES = [(2, 2, 2), (2, 3, 3), (4, 4, 2), (3, 3, 3), (4, 4, 4), (2, 2, 8), (8, 8, 2), (5, 5, 5), (4, 4, 8), (8, 8, 8)]


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# Triton build: the one-program-per-joint solver's resources, {datetime.date.today()}\n")
    print(f"Commit {commit}, Triton {triton.__version__}; `python bench/triton_build.py` (no GPU needed).\n")
    print("| joint | dual variables m | matrix tile | warps | arch | registers | stack (B) | DMMA | LDL / STL |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n1, n2, ny in SHAPES:
        m = (n1 + n2) * ny
        for capability in (80, 90):
            e = small_joint_solver.build_evidence(n1, n2, ny, capability)
            tile = e["matrix_tile"]
            print(
                f"| {n1}×{n2}×{ny} | {m} | {tile} × {tile} | {e['num_warps']} | {e['architecture']} | "
                f"{e['registers']} | {e['stack_bytes']} | {e['dmma']} | {e['local_loads']} / {e['local_stores']} |"
            )


if __name__ == "__main__":
    main()
