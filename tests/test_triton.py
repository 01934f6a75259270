"""The "triton" backend: fused Triton passes (``fastpid.kernels``) against the
torch passes of ``fastpid.solver``, and ``fastpid.pid(..., backend="triton")``
against ``backend="torch"``.

With a CUDA device (and ``TRITON_INTERPRET`` unset) the kernels are compiled and
run on the GPU, in this process.  Without one they run on CPU tensors under
Triton's interpreter, which must be switched on (``TRITON_INTERPRET=1``) before
``triton`` is first imported in a process; so ``test_interpreted_in_subprocess``
runs this file again in a fresh pytest process with it set (or run
``TRITON_INTERPRET=1 pytest tests/test_triton.py`` directly).  Skipped without Triton.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import fastpid
from fastpid import backends, solver
from fastpid.examples import (
    CANONICAL,
    boundary_joint,
    degenerate_joints,
    deterministic_batch,
    dirichlet_batch,
    dirichlet_joint,
    near_degenerate_batch,
    plugin_batch,
    sparse_joint,
)
from fastpid.information import LN2

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")
GPU = torch.cuda.is_available() and not INTERPRET
IN_PROCESS = HAS_TRITON and (GPU or INTERPRET)  # this process can run the kernels
DEVICE = torch.device("cuda" if GPU else "cpu")
ATOL = {torch.float64: 1e-12, torch.float32: 1e-5}
SHAPES = [(2, 2, 2), (3, 4, 5), (5, 3, 2)]

pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
in_process = pytest.mark.skipif(not IN_PROCESS, reason="no GPU: test_interpreted_in_subprocess runs it")
K = importlib.import_module("fastpid.kernels.broja_triton") if IN_PROCESS else None
SMALL = importlib.import_module("fastpid.kernels.small_joint_solver") if HAS_TRITON else None
BUILD = importlib.import_module("fastpid.kernels.build") if HAS_TRITON else None


def test_interpreted_in_subprocess():
    """This file under Triton's interpreter, in a fresh process (no GPU here)."""
    if IN_PROCESS:
        pytest.skip("this process runs the kernels itself")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def random_batch(shape, batch, dtype, seed):
    """Joints with zeros: sparse cells, P1(x1=-1, y=0) = 0 and P2(x2=-1, y=1) = 0 (so
    that pair (-1, -1) has no cell where ny = 2), with dual variables, pair masses
    and slacks of the solver's kind (λ = 0 where the marginal is 0)."""
    gen = torch.Generator().manual_seed(seed)
    n1, n2, ny = shape
    p = torch.rand(batch, *shape, generator=gen, dtype=torch.float64)
    p = p * (torch.rand(batch, *shape, generator=gen, dtype=torch.float64) > 0.3)
    p[:, -1, :, 0] = 0
    p[:, :, -1, 1] = 0
    p[:, 0, 0, 0] += 0.05
    support = solver.Support.of((p / p.sum((1, 2, 3), keepdim=True)).to(DEVICE, dtype))
    lam1 = torch.randn(batch, n1, ny, generator=gen, dtype=torch.float64)
    lam2 = torch.randn(batch, n2, ny, generator=gen, dtype=torch.float64)
    w = torch.rand(batch, n1, n2, generator=gen, dtype=torch.float64)
    h = torch.rand(batch, n1, n2, generator=gen, dtype=torch.float64) + 0.1
    lam1, lam2, w, h = (t.to(DEVICE, dtype) for t in (lam1, lam2, w, h))
    return support, lam1 * (support.p1 > 0), lam2 * (support.p2 > 0), w, h


def close(ours, ref, dtype):
    torch.testing.assert_close(ours, ref, rtol=ATOL[dtype], atol=ATOL[dtype])


cases = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
shapes = pytest.mark.parametrize(
    "shape,batch",
    [(s, b) for s, b in zip(SHAPES, (1, 3, 4))] + [((3, 4, 5), 2)],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"B{v}",
)


