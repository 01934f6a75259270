"""The CUDA build of the extension (FASTPID_CUDA=1) and the "cuda" backend.

Build checks (need no GPU, skipped unless the built extension has CUDA): the op
has a CUDA kernel and the library carries sm_90 code.  Solver checks (skipped
without a GPU): backend "cuda" (csrc/cuda, one thread per joint running
csrc/broja.h with csrc/broja_interleaved.h's layout) against the reference "torch"
on the same CUDA joints, with the tolerances of tests/test_cpu_backend.py, against
the CPU op and against the same code on the host (tests/test_interleaved.py); the backward
op (csrc/cuda/broja_backward_cuda.cu) against the reference formula and the CPU op.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import SOLVE_TOL, SOLVE_VALUE_ATOL, assert_same_solution, joint_batch

import fastpid
from fastpid import backends, solver
from fastpid.examples import CANONICAL, degenerate_joints, dirichlet_joint, sparse_joint

HAS_CUDA_KERNEL = backends.has_cuda_kernel()
needs_cuda_build = pytest.mark.skipif(not HAS_CUDA_KERNEL, reason="extension built without CUDA (FASTPID_CUDA=0)")
needs_gpu = pytest.mark.skipif(
    not (HAS_CUDA_KERNEL and torch.cuda.is_available()), reason="needs the CUDA build and a CUDA device"
)


def cuobjdump() -> str | None:
    """cuobjdump from CUDA_HOME, PATH or triton's bundled copy, or None."""
    candidates = []
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "bin", "cuobjdump"))
    candidates.append(shutil.which("cuobjdump"))
    try:
        import triton

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


# ---------------------------------------------------------------- build (no GPU needed)


@needs_cuda_build
def test_op_has_cuda_kernel():
    for op in (
        "fastpid::broja_solve",
        "fastpid::broja_backward",
        "fastpid::broja_certificate",
        "fastpid::broja_forward",
    ):
        for key in ("CPU", "CUDA", "Meta"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), (op, key)


@needs_cuda_build
def test_library_has_sm90_code():
    tool = cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found")
    import fastpid._C as ext

    listing = subprocess.run([tool, "--list-elf", ext.__file__], capture_output=True, text=True, check=True).stdout
    assert ".sm_90." in listing, listing


KERNELS = ("broja_solve_kernel", "broja_certificate_kernel", "broja_backward_kernel", "broja_solve_block_kernel")


def resource_usage() -> dict[str, dict[str, dict[str, int]]]:
    """``cuobjdump -res-usage`` of the extension: {arch: {kernel: {"REG": …, "STACK": …, "LOCAL": …}}}."""
    tool = cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found")
    import fastpid._C as ext

    usage = subprocess.run([tool, "-res-usage", ext.__file__], capture_output=True, text=True, check=True).stdout
    kernels: dict[str, dict[str, dict[str, int]]] = {}
    arch = kernel = None
    for line in usage.splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            arch = line.split("=")[1].strip()
        elif line.startswith("Function ") and arch is not None:
            kernel = next((name for name in KERNELS if name in line), None)
        elif line.startswith("REG:") and kernel is not None:
            fields = dict(field.split(":", 1) for field in line.split())
            kernels.setdefault(arch, {})[kernel] = {name: int(fields[name]) for name in ("REG", "STACK", "LOCAL")}
            kernel = None
    return kernels


@needs_cuda_build
def test_every_kernel_in_the_sm80_and_sm90_cubins():
    """``cuobjdump -res-usage`` lists each kernel once per architecture the build targets
    (setup.py: sm_80 and sm_90); their registers and stack: bench/results/cuda-build-*.md."""
    kernels = resource_usage()
    for arch in ("sm_80", "sm_90"):
        assert set(kernels.get(arch, {})) == set(KERNELS), (arch, kernels)


