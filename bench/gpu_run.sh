#!/usr/bin/env bash
# The one prepared GPU run (docs/gpu.md): build for the device, run the tests that
# need a GPU and the GPU benchmarks; everything it measures goes under $OUT.
#
#   run(command="bash bench/gpu_run.sh", timeout_s=560)      # the device tool
#
# The device image has torch, Triton, pytest, pytest-benchmark, scikit-learn and
# matplotlib; it lacks the references dit, ecos and cvxpy, so the tests and
# benchmarks that call them are left out here (they run in CI on the CPU).
# Budget: at most 9 minutes on an H100 (build ≤ 180 s, tests ≤ 170 s, benchmarks ≤ 210 s); the CUDA
# solvers' part (≤ 60 s) comes last, in what a faster build and test run leave.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FASTPID_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} MAX_JOBS=${MAX_JOBS:-16}
{ nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
  git log -1 --format='commit %H %cd'; } > "$OUT/device.txt" 2>&1
if ! timeout 180 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
CUOBJDUMP=$(command -v cuobjdump || python3 -c \
  "from fastpid.kernels.build import nvidia_tool; print(nvidia_tool('cuobjdump'))")
"$CUOBJDUMP" --list-elf fastpid/_C*.so > "$OUT/cubins.txt" 2>&1
# Left to CI (no GPU needed): the sm_80 + sm_90 cubin check (built here for sm_90 only) and the
# ahead-of-time build evidence of the Triton kernels.
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_build.py tests/test_forward.py \
  tests/test_backward.py tests/test_triton.py tests/test_layout.py tests/test_eliminations.py \
  tests/test_discretize.py::test_runs_on_the_features_device tests/test_discretize.py::test_fits_on_the_features_device \
  tests/test_controller.py::test_probes_on_the_features_device \
  tests/test_bootstrap.py::test_plugin_noise_on_an_executor_follows_the_callers_cuda_stream \
  -k "not cvxpy and not sm80_and_sm90 and not builds" > "$OUT/tests.log" 2>&1
echo "tests: $(tail -1 "$OUT/tests.log")"
# The benchmarks in three parts, most wanted first, each with its own JSON: a part
# cut off by its timeout loses only itself.
bench() {  # name, timeout (s), pytest -k expression
  timeout "$2" python3 -m pytest -q -p no:cacheprovider bench/bench_gpu.py -k "$3" \
    --benchmark-json="$OUT/gpu-$1.json" > "$OUT/bench-$1.log" 2>&1
  echo "benchmarks $1: $(tail -1 "$OUT/bench-$1.log")"
}
bench solvers 60 "test_triton_solvers or test_paper_gpu"
bench forward 90 "test_forward"
bench backward 60 "test_backward"
bench cuda_solvers 60 "test_cuda_solvers"  # last: the mid regime's kernels, if time is left