@in_process
@cases
@shapes
def test_pair_softmax(shape, batch, dtype):
    support, lam1, lam2, _, _ = random_batch(shape, batch, dtype, seed=1)
    assert not support.pair.all() or shape[2] > 2  # the no-cell pair is exercised
    g, s = K.pair_softmax(lam1, lam2, support)
    g_ref, s_ref = solver.pair_softmax(lam1, lam2, support)
    close(g, g_ref, dtype)
    close(s, s_ref, dtype)
    assert torch.all(s[~support.cell] == 0) and torch.all(g[~support.pair] == 0)


@in_process
@cases
@shapes
def test_weighted_marginals(shape, batch, dtype):
    support, lam1, lam2, w, _ = random_batch(shape, batch, dtype, seed=2)
    _, s = solver.pair_softmax(lam1, lam2, support)
    for ours, ref in zip(K.weighted_marginals(w, s), solver.weighted_marginals(w, s)):
        close(ours, ref, dtype)


@in_process
@cases
@shapes
def test_newton_blocks(shape, batch, dtype):
    support, lam1, lam2, w, h = random_batch(shape, batch, dtype, seed=3)
    _, s = solver.pair_softmax(lam1, lam2, support)
    for ours, ref in zip(K.newton_blocks(w, h, s, support), solver.newton_blocks(w, h, s, support)):
        close(ours, ref, dtype)


@in_process
@cases
@shapes
def test_certificate(shape, batch, dtype):
    support, lam1, lam2, w, _ = random_batch(shape, batch, dtype, seed=4)
    q, value, gap = K.certificate(lam1, lam2, w, support)
    q_ref, value_ref, gap_ref = solver.certificate(lam1, lam2, w, support)
    close(q, q_ref, dtype)
    close(value, value_ref, dtype)
    close(gap, gap_ref, dtype)


@in_process
def test_wide_tiles():
    """Sizes over one tile: several tiles of pairs and x2 blocks (row partials
    summed), loops over x1; loops over the other symbol in the Newton blocks,
    and their class tiles (2 × 2 tiles of 32 classes, the last ones partial)."""
    support, lam1, lam2, w, _ = random_batch((3, 9, 300), 1, torch.float64, seed=5)
    g, s = K.pair_softmax(lam1, lam2, support)
    g_ref, s_ref = solver.pair_softmax(lam1, lam2, support)
    close(g, g_ref, torch.float64)
    close(s, s_ref, torch.float64)
    for ours, ref in zip(K.weighted_marginals(w, s_ref), solver.weighted_marginals(w, s_ref)):
        close(ours, ref, torch.float64)
    for shape in ((5, 7, 20), (3, 2, 40)):
        support, lam1, lam2, w, h = random_batch(shape, 1, torch.float64, seed=6)
        _, s = solver.pair_softmax(lam1, lam2, support)
        for ours, ref in zip(K.newton_blocks(w, h, s, support), solver.newton_blocks(w, h, s, support)):
            close(ours, ref, torch.float64)


def solve_batches():
    """Batches of one shape: the canonical joints and random small ones."""
    rng = np.random.default_rng(7)
    by_shape: dict = {}
    for P in CANONICAL.values():
        by_shape.setdefault(P.shape, []).append(P)
    by_shape[(3, 4, 5)] = [dirichlet_joint(rng, (3, 4, 5), 0.5), sparse_joint(rng, (3, 4, 5), 0.5)]
    by_shape[(5, 3, 2)] = [dirichlet_joint(rng, (5, 3, 2), 1.0), sparse_joint(rng, (5, 3, 2), 0.5)]
    # Empty symbols and target values, point masses: pairs without cells, pinned rows.
    by_shape[(2, 3, 2)] = list(degenerate_joints((2, 3, 2), rng).values())
    return [torch.tensor(np.stack(joints), device=DEVICE) for joints in by_shape.values()]


