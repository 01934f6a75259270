"""Robustness fuzz of ``fastpid.pid``: how many joints of each hard family miss the tolerance.

    OMP_NUM_THREADS=1 .venv/bin/python bench/stress.py --backend cpu --joints 1000000 --seed 0

Families (``fastpid.examples``' batched generators), each spread over shapes
from 2×2×2 to 20×20×6 (10×10×10 for plug-in joints):

- plug-in: frequencies of N samples from a Dirichlet(1) joint, N log-uniform in [10, 10 × cells];
- dirichlet: Dirichlet(α) joints, α log-uniform in [0.02, 5] (cells down to 1e-300 and exact zeros);
- deterministic: mixtures of one to three random maps y = f(x1, x2), half with noise 1e-8 … 0.1;
- near-degenerate: Dirichlet(1) joints with one symbol scaled down by 1e-3 … 1e-15.

For every chunk it solves the joints with the backend's iteration alone
(``fastpid.backends.get(name).forward``: what ``fastpid.pid`` returned before its
fallbacks) and with ``fastpid.pid`` (default settings: tol 1e-8 bits), and
counts the joints whose gap stays above the tolerance; float32 copies of a
sample of each chunk check that float32 input changes no atom by more than 1e-4
bits.  Writes a markdown table to ``--out`` (bench/results/stress-<backend>-<date>.md).
Not part of the test run (tests/test_robustness.py runs a small seeded version).
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import fastpid
from fastpid import backends, examples
from fastpid.information import LN2

SMALL = [(2, 2, 2), (2, 3, 3), (3, 3, 3), (2, 2, 4), (4, 4, 4), (3, 4, 5), (5, 5, 5)]
MID = [(6, 6, 6), (8, 8, 8), (10, 10, 6)]
LARGE = [(10, 10, 10), (20, 20, 6)]
# Joints per chunk by shape group, and the share of each family's joints in each group.
CHUNK = {"small": 10_000, "mid": 1_000, "large": 200}
SHARE = {"small": 0.90, "mid": 0.08, "large": 0.02}
TOL_BITS = 1e-8
FLOAT32_SAMPLE = 200
FLOAT32_TOLERANCE = 1e-4  # bits


def family_chunk(family: str, rng: np.random.Generator, shape, count: int) -> tuple[str, np.ndarray]:
    """(parameter label, joints) of one chunk of ``family``."""
    if family == "plug-in":
        cells = math.prod(shape)
        samples = int(round(math.exp(rng.uniform(math.log(10), math.log(10 * cells)))))
        return f"N={samples}", examples.plugin_batch(rng, shape, count, samples)
    if family == "dirichlet":
        alpha = math.exp(rng.uniform(math.log(0.02), math.log(5)))
        return f"alpha={alpha:.3g}", examples.dirichlet_batch(rng, shape, count, alpha)
    if family == "deterministic":
        return "", examples.deterministic_batch(rng, shape, count)
    return "", examples.near_degenerate_batch(rng, shape, count)


FAMILIES = ("plug-in", "dirichlet", "deterministic", "near-degenerate")


def plan(family: str, joints: int, rng: np.random.Generator):
    """(shape, count) chunks adding up to about ``joints``, shapes drawn within each group."""
    groups = {"small": SMALL, "mid": MID, "large": LARGE if family != "plug-in" else [(10, 10, 10)]}
    for group, shapes in groups.items():
        left = int(joints * SHARE[group])
        while left > 0:
            count = min(CHUNK[group], left)
            yield shapes[rng.integers(len(shapes))], count
            left -= count


def run_family(family: str, backend: str, joints: int, rng: np.random.Generator) -> dict:
    """Counts and worst gaps of one family: before and after the fallbacks, and float32's worst atom error."""
    tol = TOL_BITS * LN2
    row = dict(
        family=family,
        joints=0,
        iteration_missed=0,
        missed=0,
        worst_gap=0.0,
        worst_float32=0.0,
        seconds=0.0,
        missed_joints=[],
    )
    for shape, count in plan(family, joints, rng):
        _, P = family_chunk(family, rng, shape, count)
        p = torch.from_numpy(P)
        primary = backends.get(backend).forward(p, False, tol, 100)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastpid.ConvergenceWarning)
            result = fastpid.pid(p, backend=backend)
        row["seconds"] += time.perf_counter() - start
        row["joints"] += count
        row["iteration_missed"] += int((~primary[-1]).sum())
        missed = ~result.converged
        row["missed"] += int(missed.sum())
        row["worst_gap"] = max(row["worst_gap"], float(result.gap.max()))
        row["missed_joints"] += [(float(result.gap[k]), P[k]) for k in missed.nonzero()[:, 0].tolist()]
        sample = p[:FLOAT32_SAMPLE]
        single = fastpid.pid(sample.float(), backend=backend)
        fine = result.converged[:FLOAT32_SAMPLE] & single.converged
        for atom in ("redundancy", "unique1", "unique2", "synergy"):
            error = (getattr(single, atom).double() - getattr(result, atom)[:FLOAT32_SAMPLE]).abs()[fine]
            row["worst_float32"] = max(row["worst_float32"], float(error.max()) if error.numel() else 0.0)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--joints", type=int, default=1_000_000, help="joints per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    today = datetime.date.today().isoformat()
    out = args.out or Path(__file__).parent / "results" / f"stress-{args.backend}-{today}.md"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"# Robustness fuzz, backend `{args.backend}`",
        "",
        f"{today}, commit {commit}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"one thread; `bench/stress.py {' '.join(sys.argv[1:])}`; "
        f"tolerance {TOL_BITS:g} bits.",
        "",
        "| family | joints | missed by the iteration alone | missed after the fallbacks | worst gap (bits) "
        "| worst float32 atom error (bits) | s (fastpid.pid) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    misses, missed_arrays = [], {}
    for family in args.families:
        row = run_family(family, args.backend, args.joints, rng)
        line = (
            f"| {family} | {row['joints']:,} | {row['iteration_missed']:,} | {row['missed']:,} | "
            f"{row['worst_gap']:.2e} | {row['worst_float32']:.1e} | {row['seconds']:.1f} |"
        )
        print(line, flush=True)
        lines.append(line)
        for k, (gap, joint) in enumerate(row["missed_joints"]):
            shape = "x".join(map(str, joint.shape))
            misses.append(f"- {family}, {shape}, gap {gap:.2e} bits: `{joint.ravel().tolist()}`")
            missed_arrays[f"{family}_{k}"] = joint
        write(out, lines, misses, missed_arrays)  # after every family: a stopped run keeps what it measured
    print(f"wrote {out}")


def write(out: Path, lines: list[str], misses: list[str], missed_arrays: dict):
    """The table so far, and the joints left above the tolerance (also as an .npz)."""
    if misses:
        np.savez(out.with_suffix(".npz"), **missed_arrays)
        lines = lines + ["", "Joints left above the tolerance (also in the .npz beside this file):", ""] + misses
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
