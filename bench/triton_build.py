"""Build evidence of the Triton kernels, without a GPU.

    python bench/triton_build.py > bench/results/triton-build-<date>.md

Compiles ahead of time for sm_80 and sm_90 (``fastpid.kernels.build``) the
one-program-per-joint solver at each of SHAPES (``small_joint_solver.compile_for``)
and the fused passes and backward at each of FUSED_SHAPES (the launches their host
wrappers make, recorded: ``build.fused_pass_launches``), and tabulates what the cubins say: registers and stack
per thread, DMMA (FP64 tensor core) and local-memory instructions in the SASS.
"""

from __future__ import annotations

import datetime
import subprocess

import triton

from fastpid.kernels import build, small_joint_solver

SHAPES = [(2, 2, 2), (2, 3, 3), (4, 4, 2), (3, 3, 3), (4, 4, 4), (2, 2, 8), (8, 8, 2), (5, 5, 5), (4, 4, 8), (8, 8, 8)]
FUSED_SHAPES = [(5, 5, 5), (20, 20, 6), (32, 32, 32), (3, 3, 200)]


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# Triton build: the kernels' resources, {datetime.date.today()}\n")
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
    print("\nThe fused passes and backward (`kernels/broja_triton.py`), as launched on two joints of each shape:\n")
    print("| joint | kernel | warps | arch | registers | stack (B) | LDL / STL |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for shape in FUSED_SHAPES:
        for kernel, signature, constexprs, options in build.fused_pass_launches(shape):
            for capability in (80, 90):
                e = build.evidence(build.compile_kernel(kernel, signature, constexprs, options, capability))
                print(
                    f"| {'×'.join(map(str, shape))} | `{kernel.__name__}` | {options.get('num_warps', 4)} | "
                    f"{e['architecture']} | {e['registers']} | {e['stack_bytes']} | "
                    f"{e['local_loads']} / {e['local_stores']} |"
                )


if __name__ == "__main__":
    main()