@in_process
@pytest.mark.parametrize("p", solve_batches(), ids=lambda p: "x".join(map(str, p.shape)))
def test_solve_matches_reference(p):
    """The same iteration: same iteration counts and values within 1e-9 bits."""
    ours = solver.solve(p, passes=K.TRITON_PASSES)
    ref = solver.solve(p)
    support = solver.Support.of(p)
    _, value, gap = solver.certificate(ours.lam1, ours.lam2, ours.w, support)
    _, value_ref, gap_ref = solver.certificate(ref.lam1, ref.lam2, ref.w, support)
    assert torch.equal(ours.iterations, ref.iterations), (ours.iterations, ref.iterations)
    assert torch.equal(ours.converged, ref.converged) and ours.converged.all()
    assert ((value - value_ref).abs() / LN2).max() <= 1e-9
    assert (gap / LN2).max() <= 1e-8 and (gap_ref / LN2).max() <= 1e-8


# The plug-in joint that the iteration alone leaves at a gap of 7.6 bits (tests/test_robustness.py).
PLUGIN_NEEDS_FALLBACK = np.array([0, 11, 52, 0, 0, 31, 1, 5.0]).reshape(2, 2, 2) / 100


def small_joint_batches():
    """One batch per shape for the one-program-per-joint solver: the accuracy
    families (canonical, random, sparse, skewed, boundary, degenerate, tiny cells,
    deterministic, near-empty symbols, plug-in), ~20 joints (the interpreter runs
    each for seconds)."""
    rng = np.random.default_rng(23)
    batches = {
        "2x2x2": [CANONICAL[name] for name in ("XOR", "AND", "RDN", "UNQ")]
        + [boundary_joint(rng, (2, 2, 2)), PLUGIN_NEEDS_FALLBACK],
        "2x3x2-degenerate": list(degenerate_joints((2, 3, 2), rng).values()),
        "3x4x5": [
            dirichlet_joint(rng, (3, 4, 5), 0.5),
            sparse_joint(rng, (3, 4, 5), 0.9),
            boundary_joint(rng, (3, 4, 5)),
        ],
        "4x4x4": [
            CANONICAL["RDNXOR"],
            *dirichlet_batch(rng, (4, 4, 4), 1, 0.05),  # cells over many orders of magnitude
            *deterministic_batch(rng, (4, 4, 4), 2),
            *near_degenerate_batch(rng, (4, 4, 4), 1),
        ],
        "5x5x5": list(plugin_batch(rng, (5, 5, 5), 1, 200)) + list(deterministic_batch(rng, (5, 5, 5), 1)),
    }
    return {name: torch.tensor(np.stack(joints), device=DEVICE) for name, joints in batches.items()}


SMALL_BATCHES = small_joint_batches()


REFERENCE_SOLVERS = {
    "torch": lambda p, tol, max_iter: solver.solve(p, tol, max_iter, solver.PATIENCE, elimination="side"),
    # The C++ per-joint solver (csrc/broja), where this build has it.
    "cpu": lambda p, tol, max_iter: backends.get("cpu").solve(p, tol, max_iter, solver.PATIENCE),
}


@functools.cache
def small_joint_solution(name: str, tol: float, max_iter: int) -> solver.Solution:
    """``SMALL.solve`` of a batch, once per session (the interpreter takes seconds a joint)."""
    return SMALL.solve(SMALL_BATCHES[name], tol, max_iter, solver.PATIENCE)


