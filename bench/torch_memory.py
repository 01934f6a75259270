r"""Peak memory of the "torch" reference on a batch larger than its memory budget.

    OMP_NUM_THREADS=1 .venv/bin/python bench/torch_memory.py --joints 65536 --shape 20 20 6 --budget-gib 1

Solves a batch of Dirichlet(1) joints with ``fastpid.solver.solve`` under
FASTPID_MEMORY_GIB = ``--budget-gib`` in a fresh process and prints the chunk
size, the time, the process's peak resident memory (``ru_maxrss``) and what of
it is the batch's own input and output (which no chunking can avoid) and the
budget. Without chunks the batch would need ``working_set_bytes`` × joints.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joints", type=int, default=65536)
    parser.add_argument("--shape", type=int, nargs=3, default=(20, 20, 6))
    parser.add_argument("--budget-gib", type=float, default=1.0)
    args = parser.parse_args(argv)
    os.environ["FASTPID_MEMORY_GIB"] = str(args.budget_gib)
    import numpy as np
    import torch

    from fastpid import solver

    torch.set_num_threads(1)
    n1, n2, ny = args.shape
    rng = np.random.default_rng(0)
    joints = torch.tensor(rng.dirichlet(np.ones(n1 * n2 * ny), size=args.joints).reshape(args.joints, n1, n2, ny))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    elimination = solver.choose_elimination(n1, n2, ny)
    per_joint = solver.working_set_bytes(n1, n2, ny, elimination)
    start = time.perf_counter()
    solution = solver.solve(joints)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    outputs = sum(t.numel() * t.element_size() for t in (solution.lam1, solution.lam2, solution.w))
    gib = 2**30
    print(
        f"- {args.joints:,} joints of {n1}×{n2}×{ny}, {elimination} elimination, budget "
        f"FASTPID_MEMORY_GIB={args.budget_gib:g}: chunks of {int(args.budget_gib * gib // per_joint):,} joints; "
        f"{seconds:.0f} s; converged {float(solution.converged.double().mean()):.4%}"
    )
    print(
        f"- peak resident memory {peak / gib:.2f} GiB: {before / gib:.2f} GiB before the solve (torch, the "
        f"batch's {joints.numel() * 8 / gib:.2f} GiB of input), outputs {outputs / gib:.2f} GiB; the solve "
        f"added {(peak - before) / gib:.2f} GiB against a budget of {args.budget_gib:g} GiB"
    )
    print(
        f"- unchunked, the working set would be {per_joint * args.joints / gib:,.0f} GiB "
        f"(solver.working_set_bytes: {per_joint / 2**20:.2f} MiB a joint)"
    )


if __name__ == "__main__":
    main()