@needs_cuda_build
def test_no_kernel_has_a_stack_frame():
    """No per-thread stack in any kernel on either architecture: neither register spills
    nor a per-joint struct kept in local memory (the solve kernel's ``Joint`` once took
    912-1,040 bytes there, the block kernel's 944 with 64-bit array pointers)."""
    for arch, kernels in resource_usage().items():
        for kernel, usage in kernels.items():
            assert usage["STACK"] == 0 and usage["LOCAL"] == 0, (arch, kernel, usage)


def test_auto_on_cuda_joints_is_the_cpu_op_on_a_host_copy():
    """Safe default until a GPU kernel is measured: "auto" never picks the never-run
    "cuda" kernel (needs no device: only the rule); "cuda" runs when named."""
    cuda = torch.device("cuda")
    for shape in [(65536, 20, 20, 6), (1, 32, 32, 32), None]:
        assert backends.resolve("auto", cuda, shape) == "cpu"
    assert backends.resolve("auto", torch.device("cpu"), (1, 32, 32, 32)) == "cpu"
    if HAS_CUDA_KERNEL:
        assert backends.resolve("cuda", cuda) == "cuda"


def test_backend_listing():
    """ "cuda" is never an "auto" candidate until measured; named, it needs a CUDA build."""
    assert "cuda" not in backends.available("cpu")
    assert backends.available("cuda") == ["cpu", "torch"]
    if not HAS_CUDA_KERNEL:
        with pytest.raises(ValueError, match="backend 'cuda' needs fastpid's C\\+\\+ extension built with CUDA"):
            backends.resolve("cuda", torch.device("cuda"))
    with pytest.raises(ValueError, match="cannot solve" if HAS_CUDA_KERNEL else "built with CUDA"):
        backends.resolve("cuda", torch.device("cpu"))


# ---------------------------------------------------------------- solver (GPU)


def batch(joints) -> torch.Tensor:
    return joint_batch(joints, device="cuda")


def assert_cuda_matches_torch(p: torch.Tensor, tol: float = SOLVE_TOL) -> None:
    ours = backends.get("cuda").solve(p, tol, 100, solver.PATIENCE)
    ref = backends.get("torch").solve(p, tol, 100, solver.PATIENCE)
    for tensor in (ours.lam1, ours.lam2, ours.w, ours.iterations, ours.converged):
        assert tensor.device == p.device
    value = assert_same_solution(ours, ref, p, tol)
    # The same code as the CPU op, and the very code and layout of the host's
    # broja_solve_interleaved: the same iterate, up to rounding (FMA contraction on the GPU).
    for op in (torch.ops.fastpid.broja_solve, torch.ops.fastpid.broja_solve_interleaved):
        host = solver.Solution(*op(p.cpu(), tol, 100, solver.PATIENCE))
        assert (ours.iterations.cpu() - host.iterations).abs().max() <= 1
        _, host_value, _ = solver.certificate(host.lam1, host.lam2, host.w, solver.Support.of(p.cpu()))
        assert (value.cpu() - host_value).abs().max() <= SOLVE_VALUE_ATOL


@needs_gpu
@pytest.mark.parametrize(
    "shape, count", [((2, 2, 2), 40), ((3, 4, 2), 40), ((4, 2, 3), 40), ((5, 5, 5), 24), ((10, 10, 6), 3)]
)
def test_dirichlet_joints(shape, count):
    rng = np.random.default_rng(sum(shape))
    assert_cuda_matches_torch(batch(dirichlet_joint(rng, shape, 1.0) for _ in range(count)))


@needs_gpu
@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 3, 5)])
def test_structural_zeros_and_sparse_joints(shape):
    rng = np.random.default_rng(3)
    assert_cuda_matches_torch(batch(degenerate_joints(shape).values()))
    assert_cuda_matches_torch(batch(sparse_joint(rng, shape, 0.6) for _ in range(16)))


@needs_gpu
def test_canonical_gates():
    for P in CANONICAL.values():
        assert_cuda_matches_torch(batch([P]))