@in_process
@pytest.mark.parametrize("reference", list(REFERENCE_SOLVERS))
@pytest.mark.parametrize("name", list(SMALL_BATCHES))
def test_small_joint_solver_matches_reference(name, reference):
    """One program per joint runs ``solver._solve_batch``'s iteration (side
    elimination).  Against the torch solver, whose steps it mirrors: the same
    convergence and, where converged, iteration counts within one and values within
    1e-9 bits.  Against the C++ per-joint solver: the same convergence and, where
    converged, values within the two certified gaps (its steps differ: 13 iterations
    against 10 and values 1.7e-9 bits apart on Dirichlet(0.02) joints, both certified
    to 1e-8 bits).  Every converged gap within tol."""
    if reference == "cpu" and backends.get("cpu").missing is not None:
        pytest.skip("no C++ extension in this build")
    p = SMALL_BATCHES[name]
    tol, max_iter = 1e-8 * LN2, 100
    ours = small_joint_solution(name, tol, max_iter)
    ref = REFERENCE_SOLVERS[reference](p, tol, max_iter)
    support = solver.Support.of(p)
    _, value, gap = solver.certificate(ours.lam1, ours.lam2, ours.w, support)
    _, value_ref, gap_ref = solver.certificate(
        ref.lam1.to(p.device), ref.lam2.to(p.device), ref.w.to(p.device), support
    )
    converged_ref, iterations_ref = ref.converged.to(p.device), ref.iterations.to(p.device)
    assert torch.equal(ours.converged, converged_ref), (ours.converged, converged_ref)
    converged = ours.converged
    assert bool(converged.any())
    difference = (value - value_ref).abs()[converged]
    if reference == "torch":
        assert ((ours.iterations - iterations_ref).abs()[converged] <= 1).all(), (ours.iterations, iterations_ref)
        assert (difference / LN2).max() <= 1e-9
    else:
        assert (difference <= (gap + gap_ref)[converged] + 1e-12 * LN2).all()
    assert (gap[converged] <= tol).all()


