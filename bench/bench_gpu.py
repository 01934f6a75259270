r"""GPU benchmarks of fastpid (pytest-benchmark); every test skips without CUDA.

    python -m pytest bench/bench_gpu.py --benchmark-json=bench/results/gpu.json

See bench/README_gpu.md for the cases, the targets and how to read the JSON.

Cases (backends "cuda", "triton", "torch", and "cpu" for the forward: each skipped where it does not exist):

* ``test_forward``: ``fastpid.pid(P, backend=b)`` on batches of 1, 1,024 and
  65,536 Dirichlet(1) joints (``make_joints``) of 2×2×2, 5×5×5, 20×20×6 and 32×32×32, and on
  single 64³ and 128³ joints.  Batches whose float64 input exceeds
  ``MAX_INPUT_BYTES`` are skipped (65,536 × 32³ = 17 GB).
* ``test_backward``: the same matrix, ``fastpid.pid(P).synergy.sum().backward()``
  timed by the benchmark; the forward alone is timed by hand in the same test,
  and ``backward_over_forward = (t_fwd+bwd - t_fwd) / t_fwd`` is stored.
* ``test_paper_gpu``: the paper's solver (bench/paper_solver.py) on the same
  GPU, on the joint of test_forward's 1x20x20x6 case; ``test_cvxpy_cpu``:
  cvxpy_pid on the CPU, same joint.  Both store ``error_bits`` against fastpid
  at ``TIGHT_TOL`` on that joint.

Every timed function ends with ``torch.cuda.synchronize()``.  ``extra_info``
holds what bench/README_gpu.md's table needs: joints, shape, backend,
iterations_max, gap_max_bits, time_per_joint_s, joint_bytes and
copy_bandwidth_GBps (one 1 GiB ``dst.copy_(src)`` timing per session).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import fastpid
from bench.paper_solver import paper_pid
from fastpid import backends
from fastpid.references import ATOMS, cvxpy_pid

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.filterwarnings("ignore"),
]

SEED = 20250923
TOL = 1e-8  # bits: fastpid.pid's default target gap
TIGHT_TOL = 1e-12  # bits: the reference answer for the paper's solver's error
MAX_INPUT_BYTES = 2 << 30  # float64 input above 2 GiB is skipped (solver workspace is several times that)
TIME_BUDGET_S = 5.0  # per test: rounds = budget / (time of the warm-up call), clamped to [ROUNDS_MIN, ROUNDS_MAX]
ROUNDS_MIN, ROUNDS_MAX = 3, 100
PAPER_SHAPE = (20, 20, 6)

BATCH_SIZES = (1, 1_024, 65_536)
BATCH_SHAPES = ((2, 2, 2), (5, 5, 5), (20, 20, 6), (32, 32, 32))
SINGLE_SHAPES = ((64, 64, 64), (128, 128, 128))


def joint_bytes(joints: int, shape) -> int:
    return joints * int(np.prod(shape)) * 8  # float64


def _case(joints: int, shape):
    """A (joints, shape) parameter, skipped when its input is over MAX_INPUT_BYTES."""
    size = joint_bytes(joints, shape)
    marks = (
        pytest.mark.skip(reason=f"{size / 1e9:.1f} GB of float64 input > {MAX_INPUT_BYTES / 1e9:.1f} GB")
        if size > MAX_INPUT_BYTES
        else ()
    )
    return pytest.param(joints, shape, marks=marks, id=f"{joints}x{'x'.join(map(str, shape))}")


CASES = [_case(b, s) for b in BATCH_SIZES for s in BATCH_SHAPES] + [_case(1, s) for s in SINGLE_SHAPES]

BACKENDS = [
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not backends.has_cuda_kernel(), reason="extension built without FASTPID_CUDA")
    ),
    pytest.param(
        "triton", marks=pytest.mark.skipif(backends.get("triton").missing is not None, reason="triton not installed")
    ),
    "torch",
]
# The forward also times the CPU op on a host copy ("auto"'s safe default for CUDA joints), for scale.
FORWARD_BACKENDS = [
    *BACKENDS,
    pytest.param("cpu", marks=pytest.mark.skipif(backends.get("cpu").missing is not None, reason="no C++ extension")),
]


# ---------------------------------------------------------------- helpers


def make_joints(joints: int, shape, seed: int = SEED) -> torch.Tensor:
    """(joints, *shape) float64 Dirichlet(1) joints on the GPU (normalised exponentials)."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    p = torch.empty(joints, *shape, dtype=torch.float64, device="cuda").exponential_(generator=generator)
    return p / p.sum((-3, -2, -1), keepdim=True)


def sync(fn):
    """fn followed by torch.cuda.synchronize(), so the timing covers the GPU work."""

    def timed(*args, **kwargs):
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return out

    return timed