@needs_gpu
@pytest.mark.parametrize("lanes", [32, 128, 256])
def test_block_kernel_matches_torch_and_its_host_emulation(lanes):
    """fastpid::broja_solve_block on the GPU (a thread block per joint) against the
    reference, and against the same code run by emulated teams on the host
    (tests/test_block.py): the same iterate, up to rounding."""
    rng = np.random.default_rng(lanes)
    for joints in (
        [dirichlet_joint(rng, (5, 5, 5), 1.0) for _ in range(12)],
        [dirichlet_joint(rng, (20, 20, 6), 1.0) for _ in range(3)],
        list(degenerate_joints((4, 3, 5)).values()) + [sparse_joint(rng, (4, 3, 5), 0.6) for _ in range(4)],
    ):
        p = batch(joints)
        ours = solver.Solution(*torch.ops.fastpid.broja_solve_block(p, SOLVE_TOL, 100, solver.PATIENCE, lanes))
        assert all(t.device == p.device for t in (ours.lam1, ours.lam2, ours.w, ours.iterations, ours.converged))
        value = assert_same_solution(ours, backends.get("torch").solve(p, SOLVE_TOL, 100, solver.PATIENCE), p)
        host = solver.Solution(*torch.ops.fastpid.broja_solve_block(p.cpu(), SOLVE_TOL, 100, solver.PATIENCE, lanes))
        assert (ours.iterations.cpu() - host.iterations).abs().max() <= 1
        _, host_value, _ = solver.certificate(host.lam1, host.lam2, host.w, solver.Support.of(p.cpu()))
        assert (value.cpu() - host_value).abs().max() <= SOLVE_VALUE_ATOL


@needs_gpu
def test_pid_auto_uses_cuda_and_agrees_with_torch():
    rng = np.random.default_rng(1)
    P = batch(dirichlet_joint(rng, (3, 4, 3), 1.0) for _ in range(8))
    ours, ref = fastpid.pid(P), fastpid.pid(P, backend="torch")
    assert backends.resolve("auto", P.device) == "cuda"
    assert ours.redundancy.device == P.device
    for name in ("redundancy", "unique1", "unique2", "synergy", "mi"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=0, atol=1e-7)
    assert (ours.gap <= 1e-7).all()


@needs_gpu
def test_certificate_matches_reference_and_cpu_op():
    """The CUDA certificate (csrc/broja.h's certify_joint, one thread per joint) against the
    reference and the CPU op, at the optimum and at an iterate part-way, with structural zeros."""
    rng = np.random.default_rng(5)
    joints = [dirichlet_joint(rng, (5, 5, 5), 0.5) for _ in range(6)] + [sparse_joint(rng, (5, 5, 5), 0.4)]
    p = batch(joints)
    for max_iter in (2, 100):
        solution = backends.get("torch").solve(p, SOLVE_TOL, max_iter, solver.PATIENCE)
        ours = torch.ops.fastpid.broja_certificate(p, solution.lam1, solution.lam2, solution.w)
        assert all(t.device == p.device for t in ours)
        host_args = (p.cpu(), solution.lam1.cpu(), solution.lam2.cpu(), solution.w.cpu())
        cpu = torch.ops.fastpid.broja_certificate(*host_args)
        host = torch.ops.fastpid.broja_certificate_interleaved(*host_args)  # the kernel's code on the host
        for got, ref, want, same_code in zip(ours, backends.torch_certificate(p, solution), cpu, host):
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-13)
            torch.testing.assert_close(got.cpu(), want, rtol=1e-11, atol=1e-13)  # FMA contraction on the GPU
            torch.testing.assert_close(got.cpu(), same_code, rtol=1e-11, atol=1e-13)