@in_process
@pytest.mark.parametrize("name", ["3x4x5", "4x4x4"])
def test_small_joint_solver_iterates(name):
    """The iterates themselves after three steps (no joint stops: tol 0), in their
    gauge-invariant form: λ1(x1, y) + λ2(x2, y) on every cell, and the pair masses w
    (they agree to ~1e-14: the same operations in another order)."""
    p = SMALL_BATCHES[name]
    ours = SMALL.solve(p, 0.0, 3, solver.PATIENCE)
    ref = solver.solve(p, 0.0, 3, solver.PATIENCE, elimination="side")
    cell = solver.Support.of(p).cell
    sums = [
        (lam1[:, :, None, :] + lam2[:, None, :, :])[cell]
        for lam1, lam2 in ((ours.lam1, ours.lam2), (ref.lam1, ref.lam2))
    ]
    torch.testing.assert_close(sums[0], sums[1], rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(ours.w, ref.w, rtol=1e-11, atol=1e-13)
    assert torch.equal(ours.iterations, ref.iterations)


@in_process
def test_small_joint_solver_chunks(monkeypatch):
    """A batch whose scratch exceeds the memory budget runs in chunks, with the same
    results: a budget of four joints' scratch splits six joints into 4 + 2."""
    name = "2x3x2-degenerate"
    p = SMALL_BATCHES[name]
    scratch = 8 * SMALL.scratch_size(*p.shape[1:])
    monkeypatch.setenv("FASTPID_MEMORY_GIB", repr(4.5 * scratch / 2**30))
    chunks = []
    solve_chunk = SMALL._solve_chunk
    monkeypatch.setattr(
        SMALL, "_solve_chunk", lambda chunk, *args: chunks.append(len(chunk)) or solve_chunk(chunk, *args)
    )
    chunked = SMALL.solve(p, 1e-8 * LN2, 100, solver.PATIENCE)
    assert chunks == [4, 2]
    whole = small_joint_solution(name, 1e-8 * LN2, 100)
    for field in solver.SOLUTION_FIELDS:
        assert torch.equal(getattr(chunked, field), getattr(whole, field)), field


@in_process
def test_small_joint_solver_rejects():
    """Shapes beyond SMALL_MAX_DUALS and other dtypes: a clear error, and an empty batch is empty."""
    with pytest.raises(ValueError, match=r"6×6×12 joints have \(n1 \+ n2\) ny = 144 dual variables, more than the 128"):
        SMALL.solve(torch.full((1, 6, 6, 12), 1 / 432, dtype=torch.float64, device=DEVICE), 1e-8, 10, 3)
    with pytest.raises(ValueError, match="the joints must be float64, got torch.float32"):
        SMALL.solve(torch.full((1, 2, 2, 2), 1 / 8, device=DEVICE), 1e-8, 10, 3)
    empty = SMALL.solve(torch.zeros((0, 2, 2, 2), dtype=torch.float64, device=DEVICE), 1e-8, 10, 3)
    assert empty.lam1.shape == (0, 2, 2) and empty.iterations.shape == (0,)
    assert SMALL.fits(4, 4, 16) and not SMALL.fits(5, 5, 16)


@in_process
def test_gradcheck_backend_triton():
    """``torch.autograd.gradcheck`` in float64 of all five outputs through
    ``fastpid.pid(backend="triton")`` (one program per joint, then the fused backward),
    on an interior joint solved to 1e-13 bits (finite differences divide the solver's
    error by the step: tests/test_gradients.py)."""
    rng = np.random.default_rng(29)
    P = np.maximum(rng.dirichlet(np.full(8, 2.0)), 1e-3).reshape(2, 2, 2)
    P = torch.tensor(P / P.sum(), device=DEVICE, requires_grad=True)

    def outputs(P):
        result = fastpid.pid(P, backend="triton", tol=1e-13)
        return tuple(getattr(result, name) for name in ("redundancy", "unique1", "unique2", "synergy", "mi"))

    assert torch.autograd.gradcheck(outputs, (P,), eps=1e-6, atol=1e-5, rtol=1e-3)


@in_process
def test_torch_compile_traces_backend_triton():
    """``torch.compile(fullgraph=True)`` over ``fastpid.pid(backend="triton")``, forward and
    backward: one graph (the plug-in is resolved when the op runs, its fused backward is
    an op of its own), the same values and gradient as eager."""
    from torch._dynamo.testing import CompileCounterWithBackend

    gen = torch.Generator().manual_seed(17)
    P = torch.rand(2, 2, 3, 2, generator=gen, dtype=torch.float64) + 0.05
    P = (P / P.sum((1, 2, 3), keepdim=True)).to(DEVICE)

    def objective(P):
        result = fastpid.pid(P, backend="triton")
        return (result.synergy + 2 * result.unique1).sum()

    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    values, grads = [], []
    for function in (torch.compile(objective, backend=counter, fullgraph=True), objective):
        leaf = P.clone().requires_grad_()
        value = function(leaf)
        value.backward()
        values.append(value.detach())
        grads.append(leaf.grad)
    torch._dynamo.reset()
    assert counter.frame_count == 1
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


@pytest.mark.skipif(not INTERPRET, reason="the interpreted run stands in for the GPU (bench_gpu.py runs there)")
def test_gpu_benchmarks_run(monkeypatch):
    """The prepared device run's Triton benchmarks (bench/bench_gpu.py), run here on tiny
    CPU batches with the CUDA calls stubbed: a fault in them would cost a GPU session."""
    bench = importlib.import_module("bench.bench_gpu")

    def make_joints(joints, shape, seed=0):
        p = torch.rand(joints, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.01
        return p / p.sum((1, 2, 3), keepdim=True)

    h100 = types.SimpleNamespace(multi_processor_count=132, regs_per_multiprocessor=65536)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *args: h100)
    monkeypatch.setattr(bench, "make_joints", make_joints)

    class Benchmark:  # pytest-benchmark's fixture, reduced to what the tests call
        stats, extra_info = None, {}

        def pedantic(self, function, args=(), kwargs=None, rounds=1, iterations=1, warmup_rounds=0):
            return function(*args, **(kwargs or {}))

    for kernel in ("one program per joint", "fused passes"):
        benchmark = Benchmark()
        benchmark.extra_info = {}
        bench.test_triton_solvers(benchmark, 1.0, kernel, 2, (2, 2, 2))
        assert benchmark.extra_info["kernel"] == kernel and benchmark.extra_info["converged_fraction"] == 1.0
    for test in (bench.test_forward, bench.test_backward):
        benchmark = Benchmark()
        benchmark.extra_info = {}
        test(benchmark, 1.0, "triton", 2, (2, 2, 2))
        assert benchmark.extra_info["kernel"] == "one program per joint", benchmark.extra_info


def test_one_program_per_joint_within_one_wave(monkeypatch):
    """The "triton" backend runs one program per joint for small joints in batches of
    at most one wave of resident programs (an H100's 132 SMs: 8 one-warp programs,
    2 four-warp or 1 eight-warp program per SM), else the fused passes; under the
    interpreter (CPU tensors) any batch of small joints."""
    kernels = importlib.import_module("fastpid.kernels")
    h100 = types.SimpleNamespace(multi_processor_count=132, regs_per_multiprocessor=65536)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: h100)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [SMALL.resident_programs(cuda, *shape) for shape in [(2, 2, 2), (4, 4, 4), (5, 5, 5)]] == [1056, 264, 132]
    assert SMALL.resident_programs(cpu, 5, 5, 5) is None
    assert kernels.one_program_per_joint((1056, 2, 2, 2), cuda) and not kernels.one_program_per_joint(
        (1057, 2, 2, 2), cuda
    )
    assert kernels.one_program_per_joint((132, 5, 5, 5), cuda) and not kernels.one_program_per_joint(
        (133, 5, 5, 5), cuda
    )
    assert kernels.one_program_per_joint((65536, 5, 5, 5), cpu)
    assert not kernels.one_program_per_joint((1, 20, 20, 6), cuda) and not kernels.one_program_per_joint(
        (1, 20, 20, 6), cpu
    )


