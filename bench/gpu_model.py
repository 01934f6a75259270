r"""Predicted GPU times and memory of the cases of bench_gpu.py, written down before any GPU run.

    .venv/bin/python bench/gpu_model.py [--out bench/results/gpu-prediction-YYYY-MM-DD.md]

Per interior-point iteration on a batch of B joints n1 × n2 × ny (N = B n1 n2 ny
cells, m = (n1 + n2) ny dual variables per joint):

* fused passes ("triton"): the bytes and flops of ``fastpid.kernels.costs``
  times the calls per iteration (pair softmax 2: the step and one trial of the
  line search; certificate 1; weighted marginals 3; Newton blocks 1 where the
  side elimination takes them);
* the Newton system of ``fastpid.solver`` ("torch", and "triton" around its
  passes), by the elimination ``solver.choose_elimination`` picks, factorised
  once per iteration and solved for 2 directions, each 1 + its refinement steps
  (``REFINEMENT_STEPS`` or ``PAIRS_REFINEMENT_STEPS``): side, ``SideFactor``
  by blocks, e = max(n1, n2) ny and k = min(n1, n2) ny (``solver.side_flops``
  per factorisation, which writes and reads the cross blocks and G, e k words
  each, and the Schur complement and its factor, k² each; each solve reads G
  twice and the factors once, each refinement product D_E C twice and the
  blocks once: 2 e k + k² + e ny words, as many multiply-adds); pairs,
  ``solver.pairs_flops`` per factorisation, its per-y blocks and capacitance
  matrix read twice per solve;
* kernel launches: counted, not assumed: the aten ops one iteration dispatches
  (views excluded) on a small CPU batch, with the torch passes or with one
  launch per Triton pass; a batch larger than the memory budget runs in
  chunks, one after the other, each with all its launches;
* "cuda" (csrc/cuda/broja_cuda.cu: one thread per joint running csrc/broja.h
  with the side elimination, 32-thread blocks, csrc/broja_interleaved.h's
  layout): the flops of bench/roofline.py
  (those of the CPU's loops) executed by the generic scalar templates (the
  device build has neither the register tiling nor the vector types).  Traffic:
  every flop of the linear algebra is one step of a scalar loop reading (and,
  in the rank updates, writing) its operands from the thread's own workspace in
  global memory: 3 words per multiply-add in the factorisation, 2 in the
  solves, 2 per elementwise pass over the cells.  The workspaces of a warp's 32
  joints are interleaved element by element, so the warp's 32 loads of one
  element are 256 contiguous bytes: 8 bytes per word (the first prediction of
  2026-12-07 had each joint's workspace contiguous, ``workspace_bytes`` apart,
  and charged a 32-byte sector per word).  A warp's threads read the same
  element where their joints have the same structure (dense joints of one
  shape); a sparse joint's cell lists differ from lane to lane, which this
  does not price.  Workspaces are served by L2 where the resident threads' fit
  in it, else by HBM.  Compute: FP64 without tensor cores (scalar FMAs), at the
  fraction of the GPU's FP64 issue rate that B threads can use: the lanes their
  warps fill, the SMs their blocks reach, and the warps per SM against the
  ``LATENCY_WARPS`` a scheduler needs to hide FP64 latency, with residency
  capped by the kernel's registers per thread.

* "triton" on small joints (``kernels/small_joint_solver.py``: one program per
  joint, the iteration on chip): bound by latency, not by bytes or flops.  Each
  iteration is a chain of dependent column steps: m in the Cholesky
  factorisation and m per triangular solve, 2 (L and Lᵀ) × (1 +
  REFINEMENT_STEPS) solves per direction, 2 directions.  A step costs one
  reduction over the program's threads (warp shuffles, and through shared
  memory with a barrier when the program has several warps), an L1 load, a
  float64 division and the selections around them (``STEP_CYCLES``).  The
  programs resident per SM follow from the registers of the build
  (bench/results/triton-build-2026-12-07.md: ~255 per thread, allocated in
  units of 256 per thread per warp); a batch runs in waves of SMS × that.

* the block-per-joint kernel (csrc/broja_block.h, ``torch.ops.fastpid.broja_solve_block``):
  persistent blocks of 64, 128 or 256 lanes (the best is shown), as many as
  the registers allow (``PROGRAM_REGISTERS`` per thread), one joint each at a
  time.  The flops of bench/roofline.py split in two: those the code leaves to
  one lane (the certificate's rounding, 25 N, charged every iteration) at
  ``ONE_LANE_CYCLES_PER_FLOP``, the rest at the block's share of its SM's FP64
  vector rate (latency hidden by the warps the SM holds); plus ``SYNC_CYCLES``
  per barrier (two per pivot of S's factorisation, one per pivot of each
  triangular solve with its factor, ~100 more per iteration and 16 per solve).  Its traffic is the thread kernel's (the
  same scalar loops) but for the rank updates, in 4 × 2 register tiles
  (0.75 words per multiply-add), served by L2 where the resident blocks'
  workspaces fit.

Memory per batch: "torch" holds ``solver.working_set_bytes`` per joint and
solves in chunks within the budget (``FASTPID_MEMORY_GIB``, set here to what
the card leaves); "cuda" allocates ``workspace_bytes`` per joint for the whole
batch, rounded up to whole groups of 32, at once (``fastpid::broja_workspace`` with FASTPID_ELIMINATION=side).  A
batch that needs more than the card holds is marked "does not fit".

Predicted time per iteration = max(bytes / bandwidth, flops / FP64 rate) +
launches × launch latency (each launch is a dependent step of one stream).  The
H100 figures below are the nominal ones of an SXM5 part (the bench measures the
copy bandwidth: substitute it).  Predicted forward time = ITERATIONS × per
iteration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402

from fastpid import solver  # noqa: E402
from fastpid.kernels import small_joint_solver  # noqa: E402

BANDWIDTH = 3.35e12  # B/s, HBM3 (H100 SXM5, nominal)
L2_BANDWIDTH = 5.5e12  # B/s, L2 (H100 SXM5; measured figures in the literature are 5-7 TB/s)
L2_BYTES = 50 * 2**20
CARD_BYTES = 80e9
FP64_TENSOR_RATE = 67e12  # flop/s, DMMA (cuSOLVER's Cholesky through DGEMM)
FP64_VECTOR_RATE = 33.5e12  # flop/s, FP64 FMA units: 132 SMs × 64 lanes × 2 flops × 1.98 GHz
SMS = 132
LATENCY_WARPS = 16  # warps per SM that keep its 4 schedulers issuing dependent FP64 FMAs (4 each)
REGISTERS_PER_SM = 65536
KERNEL_REGISTERS = 254  # per thread, the solve kernel on sm_80 and sm_90 (bench/results/cuda-build-2026-12-07.md)
THREADS_PER_BLOCK = 32  # a warp per block (csrc/cuda/broja_cuda.cu)
WARP = 32  # joints per interleaved workspace group (csrc/broja_interleaved.h)
LAUNCH_S = 5e-6  # s, one dependent kernel launch
CLOCK_HZ = 1.98e9  # H100 SXM5 boost clock
# Cycles of one dependent column step of the per-joint Triton program: one 32-lane shuffle
# reduction (5 × ~25 cycles), an L1 load (~40), a float64 division or square root (~40) and
# ~50 of selections; several warps add a shared-memory round and a barrier (~150).
STEP_CYCLES = {"one warp": 125 + 40 + 40 + 50, "several warps": 125 + 150 + 40 + 40 + 50}
PROGRAM_REGISTERS = 256  # per thread, as allocated (the build's 220-255)
MAX_PROGRAMS_PER_SM = 32  # resident thread blocks per SM (sm_90)
# The block-per-joint kernel (csrc/broja_block.h): a __syncthreads of a few warps that
# arrive together, and one lane's scalar loops (FP64 FMA latency ~8 cycles over ~2
# independent chains per loop).
SYNC_CYCLES = 40
ONE_LANE_CYCLES_PER_FLOP = 4
BLOCK_LANES = (64, 128, 256)
BLOCK_TILE = (4, 2)  # the team's rank-update tiles (csrc/broja/common.h: kTeamTileRows, kTeamTileColumns)
ITERATIONS = 10  # a typical forward at tol 1e-8 (8 at 5×5×5, 11 at 20×20×6 on the CPU)
PASS_CALLS = {"pair_softmax": 2, "certificate": 1, "weighted_marginals": 3, "newton_blocks": 1}
TORCH_BUDGET = 64 * 2**30  # FASTPID_MEMORY_GIB=64 on an 80 GB card: the rest for the inputs and the allocator
CASES = [
    (batch, shape)
    for batch in (1, 1024, 65536)
    for shape in ((2, 2, 2), (5, 5, 5), (20, 20, 6), (32, 32, 32))
    if batch * 8 * shape[0] * shape[1] * shape[2] <= 2**31
] + [(1, (64, 64, 64)), (1, (128, 128, 128)), (1, (20, 20, 1000))]
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


def fused_pass_cost(batch: int, n1: int, n2: int, ny: int, elimination: str) -> dict:
    """Bytes and flops of one iteration's fused passes; the pair elimination forms
    its own blocks (``solver.PairsFactor``), not the Newton blocks."""
    from fastpid.kernels.broja_triton import costs  # needs triton (CPU import only, nothing runs)

    per_call = costs(batch, n1, n2, ny)
    calls = {name: count for name, count in PASS_CALLS.items() if elimination == "side" or name != "newton_blocks"}
    return {key: sum(count * per_call[name][key] for name, count in calls.items()) for key in ("bytes", "flops")}


def newton_system_cost(n1: int, n2: int, ny: int) -> tuple[str, float, float]:
    """The "torch" path's elimination and its flops and bytes per joint and iteration:
    one factorisation, 2 directions × (1 + refinement steps) solves."""
    elimination = solver.choose_elimination(n1, n2, ny)
    if elimination == "pairs":
        solves = 2 * (1 + solver.PAIRS_REFINEMENT_STEPS)
        nn, pairs = n1 + n2, n1 * n2
        factor_words = ny * nn * nn + pairs * pairs
        flops = solver.pairs_flops(n1, n2, ny) + solves * 2 * factor_words
        words = 2 * factor_words + solves * 2 * factor_words
    else:
        solves, products = 2 * (1 + solver.REFINEMENT_STEPS), 2 * solver.REFINEMENT_STEPS
        e, k = max(n1, n2) * ny, min(n1, n2) * ny
        # A solve reads G twice and the factors; a product D_E C twice, A_K and A_E's blocks.
        pass_words = 2 * e * k + k * k + e * ny
        flops = solver.side_flops(n1, n2, ny) + (solves + products) * 2 * pass_words
        words = 4 * e * k + 3 * k * k + (solves + products) * pass_words
    return elimination, flops, 8.0 * words


def thread_per_joint_cost(batch: int, n1: int, n2: int, ny: int) -> dict:
    """Bytes, flops, FP64 rate and memory of the "cuda" kernel on a batch (module docstring)."""
    parts = roofline.flops_per_iteration(n1, n2, ny)
    factorisation = sum(parts[name] for name in ("assembly", "E blocks", "cross", "Schur update", "Schur Cholesky"))
    words = 3 * factorisation / 2 + 2 * parts["solves"] / 2 + 2 * parts["elementwise"]
    workspace = _side_workspace(n1, n2, ny)
    warps = -(-batch // WARP)
    blocks = -(-batch // THREADS_PER_BLOCK)
    resident_warps = min(64, REGISTERS_PER_SM // (KERNEL_REGISTERS * 32))
    warps_per_sm = min(resident_warps, -(-warps // min(blocks, SMS)))  # on each SM the blocks reach
    rate = (
        FP64_VECTOR_RATE
        * batch
        / (warps * 32)  # lanes the warps fill
        * min(blocks, SMS)
        / SMS  # SMs the blocks reach
        * min(1.0, warps_per_sm / LATENCY_WARPS)  # latency hidden
    )
    resident_threads = min(batch, SMS * resident_warps * 32)
    in_l2 = resident_threads * workspace <= L2_BYTES
    return {
        "flops": batch * parts["total"],
        "bytes": 8.0 * batch * words,  # coalesced: a warp's words are contiguous
        "rate": rate,
        "bandwidth": L2_BANDWIDTH if in_l2 else BANDWIDTH,
        "memory": warps * WARP * workspace + batch * 8.0 * (2 * n1 * n2 * ny + (n1 + n2) * ny + n1 * n2),
    }


def block_per_joint_cost(batch: int, n1: int, n2: int, ny: int, lanes: int) -> dict:
    """Time per iteration and memory of the block-per-joint kernel on a batch (module docstring)."""
    parts = roofline.flops_per_iteration(n1, n2, ny)
    cells, solves = n1 * n2 * ny, roofline.SOLVES_PER_ITERATION
    k = roofline.sides(n1, n2, ny)[2]
    # One lane: the certificate's rounding (its sums over pairs), at most once per iteration.
    one_lane = 25 * cells
    split = parts["total"] - one_lane
    # Two per pivot of S's factorisation, one per pivot of each triangular solve (two per
    # solve), ~100 more per iteration (passes and reductions) and 16 per solve.
    syncs = 2 * k + 100 + solves * (2 * k + 16)
    blocks_per_sm = min(MAX_PROGRAMS_PER_SM, REGISTERS_PER_SM // (PROGRAM_REGISTERS * lanes))
    teams = min(batch, SMS * blocks_per_sm)
    on_sm = -(-teams // SMS)
    warps_per_sm = on_sm * lanes / 32
    block_rate = FP64_VECTOR_RATE / SMS * min(1.0, warps_per_sm / LATENCY_WARPS) / on_sm
    # The rank updates (the Schur complement's and the Cholesky's trailing ones) in register
    # tiles: (R + C) / (R C) words per multiply-add; the other loops as the thread kernel's.
    tiled = parts["Schur update"] + parts["Schur Cholesky"]
    scalar = sum(parts[name] for name in ("assembly", "E blocks", "cross"))
    tile_words = (BLOCK_TILE[0] + BLOCK_TILE[1]) / (BLOCK_TILE[0] * BLOCK_TILE[1])
    words = 3 * scalar / 2 + tile_words * tiled / 2 + 2 * parts["solves"] / 2 + 2 * parts["elementwise"]
    joint_bytes = 8.0 * words
    workspace = _side_workspace(n1, n2, ny) + 2 * 8 * ny * lanes  # and each lane's scratch
    bandwidth = L2_BANDWIDTH if teams * workspace <= L2_BYTES else BANDWIDTH
    joint_s = (
        max(split / block_rate, joint_bytes / (bandwidth / teams))
        + one_lane * ONE_LANE_CYCLES_PER_FLOP / CLOCK_HZ
        + syncs * SYNC_CYCLES / CLOCK_HZ
    )
    return {
        "lanes": lanes,
        "iteration_s": -(-batch // teams) * joint_s + LAUNCH_S,
        "memory": teams * workspace + batch * 8.0 * (2 * n1 * n2 * ny + (n1 + n2) * ny + n1 * n2),
    }


def program_per_joint_seconds(batch: int, n1: int, n2: int, ny: int) -> float | None:
    """Predicted forward time of the per-joint Triton program on a batch (module
    docstring), or None for joints it does not take (``small_joint_solver.fits``)."""
    if not small_joint_solver.fits(n1, n2, ny):
        return None
    m = (n1 + n2) * ny
    warps = small_joint_solver.num_warps(small_joint_solver.matrix_tile(m))
    steps = m * (1 + 2 * 2 * (1 + solver.REFINEMENT_STEPS))
    iteration_s = steps * STEP_CYCLES["one warp" if warps == 1 else "several warps"] / CLOCK_HZ
    per_sm = min(MAX_PROGRAMS_PER_SM, REGISTERS_PER_SM // (PROGRAM_REGISTERS * 32 * warps))
    waves = -(-batch // (SMS * per_sm))
    return waves * ITERATIONS * iteration_s + LAUNCH_S


def _side_workspace(n1: int, n2: int, ny: int) -> int:
    """Bytes of one joint's workspace in the CUDA build (side elimination), from the op."""
    previous = os.environ.get("FASTPID_ELIMINATION")
    os.environ["FASTPID_ELIMINATION"] = "side"
    try:
        return int(torch.ops.fastpid.broja_workspace(n1, n2, ny)[0])
    finally:
        if previous is None:
            del os.environ["FASTPID_ELIMINATION"]
        else:
            os.environ["FASTPID_ELIMINATION"] = previous


