"""The Triton kernels built ahead of time for NVIDIA GPUs, with no GPU: the build
evidence (registers, local memory, FP64 tensor-core instructions) that
tests/test_triton.py checks and bench/triton_build.py tabulates.

``compile_kernel`` compiles a kernel for a compute capability from its signature;
``recorded_launches`` gets the signatures of the launches a host wrapper makes
(the launches are recorded, not run), ``fused_pass_launches`` those of the fused
passes and backward; ``evidence`` reads a compiled kernel's cubin with the
cuobjdump that ships with Triton.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from fastpid import solver

from . import broja_triton

POINTER_TYPES = {
    torch.float64: "*fp64",
    torch.float32: "*fp32",
    torch.int64: "*i64",
    torch.int32: "*i32",
    torch.int8: "*i8",
    torch.uint8: "*u8",
    torch.bool: "*i1",
}


def nvidia_tool(name: str) -> str | None:
    """The NVIDIA tool ``name`` (ptxas, cuobjdump) that ships with Triton, or None
    where this installation lacks it."""
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.access(path, os.X_OK) else None


def compile_kernel(kernel: JITFunction, signature: dict, constexprs: dict, options: dict, capability: int):
    """``kernel`` compiled for compute capability ``capability`` (80, 90, ...):
    ``signature`` maps every argument to its Triton type ("*fp64", "i32", …,
    "constexpr"), ``constexprs`` gives the constexpr values, ``options`` the
    launch options (num_warps, num_stages)."""
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def launch_signature(kernel: JITFunction, args: tuple, kwargs: dict) -> tuple[dict, dict, dict]:
    """The signature, constexprs and options of a launch ``kernel[grid](*args, **kwargs)``,
    its Python scalars typed as Triton's launcher passes them (int: i32 or i64, float: fp32)."""
    values = dict(zip(kernel.arg_names, args)) | {k: v for k, v in kwargs.items() if k in kernel.arg_names}
    signature, constexprs = {}, {}
    for param in kernel.params:
        value = values[param.name]
        if param.is_constexpr:
            signature[param.name], constexprs[param.name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = POINTER_TYPES[value.dtype]
        elif isinstance(value, bool):
            signature[param.name] = "i1"
        elif isinstance(value, int):
            signature[param.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        elif isinstance(value, float):
            signature[param.name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: argument {param.name} of type {type(value).__name__}")
    options = {name: kwargs[name] for name in ("num_warps", "num_stages") if name in kwargs}
    return signature, constexprs, options


@contextlib.contextmanager
def recorded_launches():
    """Within the block, Triton launches are recorded instead of run: yields a list
    that fills with (kernel, signature, constexprs, options) per launch (the
    outputs of the host wrappers are then left unwritten)."""
    launches = []
    run = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        launches.append((self, *launch_signature(self, args, kwargs)))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = run


def fused_pass_launches(shape) -> list:
    """``recorded_launches`` of the fused passes and backward (``broja_triton``) on a
    batch of two joints of ``shape`` (n1, n2, ny): their five kernels."""
    n1, n2, ny = shape
    p = torch.rand(2, *shape, dtype=torch.float64)
    support = solver.Support.of(p / p.sum((1, 2, 3), keepdim=True))
    lam1, lam2 = torch.zeros(2, n1, ny, dtype=torch.float64), torch.zeros(2, n2, ny, dtype=torch.float64)
    w = torch.ones(2, n1, n2, dtype=torch.float64)
    with recorded_launches() as launches:
        broja_triton.pair_softmax(lam1, lam2, support)
        broja_triton.weighted_marginals(w, p)
        broja_triton.newton_blocks(w, w, p, support)
        broja_triton.certificate(lam1, lam2, w, support)
        broja_triton.envelope_gradient(p, lam1, lam2, torch.ones(2, 5, dtype=torch.float64))
    return launches


def evidence(compiled) -> dict:
    """A compiled kernel's cubin read with cuobjdump: its architecture, registers and
    stack bytes per thread, and the count of DMMA (FP64 tensor-core), local-memory
    load (LDL) and store (STL) instructions in its SASS."""
    tool = nvidia_tool("cuobjdump")
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, "kernel.cubin")
        with open(cubin, "wb") as file:
            file.write(compiled.asm["cubin"])
        usage, sass = (
            subprocess.run([tool, option, cubin], capture_output=True, text=True, check=True).stdout
            for option in ("-res-usage", "-sass")
        )
    registers, stack = re.search(r"REG:(\d+) STACK:(\d+)", usage).groups()
    return {
        "architecture": re.search(r"code for (sm_\d+)", sass).group(1),
        "registers": int(registers),
        "stack_bytes": int(stack),
        "dmma": len(re.findall(r"\bDMMA\b", sass)),
        "local_loads": len(re.findall(r"\bLDL\b", sass)),
        "local_stores": len(re.findall(r"\bSTL\b", sass)),
    }