compiled = pytest.mark.skipif(INTERPRET, reason="Triton's interpreter compiles nothing")
with_nvidia_tools = pytest.mark.skipif(
    not HAS_TRITON or not (BUILD.nvidia_tool("ptxas") and BUILD.nvidia_tool("cuobjdump")),
    reason="needs Triton's NVIDIA tools (ptxas, cuobjdump)",
)


@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 3, 3), (4, 4, 4), (2, 2, 8)], ids=lambda s: "x".join(map(str, s)))
@compiled
@with_nvidia_tools
def test_small_joint_solver_builds(shape, capability):
    """Build evidence without a GPU: compiled for sm_80 and sm_90, the kernel keeps
    its state in registers (no local-memory stack: no spills) and forms the Newton
    matrix with FP64 tensor-core instructions (DMMA).  Matrix tiles of 16 × 16
    (one warp) and 32 × 32 (four); larger tiles spill a little
    (bench/results/triton-build-2026-12-07.md)."""
    evidence = SMALL.build_evidence(*shape, capability)
    assert evidence["architecture"] == f"sm_{capability}"
    assert evidence["stack_bytes"] == 0 and evidence["local_loads"] == evidence["local_stores"] == 0, evidence
    assert evidence["registers"] <= 255 and evidence["dmma"] > 0, evidence


@compiled
@with_nvidia_tools
@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("shape", [(5, 5, 5), (20, 20, 6), (3, 3, 200)], ids=lambda s: "x".join(map(str, s)))
def test_fused_kernels_builds(shape, capability):
    """Build evidence without a GPU for the fused passes and the fused backward: the
    launches their host wrappers make on a batch of this shape (recorded, not run),
    compiled for sm_80 and sm_90, all five kernels with no local-memory stack."""
    launches = BUILD.fused_pass_launches(shape)
    names = [kernel.__name__ for kernel, *_ in launches]
    assert names == [
        "_pair_softmax_kernel",
        "_weighted_marginals_kernel",
        "_newton_blocks_kernel",
        "_certificate_kernel",
        "_envelope_gradient_kernel",
    ]
    for kernel, signature, constexprs, options in launches:
        evidence = BUILD.evidence(BUILD.compile_kernel(kernel, signature, constexprs, options, capability))
        assert evidence["architecture"] == f"sm_{capability}"
        assert evidence["stack_bytes"] == 0 and evidence["local_loads"] == evidence["local_stores"] == 0, (
            kernel.__name__,
            evidence,
        )