def predict(batch: int, shape: tuple[int, int, int], launches: dict[str, float]) -> dict:
    n1, n2, ny = shape
    elimination, system_flops, system_bytes = newton_system_cost(n1, n2, ny)
    passes = fused_pass_cost(batch, n1, n2, ny, elimination)
    system_flops, system_bytes = batch * system_flops, batch * system_bytes
    torch_memory = batch * solver.working_set_bytes(n1, n2, ny, elimination)
    chunks = -(-torch_memory // TORCH_BUDGET)
    fused_s = (
        max((passes["bytes"] + system_bytes) / BANDWIDTH, (passes["flops"] + system_flops) / FP64_TENSOR_RATE)
        + chunks * launches["triton"] * LAUNCH_S
    )
    cuda = thread_per_joint_cost(batch, n1, n2, ny)
    cuda_s = max(cuda["bytes"] / cuda["bandwidth"], cuda["flops"] / cuda["rate"]) + LAUNCH_S
    return {
        "batch": batch,
        "shape": shape,
        "m": (n1 + n2) * ny,
        "elimination": elimination,
        "pass_bytes": passes["bytes"],
        "pass_flops": passes["flops"],
        "system_bytes": system_bytes,
        "system_flops": system_flops,
        "torch_memory": torch_memory,
        "chunks": chunks,
        "triton_s": fused_s,
        "program_s": program_per_joint_seconds(batch, n1, n2, ny),
        "cuda_flops": cuda["flops"],
        "cuda_bytes": cuda["bytes"],
        "cuda_rate": cuda["rate"],
        "cuda_memory": cuda["memory"],
        "cuda_fits": cuda["memory"] <= CARD_BYTES,
        "cuda_s": cuda_s,
        "block": min(
            (block_per_joint_cost(batch, n1, n2, ny, lanes) for lanes in BLOCK_LANES), key=lambda b: b["iteration_s"]
        ),
    }


def table(launches: dict[str, float]) -> str:
    lines = [
        "| joints | shape | m | elimination | fused passes: MB, Mflop / iter | system: MB, Gflop / iter "
        "| torch memory (chunks) | triton: per iter | triton: forward / joint "
        "| cuda: MB, Gflop / iter | cuda: FP64 rate | cuda memory | cuda: per iter | cuda: forward / joint "
        "| triton, one program per joint: forward | forward / joint "
        "| block per joint: lanes, memory | per iter | forward / joint |",
        "| ---: | --- | ---: | --- | --- | --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: "
        "| --- | ---: | ---: |",
    ]
    for batch, shape in CASES:
        row = predict(batch, shape, launches)
        block = row["block"]
        fits = "" if row["cuda_fits"] else ", does not fit"
        cuda = ("–", "–") if not row["cuda_fits"] else (_time(row["cuda_s"]), _time(ITERATIONS * row["cuda_s"] / batch))
        program = ("–", "–") if row["program_s"] is None else (_time(row["program_s"]), _time(row["program_s"] / batch))
        lines.append(
            f"| {batch:,} | {'×'.join(map(str, shape))} | {row['m']:,} | {row['elimination']} | "
            f"{row['pass_bytes'] / 1e6:.3g}, {row['pass_flops'] / 1e6:.3g} | "
            f"{row['system_bytes'] / 1e6:.3g}, {row['system_flops'] / 1e9:.3g} | "
            f"{_bytes(row['torch_memory'])} ({row['chunks']:,}) | "
            f"{_time(row['triton_s'])} | {_time(ITERATIONS * row['triton_s'] / batch)} | "
            f"{row['cuda_bytes'] / 1e6:.3g}, {row['cuda_flops'] / 1e9:.3g} | {row['cuda_rate'] / 1e12:.3g} TFLOP/s | "
            f"{_bytes(row['cuda_memory'])}{fits} | {cuda[0]} | {cuda[1]} | {program[0]} | {program[1]} | "
            f"{block['lanes']}, {_bytes(block['memory'])} | {_time(block['iteration_s'])} | "
            f"{_time(ITERATIONS * block['iteration_s'] / batch)} |"
        )
    return "\n".join(lines)


def _bytes(count: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} B"


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
            f"# Predicted GPU times and memory (bench/gpu_model.py, {dt.date.today()}), before any GPU run",
            "",
            f"H100 SXM5 nominal: HBM {BANDWIDTH / 1e12:.2f} TB/s, L2 {L2_BANDWIDTH / 1e12:.1f} TB/s "
            f"({L2_BYTES / 2**20:.0f} MiB), FP64 {FP64_TENSOR_RATE / 1e12:.0f} TFLOP/s with tensor cores and "
            f"{FP64_VECTOR_RATE / 1e12:.1f} without, {CARD_BYTES / 1e9:.0f} GB, {LAUNCH_S * 1e6:.0f} µs per launch; "
            f"{ITERATIONS} iterations per forward; the torch path's budget {TORCH_BUDGET / 2**30:.0f} GiB.",
            f"Launches per iteration, counted: torch passes {launches['torch']:.0f}, "
            f"fused passes {launches['triton']:.0f}.  The solve kernel: {KERNEL_REGISTERS} registers per thread "
            f"({min(64, REGISTERS_PER_SM // (KERNEL_REGISTERS * 32))} resident warps per SM), "
            f"{THREADS_PER_BLOCK}-thread blocks.",
            "",
            table(launches),
        ]
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