@needs_gpu
def test_forward_matches_the_cpu_op():
    """fastpid::broja_forward on the GPU (the same C++ function, the CUDA solve and
    certificate) against the CPU op, with a refused joint flagged alike."""
    rng = np.random.default_rng(8)
    p = torch.tensor(np.stack([dirichlet_joint(rng, (5, 4, 3), 0.5) for _ in range(6)])).reshape(2, 3, 5, 4, 3)
    args = (False, 1e-5, SOLVE_TOL, 100, solver.PATIENCE)
    *ours, fine = torch.ops.fastpid.broja_forward(p.cuda(), *args)
    *cpu, cpu_fine = torch.ops.fastpid.broja_forward(p, *args)
    assert fine.all() and torch.equal(fine.cpu(), cpu_fine)
    for got, want in zip(ours, cpu):
        assert got.device.type == "cuda" and got.shape == want.shape
        torch.testing.assert_close(got.cpu().double(), want.double(), rtol=1e-9, atol=1e-11)
    p[1, 2, 0, 0, 0] = -1.0
    *outputs, fine = torch.ops.fastpid.broja_forward(p.cuda(), *args)
    assert not fine[1, 2] and fine.sum() == 5 and all(out.numel() == 0 for out in outputs)


@needs_gpu
def test_empty_batch_and_input_checks():
    out = torch.ops.fastpid.broja_solve(torch.empty(0, 2, 3, 2, dtype=torch.float64, device="cuda"), 1e-8, 10, 5)
    assert [tuple(t.shape) for t in out] == [(0, 2, 2), (0, 3, 2), (0, 2, 3), (0,), (0,)]
    empty = (
        torch.empty(shape, dtype=torch.float64, device="cuda")
        for shape in ((0, 2, 3, 2), (0, 2, 2), (0, 3, 2), (0, 2, 3))
    )
    out = torch.ops.fastpid.broja_certificate(*empty)
    assert [tuple(t.shape) for t in out] == [(0, 2, 3, 2), (0,), (0,), (0, 4)]
    with pytest.raises(RuntimeError, match="float64"):
        torch.ops.fastpid.broja_solve(torch.ones(1, 2, 2, 2, device="cuda") / 8, 1e-8, 10, 5)
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.fastpid.broja_solve(
            torch.ones(1, 2, 2, 2, dtype=torch.float64, device="cuda").transpose(1, 3), 1e-8, 10, 5
        )


@needs_gpu
def test_backward_matches_reference_and_cpu_op():

    envelope_gradient = fastpid.decomposition.envelope_gradient
    rng = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(5)
    for joints in ([sparse_joint(rng, (4, 3, 5), 0.5) for _ in range(64)], list(degenerate_joints((2, 3, 2)).values())):
        p = 2.5 * torch.tensor(np.stack(joints))
        count, n1, n2, ny = p.shape
        args = [
            p,
            torch.randn(count, n1, ny, generator=gen, dtype=torch.float64),
            torch.randn(count, n2, ny, generator=gen, dtype=torch.float64),
            torch.randn(count, 5, generator=gen, dtype=torch.float64),
        ]
        on_gpu = torch.ops.fastpid.broja_backward(*(t.cuda() for t in args))
        torch.testing.assert_close(on_gpu.cpu(), torch.ops.fastpid.broja_backward(*args), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(on_gpu, envelope_gradient(*(t.cuda() for t in args)), rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="grad_atoms on cuda"):
        torch.ops.fastpid.broja_backward(*(t.cuda() for t in args[:3]), args[3])
    with pytest.raises(RuntimeError, match="lam1 on cuda"):
        torch.ops.fastpid.broja_backward(args[0].cuda(), args[1], *(t.cuda() for t in args[2:]))


def test_the_host_copy_returns_results_on_the_joints_device():
    """The "cpu" backend on joints of another device brings every output back there
    (checked with the meta device, which needs no GPU)."""
    joints = torch.empty(1, device="meta")
    solution = solver.Solution(*(torch.zeros(2) for _ in solver.SOLUTION_FIELDS))
    moved = backends._on_host(joints, solution)
    assert all(getattr(moved, name).device.type == "meta" for name in solver.SOLUTION_FIELDS)
    assert all(t.device.type == "meta" for t in backends._on_host(joints, (torch.zeros(1), torch.ones(2))))
    assert backends._on_host(joints, torch.zeros(3)).device.type == "meta"
