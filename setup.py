"""Build FastPID: the Python package and the ``fastpid._C`` extension.

    pip install --no-build-isolation -e .          # editable, against the installed torch

The extension registers ``torch.ops.fastpid.broja_solve`` (csrc/fastpid.cpp),
with its CPU implementation from csrc/cpu/.  A CUDA implementation (csrc/cuda/*.cu)
is built when FASTPID_CUDA=1, or by default when nvcc, a CUDA build of torch and
the CUDA runtime (libcudart under CUDA_HOME or on LIBRARY_PATH) are found and
CUDA sources exist; FASTPID_CUDA=0 turns it off (CPU-only build).

    FASTPID_CUDA=1 pip install --no-build-isolation -e .   # needs nvcc (CUDA_HOME) and torch with CUDA

The CUDA code is compiled for TORCH_CUDA_ARCH_LIST, by default "8.0;9.0"
(sm_80: A100, sm_90: H100/H200), which needs no GPU on the build machine.
"""

import os
import sys
from glob import glob

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # an isolated build environment has no torch
    sys.exit(
        "fastpid builds its C++ extension against the installed torch: install torch first, "
        "then run `pip install --no-build-isolation -e .`"
    )

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def sources(pattern):
    return sorted(os.path.relpath(path, HERE) for path in glob(os.path.join(HERE, pattern)))


def has_cudart(path):
    return bool(glob(os.path.join(path, "libcudart.so*")) or glob(os.path.join(path, "cudart.lib")))


def cuda_library_dirs():
    """CUDA_HOME's library folders that hold the CUDA runtime: lib64, or lib (and
    targets/*/lib) where a toolkit has no lib64.  torch adds CUDA_HOME/lib64 itself."""
    dirs = []
    for path in [
        os.path.join(CUDA_HOME, "lib64"),
        os.path.join(CUDA_HOME, "lib"),
        *sorted(glob(os.path.join(CUDA_HOME, "targets", "*", "lib"))),
    ]:
        if has_cudart(path) and os.path.realpath(path) not in map(os.path.realpath, dirs):
            dirs.append(path)
    return dirs


def cudart_found():
    """Whether the linker will find libcudart: under CUDA_HOME or on LIBRARY_PATH."""
    search = os.environ.get("LIBRARY_PATH", "").split(os.pathsep)
    return bool(cuda_library_dirs()) or any(path and has_cudart(path) for path in search)


def torch_exports_sleef():
    """Whether libtorch_cpu exports SLEEF's AVX2 exp and log (x86-64 builds of torch do:
    ATen's vectorised kernels call them), which the AVX2 copy of the CPU solver uses."""
    import ctypes

    libraries = glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.*"))
    try:
        library = ctypes.CDLL(libraries[0]) if libraries else None
    except OSError:
        return False
    return library is not None and all(hasattr(library, name) for name in ("Sleef_expd4_u10", "Sleef_logd4_u10"))


def extension():
    cpp = sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp")
    cuda = sources("csrc/cuda/*.cu")
    flag = os.environ.get("FASTPID_CUDA")
    if flag is not None:
        with_cuda = flag == "1"
    else:  # automatic: nvcc, a CUDA build of torch, the CUDA runtime to link, and CUDA sources to build
        with_cuda = bool(cuda) and CUDA_HOME is not None and torch.version.cuda is not None
        if with_cuda and not cudart_found():
            print(
                f"fastpid: nvcc found but no libcudart under CUDA_HOME={CUDA_HOME} or on LIBRARY_PATH; "
                "building for the CPU only (set CUDA_HOME or LIBRARY_PATH, and FASTPID_CUDA=1)",
                file=sys.stderr,
            )
            with_cuda = False
    if with_cuda and not cuda:
        sys.exit("FASTPID_CUDA=1 but there are no CUDA sources in csrc/cuda/")
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]  # at::parallel_for is OpenMP in torch's builds
    cxx = ["-O3", *openmp]
    macros = [("FASTPID_SLEEF", None)] if torch_exports_sleef() else []
    if with_cuda:
        if CUDA_HOME is None or torch.version.cuda is None:
            sys.exit("FASTPID_CUDA=1 needs nvcc (set CUDA_HOME) and a CUDA build of torch")
        if not cudart_found():
            print(
                f"fastpid: no libcudart under CUDA_HOME={CUDA_HOME} or on LIBRARY_PATH; linking may fail "
                "(set CUDA_HOME to the toolkit, e.g. /usr/local/cuda, or LIBRARY_PATH to its library folder)",
                file=sys.stderr,
            )
        # torch reads the architectures from TORCH_CUDA_ARCH_LIST; without it, it
        # would ask the build machine's GPUs (or use every architecture torch has).
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        return CUDAExtension(
            "fastpid._C",
            cpp + cuda,
            define_macros=[("WITH_CUDA", None), *macros],
            library_dirs=cuda_library_dirs(),
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=openmp,
        )
    return CppExtension(
        "fastpid._C", cpp, define_macros=macros, extra_compile_args={"cxx": cxx}, extra_link_args=openmp
    )


def requirements():
    """The run-time requirements; torch pinned to the version the extension is built against
    (its ABI: a wheel built against one torch does not load under another)."""
    return [f"torch=={torch.__version__.split('+')[0]}", "numpy", "scikit-learn", "tqdm"]


# Metadata, extras, scripts and entry points: pyproject.toml.
setup(
    packages=["fastpid", "fastpid.kernels", "fastpid.controller"],
    package_dir={"fastpid": "fastpid", "fastpid.kernels": "kernels", "fastpid.controller": "controller"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    install_requires=requirements(),
)