def test_auto_never_picks_triton_on_cpu():
    """ "triton" is named explicitly, never "auto"'s choice; on the CPU only under the interpreter."""
    cpu = torch.device("cpu")
    assert "triton" in backends.names() and backends.get("triton").missing is None
    assert "triton" not in backends.available("cpu")
    assert backends.resolve("auto", cpu) != "triton"
    if INTERPRET:
        assert backends.resolve("triton", cpu) == "triton"
    else:
        with pytest.raises(ValueError, match="backend 'triton' cannot solve joints on cpu"):
            backends.resolve("triton", cpu)


def pid_joints():
    rng = np.random.default_rng(11)
    joints = [(name, CANONICAL[name]) for name in ("XOR", "AND", "RDNXOR", "SUM")]
    # The last: the fallbacks follow the Triton iteration too.
    return joints + [
        ("dirichlet_3x4x5", dirichlet_joint(rng, (3, 4, 5), 0.5)),
        ("sparse_2x3x4", sparse_joint(rng, (2, 3, 4), 0.5)),
        ("plugin_needs_fallback_2x2x2", PLUGIN_NEEDS_FALLBACK),
    ]


@in_process
@pytest.mark.parametrize("name,P", pid_joints(), ids=[name for name, _ in pid_joints()])
def test_pid_backend_triton(name, P):
    """``fastpid.pid(backend="triton")`` equals ``backend="torch"``: atoms within 1e-9
    bits, the same iteration count, a certified gap."""
    P = torch.tensor(P, device=DEVICE)
    ours, ref = fastpid.pid(P, backend="triton"), fastpid.pid(P, backend="torch")
    for field in ("redundancy", "unique1", "unique2", "synergy", "mi"):
        assert abs(float(getattr(ours, field)) - float(getattr(ref, field))) <= 1e-9, field
    assert int(ours.iterations) == int(ref.iterations)
    assert bool(ours.converged) and float(ours.gap) <= 1e-8


@in_process
@pytest.mark.parametrize(
    "shape,batch", [((2, 2, 2), 1), ((3, 4, 5), 3), ((3, 9, 300), 1)], ids=["2x2x2", "3x4x5", "3x9x300-tiles"]
)
def test_envelope_gradient(shape, batch):
    """The fused backward against ``fastpid.decomposition.envelope_gradient``, on joints of
    scale 3 with zero cells, an empty x1 row and an empty target value."""
    gen = torch.Generator().manual_seed(13)
    p = torch.rand(batch, *shape, generator=gen, dtype=torch.float64)
    p = 3 * p * (torch.rand(batch, *shape, generator=gen, dtype=torch.float64) > 0.3)
    p[:, -1] = 0
    p[:, :, :, -1] = 0
    p[:, 0, 0, 0] += 0.05
    lam1 = torch.randn(batch, shape[0], shape[2], generator=gen, dtype=torch.float64)
    lam2 = torch.randn(batch, shape[1], shape[2], generator=gen, dtype=torch.float64)
    upstream = torch.randn(batch, 5, generator=gen, dtype=torch.float64)
    args = [t.to(DEVICE) for t in (p, lam1, lam2, upstream)]
    reference = fastpid.decomposition.envelope_gradient(*args)
    close(K.envelope_gradient(*args), reference, torch.float64)


@in_process
@pytest.mark.parametrize("name,P", pid_joints()[:3], ids=[name for name, _ in pid_joints()[:3]])
def test_pid_gradient_backend_triton(name, P):
    """The gradient of every atom through ``fastpid.pid(backend="triton")`` equals
    the "torch" backend's, up to the two solves' rounding differences in λ
    (the fused kernel itself: test_envelope_gradient)."""
    grads = []
    for backend in ("triton", "torch"):
        leaf = torch.tensor(P, device=DEVICE, requires_grad=True)
        result = fastpid.pid(leaf, backend=backend, tol=1e-12)
        (result.redundancy + 2 * result.unique1 - result.unique2 + 3 * result.synergy + result.mi).backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-8)
