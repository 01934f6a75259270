r"""Predicted GPU times of the cases of bench_gpu.py, written down before any GPU run.

    .venv/bin/python bench/gpu_model.py [--out bench/results/gpu-prediction-YYYY-MM-DD.md]

Per interior-point iteration of ``fastpid.solver.solve`` on a batch of B joints
n1 × n2 × ny (N = B n1 n2 ny cells, m = (n1 + n2) ny dual variables per joint):

* fused passes ("triton"): the bytes and flops of ``fastpid.kernels.costs``
  times the calls per iteration (pair softmax 2: the step and one trial of the
  line search; certificate 1; weighted marginals 3; Newton matrix 1);
* dense linear algebra (every backend but "cuda"): ``solver.DenseFactor`` on the
  B m × m matrices: Jacobi scaling (read + write), Cholesky (m³/3 flops, read +
  write), and for each of the 2 directions 3 triangular solve pairs (reading
  the factor twice) and 2 refinement products: 20 B m² words moved, B (m³/3 +
  20 m²) flops;
* kernel launches: counted, not assumed: the aten ops one iteration dispatches
  (views excluded) on a small CPU batch, with the torch passes or with one
  launch per Triton pass;
* "cuda" (one thread per joint running csrc/broja.h): B × the CPU cost model of
  bench/roofline.py; its workspace traffic is uncoalesced (each thread walks its
  own arrays), counted as 4× the cache bytes (a 32-byte sector per 8-byte word).

Predicted time per iteration = max(bytes / bandwidth, flops / FP64 rate) +
launches × launch latency (each launch is a dependent step of one stream); for
"cuda", the FP64 rate is scaled by the fraction of the GPU's FP64 lanes that B
threads occupy.  The H100 figures below are the nominal ones of an SXM5 part
(the bench measures the copy bandwidth: substitute it).  Predicted forward time
= ITERATIONS × per iteration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402

from fastpid import solver  # noqa: E402

BANDWIDTH = 3.35e12  # B/s, HBM3 (H100 SXM5, nominal)
FP64_RATE = 67e12  # flop/s, FP64 tensor cores (cuSOLVER's Cholesky runs on DGEMM); 34e12 without
FP64_LANES = 132 * 64  # SMs × FP64 units per SM: threads that can each retire an FP64 op per cycle
LAUNCH_S = 5e-6  # s, one dependent kernel launch
ITERATIONS = 10  # a typical forward at tol 1e-8 (8 at 5×5×5, 11 at 20×20×6 on the CPU)
PASS_CALLS = {"pair_softmax": 2, "certificate": 1, "weighted_marginals": 3, "newton_matrix": 1}
UNCOALESCED = 4
CASES = [
    (batch, shape)
    for batch in (1, 1024, 65536)
    for shape in ((2, 2, 2), (5, 5, 5), (20, 20, 6), (32, 32, 32))
    if batch * 8 * shape[0] * shape[1] * shape[2] <= 2**31
] + [(1, (64, 64, 64)), (1, (128, 128, 128))]
VIEWS = (
    "view",
    "reshape",
    "expand",
    "select",
    "slice",
    "unsqueeze",
    "squeeze",
    "permute",
    "transpose",
    "as_strided",
    "alias",
    "detach",
    "t.default",
    "split",
    "unbind",
    "_unsafe_view",
    "lift_fresh",
)


class _Launches(TorchDispatchMode):
    """Counts the aten ops that run a kernel (views excluded); a pass wrapped by
    ``as_one_launch`` counts once."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.muted = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.muted and not any(name in str(func) for name in VIEWS):
            self.count += 1
        return func(*args, **(kwargs or {}))

    def as_one_launch(self, function):
        def call(*args):
            self.count, self.muted = self.count + 1, True
            try:
                return function(*args)
            finally:
                self.muted = False

        return call


