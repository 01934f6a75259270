r"""Time and memory of the two eliminations of the Newton system, against the
number of classes and the alphabet size (docs/pid-math.md, "Solving the Newton system").

    OMP_NUM_THREADS=1 .venv/bin/python bench/eliminations.py --out bench/results/eliminations-DATE.md

The C++ backend alone (``torch.ops.fastpid.broja_solve``), one thread, one
Dirichlet(0.7) joint per shape, each elimination forced with
FASTPID_ELIMINATION; n1 = n2 = 20 with ny from 6 to 1,000, and n³ cubes.
Workspace: the bytes the op allocates for the joint
(``torch.ops.fastpid.broja_workspace``), the solver's whole peak memory beside
its inputs and outputs. The flop model is ``solver.side_flops`` /
``solver.pairs_flops`` per factorisation; the achieved rate is that model times
the Newton steps over the time, against a DGEMM measured in the same run.
Shapes whose predicted time exceeds ``--max-seconds`` are not run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from fastpid import solver
from fastpid.examples import dirichlet_joint
from fastpid.information import LN2

MANY_CLASSES = [(20, 20, ny) for ny in (6, 10, 12, 16, 31, 61, 101, 301, 1000)]
CUBES = [(n, n, n) for n in (8, 12, 13, 14, 15, 16, 20, 24, 32, 48, 64)]  # 13-16: around the crossover
TOL = 1e-8 * LN2


def dgemm_rate(n: int = 256, rounds: int = 20) -> float:
    a, b = torch.rand(n, n, dtype=torch.float64), torch.rand(n, n, dtype=torch.float64)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(rounds):
        torch.mm(a, b)
    return 2 * n**3 * rounds / (time.perf_counter() - start)


def measure(p: torch.Tensor, elimination: str, rounds: int) -> tuple[float, int, bool]:
    os.environ["FASTPID_ELIMINATION"] = elimination
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        solution = torch.ops.fastpid.broja_solve(p, TOL, 100, solver.PATIENCE)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), int(solution[3][0]), bool(solution[4][0])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="markdown file to write")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rate = dgemm_rate()
    rows = []
    for shape in MANY_CLASSES + CUBES:
        p = torch.tensor(dirichlet_joint(np.random.default_rng(7), shape, 0.7))[None]
        chosen = solver.choose_elimination(*shape)
        for elimination in ("side", "pairs"):
            flops = (solver.side_flops if elimination == "side" else solver.pairs_flops)(*shape)
            os.environ["FASTPID_ELIMINATION"] = elimination
            try:
                workspace = torch.ops.fastpid.broja_workspace(*shape)[0]
            except ValueError:
                rows.append((shape, elimination, chosen, None, None, None, None, flops))
                continue
            if 12 * flops / (0.3 * rate) > args.max_seconds:  # ~12 steps at a third of the DGEMM rate
                rows.append((shape, elimination, chosen, None, None, None, workspace, flops))
                continue
            seconds, steps, converged = measure(p, elimination, rounds=3 if flops < 1e9 else 1)
            rows.append((shape, elimination, chosen, seconds, steps, converged, workspace, flops))
            print(rows[-1], flush=True)
    os.environ.pop("FASTPID_ELIMINATION", None)
    lines = [
        "# The two eliminations against the number of classes and the alphabet size",
        "",
        f"- command: `OMP_NUM_THREADS=1 .venv/bin/python bench/eliminations.py --out {args.out}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; one thread; torch {torch.__version__}",
        f"- DGEMM in the same run (torch.mm 256², one thread): {rate / 1e9:.1f} Gflop/s",
        f"- rule: pairs where pairs_flops × {solver.PAIRS_ADVANTAGE} < side_flops (`choose_elimination`)",
        "- one Dirichlet(0.7) joint per shape, C++ backend alone (`broja_solve`), tol 1e-8 bits; "
        "median of 3 calls (1 above 1 Gflop per factorisation)",
        "- flop/step: the model of docs/pid-math.md, 'Cost of each elimination' (one factorisation; the "
        "solves and the passes over the cells are not counted); rate: flop/step × steps ÷ time",
        "",
        "| shape | elimination | chosen | time | steps | time/step | workspace | flop/step | rate | of DGEMM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape, elimination, chosen, seconds, steps, converged, workspace, flops in rows:
        name = "×".join(map(str, shape))
        mark = "**yes**" if chosen == elimination else ""
        memory = "over the budget" if workspace is None else f"{workspace / 2**20:,.1f} MiB"
        if seconds is None:
            predicted = 12 * flops / (0.3 * rate)
            lines.append(
                f"| {name} | {elimination} | {mark} | not run (~{predicted:,.0f} s predicted) | | | "
                f"{memory} | {flops:.2e} | | |"
            )
            continue
        per_step = seconds / max(steps, 1)
        achieved = flops * steps / seconds
        note = "" if converged else " (unconverged)"
        lines.append(
            f"| {name} | {elimination} | {mark} | {seconds * 1e3:,.1f} ms{note} | {steps} | "
            f"{per_step * 1e3:,.2f} ms | {memory} | {flops:.2e} | {achieved / 1e9:.1f} Gflop/s | "
            f"{achieved / rate:.0%} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