def wall(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def rounds_for(seconds: float) -> int:
    return int(min(ROUNDS_MAX, max(ROUNDS_MIN, TIME_BUDGET_S // max(seconds, 1e-6))))


def median_seconds(benchmark) -> float | None:
    """The benchmark's median time per call (None under --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.median)


def record(benchmark, kind: str, backend: str, joints: int, shape, result, copy_bandwidth, **more):
    """extra_info for bench/README_gpu.md's table (result: a PIDResult, or None)."""
    median = median_seconds(benchmark)
    info = {
        "kind": kind,
        "backend": backend,
        "joints": joints,
        "shape": list(shape),
        "joint_bytes": joint_bytes(joints, shape),
        "copy_bandwidth_GBps": copy_bandwidth,
        "time_per_joint_s": None if median is None else median / joints,
        "kernel": kernel(backend, joints, shape),
        "device": torch.cuda.get_device_name(),
    }
    if result is not None:
        info.update(
            iterations_max=int(result.iterations.max()),
            gap_max_bits=float(result.gap.max()),
            converged_fraction=float(result.converged.double().mean()),
        )
    benchmark.extra_info.update({**info, **more})


def kernel(backend: str, joints: int, shape) -> str:
    """Which kernel a backend runs on a batch of ``joints`` of this shape."""
    if backend == "triton":
        from fastpid.kernels import one_program_per_joint

        per_joint = one_program_per_joint((joints, *shape), torch.device("cuda"))
        return "one program per joint" if per_joint else "fused passes"
    kernels = {"cuda": "one thread per joint", "cpu": "C++ op on a host copy", "torch": "torch ops"}
    return kernels.get(backend, backend)  # the references name themselves


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def copy_bandwidth() -> float:
    """Device copy bandwidth in GB/s (1e9 bytes/s, read + written): ``dst.copy_(src)``
    of a 1 GiB tensor, best of 5 after a warm-up, once per session."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / best / 1e9


@pytest.fixture(scope="session")
def paper_joint() -> torch.Tensor:
    """The 20×20×6 joint of test_forward's 1x20x20x6 case (same generator and seed)."""
    return make_joints(1, PAPER_SHAPE)[0]


@pytest.fixture(scope="session")
def paper_reference(paper_joint) -> tuple[np.ndarray, float]:
    """fastpid at TIGHT_TOL on paper_joint: atoms (R, U1, U2, S) and its certified gap."""
    result = fastpid.pid(paper_joint, backend="torch", tol=TIGHT_TOL, max_iter=200)
    return np.array([float(getattr(result, a)) for a in ATOMS]), float(result.gap)


@pytest.fixture(autouse=True)
def free_memory():
    yield
    torch.cuda.empty_cache()


# ---------------------------------------------------------------- forward and backward


@pytest.mark.benchmark(group="gpu forward")
@pytest.mark.parametrize("joints, shape", CASES)
@pytest.mark.parametrize("backend", FORWARD_BACKENDS)
def test_forward(benchmark, copy_bandwidth, backend, joints, shape):
    if backend == "cpu" and shape[0] >= 32:
        pytest.skip("the CPU op at 32³ and above: bench/results/cpu-*.md (minutes here)")
    P = make_joints(joints, shape)
    forward = sync(fastpid.pid)
    kwargs = {"backend": backend, "tol": TOL}
    seconds = wall(forward, P, **kwargs)  # warm-up (Triton compiles, caches fill), and the round count
    result = benchmark.pedantic(forward, args=(P,), kwargs=kwargs, rounds=rounds_for(seconds), iterations=1)
    record(benchmark, "forward", backend, joints, shape, result, copy_bandwidth)


@pytest.mark.benchmark(group="gpu backward")
@pytest.mark.parametrize("joints, shape", CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backward(benchmark, copy_bandwidth, backend, joints, shape):
    P = make_joints(joints, shape).requires_grad_()
    kwargs = {"backend": backend, "tol": TOL}

    @sync
    def forward():
        return fastpid.pid(P, **kwargs)

    @sync
    def forward_backward():
        P.grad = None
        result = fastpid.pid(P, **kwargs)
        result.synergy.sum().backward()
        return result

    rounds = rounds_for(wall(forward_backward))  # warm-up
    wall(forward)
    forward_times = sorted(wall(forward) for _ in range(rounds))
    forward_median = forward_times[len(forward_times) // 2]
    result = benchmark.pedantic(forward_backward, rounds=rounds, iterations=1)
    both = median_seconds(benchmark)
    record(
        benchmark,
        "backward",
        backend,
        joints,
        shape,
        result,
        copy_bandwidth,
        forward_median_s=forward_median,
        backward_over_forward=None if both is None else (both - forward_median) / forward_median,
    )


# ---------------------------------------------------------------- the two Triton solvers


SMALL_SHAPES = [shape for shape in BATCH_SHAPES if shape in ((2, 2, 2), (5, 5, 5))]  # small_joint_solver.fits


@pytest.mark.benchmark(group="gpu triton solvers")
@pytest.mark.skipif(backends.get("triton").missing is not None, reason="triton not installed")
@pytest.mark.parametrize("joints", BATCH_SIZES)
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("kernel", ["one program per joint", "fused passes"])
def test_triton_solvers(benchmark, copy_bandwidth, kernel, joints, shape):
    """The solve alone by each of the "triton" backend's solvers on batches of small
    joints: where one program per joint stops paying (``fastpid.kernels.one_program_per_joint``)."""
    from fastpid import solver
    from fastpid.kernels import TRITON_PASSES, small_joint_solver

    P = make_joints(joints, shape)
    tol = TOL * np.log(2)
    if kernel == "one program per joint":
        solve = sync(lambda: small_joint_solver.solve(P, tol, 100, solver.PATIENCE))
    else:
        solve = sync(lambda: solver.solve(P, tol, 100, solver.PATIENCE, passes=TRITON_PASSES))
    solution = benchmark.pedantic(solve, rounds=rounds_for(wall(solve)), iterations=1)
    record(
        benchmark,
        "solve",
        "triton",
        joints,
        shape,
        None,
        copy_bandwidth,
        kernel=kernel,
        resident_programs=small_joint_solver.resident_programs(P.device, *shape),
        iterations_max=int(solution.iterations.max()),
        converged_fraction=float(solution.converged.double().mean()),
    )


# ---------------------------------------------------------------- the CUDA solvers


BLOCK_CASES = [_case(1_024, (5, 5, 5)), _case(1_024, (20, 20, 6)), _case(65_536, (20, 20, 6))]


@pytest.mark.benchmark(group="gpu cuda solvers")
@pytest.mark.skipif(not backends.has_cuda_kernel(), reason="extension built without FASTPID_CUDA")
@pytest.mark.parametrize("joints, shape", BLOCK_CASES)
@pytest.mark.parametrize("lanes", [0, 64, 128, 256], ids=lambda lanes: f"block of {lanes}" if lanes else "thread")
def test_cuda_solvers(benchmark, copy_bandwidth, lanes, joints, shape):
    """The solve alone by the thread-per-joint kernel ("cuda") and the block-per-joint
    kernel with blocks of 64, 128 and 256 threads: the mid regime's crossover (the
    torch path's batched factorisations: test_forward's "torch")."""
    from fastpid import solver

    if lanes == 0 and joints > 1_024 and shape == (20, 20, 6):
        pytest.skip("one thread per joint: timed at this size by test_forward's 'cuda'")
    P = make_joints(joints, shape)
    tol = TOL * np.log(2)
    if lanes:
        solve = sync(lambda: torch.ops.fastpid.broja_solve_block(P, tol, 100, solver.PATIENCE, lanes))
    else:
        solve = sync(lambda: torch.ops.fastpid.broja_solve(P, tol, 100, solver.PATIENCE))
    solution = solver.Solution(*benchmark.pedantic(solve, rounds=rounds_for(wall(solve)), iterations=1))
    record(
        benchmark,
        "solve",
        "cuda",
        joints,
        shape,
        None,
        copy_bandwidth,
        kernel=f"a block of {lanes} per joint" if lanes else "one thread per joint",
        iterations_max=int(solution.iterations.max()),
        converged_fraction=float(solution.converged.double().mean()),
    )


# ---------------------------------------------------------------- the references, for scale


@pytest.mark.benchmark(group="gpu references: 20x20x6")
def test_paper_gpu(benchmark, copy_bandwidth, paper_joint, paper_reference):
    atoms, reference_gap = paper_reference
    solve = sync(paper_pid)
    seconds = wall(solve, paper_joint, device="cuda")  # warm-up
    answer = benchmark.pedantic(
        solve, args=(paper_joint,), kwargs={"device": "cuda"}, rounds=min(rounds_for(seconds), 5), iterations=1
    )
    record(
        benchmark,
        "paper",
        "paper/cuda",
        1,
        PAPER_SHAPE,
        None,
        copy_bandwidth,
        steps=answer["steps"],
        error_bits=float(np.abs(np.array([answer[a] for a in ATOMS]) - atoms).max()),
        reference_gap_bits=reference_gap,
    )


@pytest.mark.benchmark(group="gpu references: 20x20x6")
def test_cvxpy_cpu(benchmark, copy_bandwidth, paper_joint, paper_reference):
    atoms, reference_gap = paper_reference
    P = paper_joint.cpu().numpy()
    answer = benchmark.pedantic(cvxpy_pid, args=(P,), rounds=3, iterations=1, warmup_rounds=1)
    record(
        benchmark,
        "cvxpy",
        "cvxpy/cpu",
        1,
        PAPER_SHAPE,
        None,
        copy_bandwidth,
        error_bits=float(np.abs(np.array([answer[a] for a in ATOMS]) - atoms).max()),
        reference_gap_bits=reference_gap,
    )