def launches_per_iteration(fused: bool) -> int:
    """Launches of one iteration (3 iterations minus 2, on a 5×5×5 batch); the
    passes count as one launch each when ``fused``."""
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(4, 5, 5, 5, generator=gen, dtype=torch.float64)
    p = p / p.sum((1, 2, 3), keepdim=True)
    counts = []
    for steps in (2, 3):
        mode = _Launches()
        passes = solver.TORCH_PASSES
        if fused:
            passes = solver.Passes(**{name: mode.as_one_launch(getattr(passes, name)) for name in PASS_CALLS})
        with mode:
            solver.solve(p, tol=0.0, max_iter=steps, patience=100, passes=passes)
        counts.append(mode.count)
    return counts[1] - counts[0]


def fused_pass_cost(batch: int, n1: int, n2: int, ny: int) -> dict:
    from fastpid.kernels.broja_triton import costs  # needs triton (CPU import only, nothing runs)

    per_call = costs(batch, n1, n2, ny)
    return {key: sum(PASS_CALLS[name] * per_call[name][key] for name in PASS_CALLS) for key in ("bytes", "flops")}


def predict(batch: int, shape: tuple[int, int, int], launches: dict[str, float]) -> dict:
    n1, n2, ny = shape
    m = (n1 + n2) * ny
    passes = fused_pass_cost(batch, n1, n2, ny)
    dense_bytes, dense_flops = 8 * 20 * batch * m**2, batch * (m**3 / 3 + 20 * m**2)
    fused_s = (
        max((passes["bytes"] + dense_bytes) / BANDWIDTH, (passes["flops"] + dense_flops) / FP64_RATE)
        + launches["triton"] * LAUNCH_S
    )
    thread_flops = batch * roofline.flops_per_iteration(n1, n2, ny)["total"]
    thread_bytes = UNCOALESCED * batch * roofline.cache_bytes_per_iteration(n1, n2, ny)
    occupancy = min(batch, FP64_LANES) / FP64_LANES
    cuda_s = max(thread_bytes / BANDWIDTH, thread_flops / (FP64_RATE / 2 * occupancy)) + LAUNCH_S
    return {
        "batch": batch,
        "shape": shape,
        "m": m,
        "pass_bytes": passes["bytes"],
        "pass_flops": passes["flops"],
        "dense_bytes": dense_bytes,
        "dense_flops": dense_flops,
        "triton_s": fused_s,
        "cuda_flops": thread_flops,
        "cuda_bytes": thread_bytes,
        "cuda_s": cuda_s,
        "pass_share": passes["bytes"] / BANDWIDTH / fused_s,
    }


def table(launches: dict[str, float]) -> str:
    lines = [
        "| joints | shape | m | fused passes: MB, Mflop / iter | dense: MB, Gflop / iter | triton: predicted / iter "
        "| triton: forward / joint | cuda: MB, Gflop / iter | cuda: predicted / iter | cuda: forward / joint |",
        "| ---: | --- | ---: | --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for batch, shape in CASES:
        row = predict(batch, shape, launches)
        lines.append(
            f"| {batch:,} | {'×'.join(map(str, shape))} | {row['m']:,} | {row['pass_bytes'] / 1e6:.3g}, "
            f"{row['pass_flops'] / 1e6:.3g} | {row['dense_bytes'] / 1e6:.3g}, {row['dense_flops'] / 1e9:.3g} | "
            f"{_time(row['triton_s'])} | {_time(ITERATIONS * row['triton_s'] / batch)} | "
            f"{row['cuda_bytes'] / 1e6:.3g}, {row['cuda_flops'] / 1e9:.3g} | {_time(row['cuda_s'])} | "
            f"{_time(ITERATIONS * row['cuda_s'] / batch)} |"
        )
    return "\n".join(lines)


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.2g} ns"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    launches = {"torch": launches_per_iteration(fused=False), "triton": launches_per_iteration(fused=True)}
    text = "\n".join(
        [
            f"# Predicted GPU times (bench/gpu_model.py, {dt.date.today()}), before any GPU run",
            "",
            f"H100 SXM5 nominal: {BANDWIDTH / 1e12:.2f} TB/s, {FP64_RATE / 1e12:.0f} TFLOP/s FP64, "
            f"{LAUNCH_S * 1e6:.0f} µs per launch; {ITERATIONS} iterations per forward.",
            f"Launches per iteration, counted: torch passes {launches['torch']:.0f}, "
            f"fused passes {launches['triton']:.0f}.",
            "",
            table(launches),
        ]
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
