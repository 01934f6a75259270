r"""The torch reference's solve timed against its own code at an earlier commit,
in one process (same machine, same load).

    OMP_NUM_THREADS=1 .venv/bin/python bench/torch_reference_ab.py --base b9f579e [--stress-joints 20000]

Loads ``fastpid/solver.py`` as it was at ``--base`` (``git show``) beside the
working tree's, and times ``solve`` of each on the same batches of Dirichlet(1)
joints (best of ``--repeats``), with the elimination forced to ``--elimination``;
prints the times, their ratio and whether the iteration counts and the
convergence agree.  With ``--stress-joints``, also solves that many joints of
each family of bench/stress.py (its seed 1) with both and counts the joints
each leaves above the tolerance (the iteration alone, no fallbacks).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import stress
import torch

from fastpid import solver
from fastpid.information import LN2

CASES = [(256, (5, 5, 5)), (64, (20, 20, 6)), (16, (10, 10, 10)), (1, (32, 32, 32))]


def solver_at(commit: str):
    """fastpid/solver.py at ``commit`` as a module of its own (its package-relative import made absolute)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{commit}:fastpid/solver.py"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.replace("from .information import", "from fastpid.information import")
    path = Path(tempfile.mkdtemp()) / f"solver_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def best_time(module, p, elimination: str, repeats: int):
    module.solve(p[:2], elimination=elimination)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        solution = module.solve(p, elimination=elimination)
        best = min(best, time.perf_counter() - start)
    return best, solution


def unconverged_per_family(base, joints: int, elimination: str) -> None:
    """Joints of bench/stress.py's families (seed 1) left above its tolerance by each version."""
    tol = stress.TOL_BITS * LN2
    for family in stress.FAMILIES:
        rng = np.random.default_rng(1)
        missed_base = missed_ours = missed_both = total = 0
        for shape, count in stress.plan(family, joints, rng):
            p = torch.from_numpy(stress.family_chunk(family, rng, shape, count)[1])
            base_missed = ~base.solve(p, tol=tol, elimination=elimination).converged
            ours_missed = ~solver.solve(p, tol=tol, elimination=elimination).converged
            missed_base += int(base_missed.sum())
            missed_ours += int(ours_missed.sum())
            missed_both += int((base_missed & ours_missed).sum())
            total += count
        print(
            f"- {family}, {total:,} joints: above the tolerance {missed_base} (base), {missed_ours} (working tree), "
            f"{missed_both} in both"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--elimination", default="side", choices=("side", "pairs"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stress-joints", type=int, default=0, help="joints per stress family (0: none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = solver_at(args.base)
    rng = np.random.default_rng(0)
    for batch, shape in CASES:
        p = torch.tensor(rng.dirichlet(np.ones(int(np.prod(shape))), size=batch).reshape(batch, *shape))
        base_s, base_solution = best_time(base, p, args.elimination, args.repeats)
        ours_s, ours_solution = best_time(solver, p, args.elimination, args.repeats)
        same = torch.equal(base_solution.iterations, ours_solution.iterations)
        converged = bool(base_solution.converged.all()), bool(ours_solution.converged.all())
        print(
            f"- {batch:,} × {'×'.join(map(str, shape))}: {args.base} {base_s:.3f} s, working tree {ours_s:.3f} s "
            f"({base_s / ours_s:.2f}×); iteration counts equal: {same}; all converged: {converged[0]} / {converged[1]}"
        )
    if args.stress_joints:
        unconverged_per_family(base, args.stress_joints, args.elimination)


if __name__ == "__main__":
    main()
