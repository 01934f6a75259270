"""pytest-benchmark configuration for the CPU benchmark suite (bench/bench_*.py).

Single-threaded by construction: the thread variables are set here, before any
benchmark module imports torch (pytest loads this conftest first when it is
given ``bench`` on the command line), and torch is then told the same.

The benchmark modules are named ``bench_*.py``, which pytest's default
``python_files`` (``test_*.py``) does not match, so a plain ``pytest`` or
``pytest tests`` never collects them.  ``pytest_collect_file`` below collects
them only when the command line names ``bench/`` or a path inside it (their
functions are named ``test_*`` so that pytest collects them there).

``pytest_benchmark_update_machine_info`` adds what bench/report.py prints in
its header: the CPU model from /proc/cpuinfo, thread settings, torch version
and the git commit of the run.
"""

from __future__ import annotations

import os
import platform
import subprocess

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"  # before torch / numpy's BLAS start their pools

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # intra-op threads: torch ops and the C++ backend's at::parallel_for

BENCH_DIR = Path(__file__).resolve().parent


def _bench_selected(config) -> bool:
    """True when a command-line path is bench/ or lies inside it."""
    for arg in config.args:
        path = Path(str(arg).split("::")[0])
        if not path.is_absolute():
            path = Path(config.invocation_params.dir) / path
        path = path.resolve()
        if path == BENCH_DIR or BENCH_DIR in path.parents:
            return True
    return False


def pytest_collect_file(file_path, parent):
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)  # named explicitly: pytest collects it itself
        and _bench_selected(parent.config)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    return (
        f"fastpid bench: torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo, with family, model and the widest vector ISA."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or "unknown"
    flags = fields.get("flags", "").split()
    isa = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "")
    details = ", ".join(
        x
        for x in (
            f"family {fields['cpu family']} model {fields['model']}"
            if "cpu family" in fields and "model" in fields
            else "",
            isa,
        )
        if x
    )
    name = fields.get("model name", platform.processor() or "unknown")
    return f"{name} ({details})" if details else name


def git_commit() -> str:
    """``git rev-parse --short HEAD``, with "+modified" when the working tree differs from it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+modified" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastpid"] = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
    }
