r"""CPU benchmarks of fastpid against the reference solvers (pytest-benchmark).

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench --benchmark-json=bench/results/cpu.json
    .venv/bin/python bench/report.py bench/results/cpu.json

Everything runs on one thread (bench/conftest.py), in one process, so the
ratios that bench/report.py prints are measured in the same run.  Cases:

1. One 20×20×6 Dirichlet(1) joint: ``fastpid.pid`` ("cpu", "torch") against
   ``cvxpy_pid`` (Clarabel at ``references.CLARABEL_TIGHT``).
2. 10,000 Dirichlet(1) 5×5×5 joints in one ``fastpid.pid`` call ("cpu",
   "torch") against ``dit_pid`` (cone method) run joint by joint on a sample of
   ``DIT_SAMPLE`` of the same joints: throughputs in joints per second.
3. The paper's solver (bench/paper_solver.py) on the 20×20×6 joint and on one
   5×5×5 joint of case 2, beside fastpid on the same joint.
4. A sparse plug-in joint, 20×20×10 from 1,280 samples as the controller's probes
   make (``plugin_joint``): ``fastpid.pid`` ("cpu") against ``cvxpy_pid``.
5. Many classes and large alphabets: one joint of 20×20×101, 20×20×1000 and
   32×32×32 (Dirichlet 0.7) and the plug-in construction of case 4 with 100
   classes, through ``fastpid.pid`` ("cpu"), timed against case 1 in the same
   run; with the side elimination forced too where it takes under a second.

Accuracy.  Every benchmark stores ``error_bits``: the largest deviation of any
atom (R, U1, U2, S) from the more accurate answer for the same joint.  That is
fastpid at ``TIGHT_TOL`` when its certified gap is at most ``CVXPY_ACCURACY``
(the accuracy references.py documents for cvxpy_pid), and cvxpy_pid otherwise;
the certificate is computed in Python from the returned dual variables
(``solver.certificate``), so it holds whichever backend produced them.  fastpid
benchmarks also store ``gap_bits``, their own certified bound on every atom.

The "lanes" group times the C++ backend alone on batches of small joints with
lanes (four joints per AVX2 vector, csrc/cpu/lanes.h) and without
(``FASTPID_CPU_LANES=0``): the measurement behind ``kLaneMaxDuals``.

The "roofline" groups feed bench/roofline.py's model: the machine's ceilings
(single-thread DGEMM, vectorised exp, DRAM copy bandwidth), and the C++ backend
alone (``fastpid.backends.get("cpu").solve``, without fastpid.pid's Python side)
to convergence and with ``max_iter=0`` (set-up and one certificate), so that
the time per iteration and the fixed costs are measured apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastpid
from bench.paper_solver import paper_pid
from fastpid import backends, solver
from fastpid.examples import dirichlet_joint
from fastpid.information import LN2
from fastpid.references import ATOMS, CLARABEL_TIGHT, cvxpy_pid, dit_pid

SEED = 20250923
LARGE = (20, 20, 6)
SMALL = (5, 5, 5)
BATCH = 10_000
PLUGIN = (20, 20, 10)
PLUGIN_SAMPLES = 1280
DIT_SAMPLE = 30
TOL = 1e-8  # bits: fastpid.pid's default target gap
TIGHT_TOL = 1e-12  # bits: fastpid for the reference answers
TIGHT_MAX_ITER = 200
CVXPY_ACCURACY = 5e-9  # bits: references.cvxpy_pid's documented accuracy

pytestmark = pytest.mark.filterwarnings("ignore")


# ---------------------------------------------------------------- joints and reference answers


def atoms_of(result) -> np.ndarray:
    """(B, 4) float64 array of R, U1, U2, S from a PIDResult (tensor or numpy fields)."""
    return np.stack([np.asarray(torch.as_tensor(getattr(result, a)).reshape(-1), dtype=np.float64) for a in ATOMS], 1)


def dict_atoms(answer: dict) -> np.ndarray:
    return np.array([answer[a] for a in ATOMS], dtype=np.float64)


def certified_reference(joints: torch.Tensor, backend: str) -> dict:
    """The more accurate answer for each joint of ``joints`` (B, n1, n2, ny).

    fastpid at TIGHT_TOL where its certified gap is ≤ CVXPY_ACCURACY, else cvxpy_pid."""
    result = fastpid.pid(joints, backend=backend, tol=TIGHT_TOL, max_iter=TIGHT_MAX_ITER)
    atoms = atoms_of(result)
    gap = result.gap.numpy().astype(np.float64)
    bound = gap.copy()
    fallback = np.flatnonzero(gap > CVXPY_ACCURACY)
    for i in fallback:
        atoms[i] = dict_atoms(cvxpy_pid(joints[i].numpy()))
        bound[i] = CVXPY_ACCURACY
    source = f"fastpid {backend} tol={TIGHT_TOL:g} (certified)"
    if len(fallback):
        source += f"; cvxpy_pid for {len(fallback)} joint(s) with gap > {CVXPY_ACCURACY:g}"
    return {"atoms": atoms, "bound": bound, "source": source, "fallbacks": len(fallback)}


@pytest.fixture(scope="session")
def large_joint() -> torch.Tensor:
    return torch.tensor(dirichlet_joint(np.random.default_rng(SEED), LARGE))


@pytest.fixture(scope="session")
def plugin_joint() -> torch.Tensor:
    """The plug-in joint of PLUGIN_SAMPLES samples: y uniform; given y, x1 uniform on 3 and
    x2 on 6 of 20 symbols (consecutive from 2y, mod 20), so most cells are off the domain."""
    generator = torch.Generator().manual_seed(SEED + 3)
    y = torch.randint(PLUGIN[2], (PLUGIN_SAMPLES,), generator=generator)
    x1 = (2 * y + torch.randint(3, (PLUGIN_SAMPLES,), generator=generator)) % PLUGIN[0]
    x2 = (2 * y + torch.randint(6, (PLUGIN_SAMPLES,), generator=generator)) % PLUGIN[1]
    return fastpid.joint_from_samples(x1, x2, y, *PLUGIN).double()


@pytest.fixture(scope="session")
def small_batch() -> torch.Tensor:
    rng = np.random.default_rng(SEED + 1)
    return torch.tensor(np.stack([dirichlet_joint(rng, SMALL) for _ in range(BATCH)]))


@pytest.fixture(scope="session")
def dit_indices() -> np.ndarray:
    return np.sort(np.random.default_rng(SEED + 2).choice(BATCH, DIT_SAMPLE, replace=False))


@pytest.fixture(scope="session")
def large_reference(large_joint) -> dict:
    return certified_reference(large_joint[None], "torch")


@pytest.fixture(scope="session")
def plugin_reference(plugin_joint) -> dict:
    return certified_reference(plugin_joint[None], "torch")


@pytest.fixture(scope="session")
def small_reference(small_batch) -> dict:
    return certified_reference(small_batch, "cpu")


def record(benchmark, case: str, method: str, joints: int, shape, error: float, reference: dict, **more):
    """extra_info that bench/report.py reads."""
    benchmark.extra_info.update(
        {
            "key": f"{case}/{method}",
            "case": case,
            "method": method,
            "joints": joints,
            "shape": list(shape),
            "error_bits": float(error),
            "reference": reference["source"],
            "reference_bound_bits": float(np.max(reference["bound"])),
            **more,
        }
    )


def record_fastpid(benchmark, case, method, result, reference_atoms, reference, shape):
    atoms = atoms_of(result)
    iterations = result.iterations.numpy()
    record(
        benchmark,
        case,
        method,
        len(atoms),
        shape,
        np.abs(atoms - reference_atoms).max(),
        reference,
        gap_bits=float(result.gap.max()),
        converged_fraction=float(result.converged.double().mean()),
        iterations_mean=float(iterations.mean()),
        iterations_max=int(iterations.max()),
    )


# ---------------------------------------------------------------- case 1: one 20×20×6 joint


@pytest.mark.benchmark(group="1: 20x20x6")
@pytest.mark.parametrize("backend, tol, rounds", [("cpu", 1e-8, 50), ("cpu", 1e-10, 50), ("torch", 1e-8, 10)])
def test_large_fastpid(benchmark, large_joint, large_reference, backend, tol, rounds):
    result = benchmark.pedantic(
        fastpid.pid,
        args=(large_joint,),
        kwargs={"backend": backend, "tol": tol},
        rounds=rounds,
        iterations=1,
        warmup_rounds=2,
    )
    record_fastpid(
        benchmark, "large", f"{backend}/tol={tol:g}", result, large_reference["atoms"], large_reference, LARGE
    )


@pytest.mark.benchmark(group="1: 20x20x6")
def test_large_cvxpy(benchmark, large_joint, large_reference):
    P = large_joint.numpy()
    answer = benchmark.pedantic(cvxpy_pid, args=(P,), rounds=3, iterations=1, warmup_rounds=1)
    record(
        benchmark,
        "large",
        "cvxpy",
        1,
        LARGE,
        np.abs(dict_atoms(answer) - large_reference["atoms"][0]).max(),
        large_reference,
        solver="CLARABEL",
        solver_options=CLARABEL_TIGHT,
    )


@pytest.mark.benchmark(group="3: paper solver")
def test_large_paper(benchmark, large_joint, large_reference):
    P = large_joint.numpy()
    answer = benchmark.pedantic(paper_pid, args=(P,), rounds=3, iterations=1, warmup_rounds=1)
    record(
        benchmark,
        "large",
        "paper",
        1,
        LARGE,
        np.abs(dict_atoms(answer) - large_reference["atoms"][0]).max(),
        large_reference,
        steps=answer["steps"],
    )


# ---------------------------------------------------------------- case 2: 10,000 joints of 5×5×5


@pytest.mark.benchmark(group="2: 10000 x 5x5x5")
@pytest.mark.parametrize("backend, rounds", [("cpu", 5), ("torch", 1)])
def test_batch_fastpid(benchmark, small_batch, small_reference, backend, rounds):
    result = benchmark.pedantic(
        fastpid.pid,
        args=(small_batch,),
        kwargs={"backend": backend, "tol": TOL},
        rounds=rounds,
        iterations=1,
        warmup_rounds=1 if backend == "cpu" else 0,
    )
    record_fastpid(benchmark, "batch", backend, result, small_reference["atoms"], small_reference, SMALL)


@pytest.mark.benchmark(group="2: 10000 x 5x5x5")
def test_batch_dit(benchmark, small_batch, small_reference, dit_indices):
    sample = [small_batch[i].numpy() for i in dit_indices]
    dit_pid(sample[0])  # imports and first-call set-up, outside the timing

    def solve_one_by_one():
        return [dit_pid(P) for P in sample]

    answers = benchmark.pedantic(solve_one_by_one, rounds=3, iterations=1)
    errors = np.abs(np.stack([dict_atoms(a) for a in answers]) - small_reference["atoms"][dit_indices])
    record(
        benchmark,
        "batch",
        "dit",
        DIT_SAMPLE,
        SMALL,
        errors.max(),
        small_reference,
        sample_indices=dit_indices.tolist(),
        median_error_bits=float(np.median(errors.max(1))),
    )


# ---------------------------------------------------------------- case 3: the paper's solver on 5×5×5


@pytest.fixture(scope="session")
def small_index(dit_indices) -> int:
    return int(dit_indices[0])


@pytest.mark.benchmark(group="3: paper solver")
def test_small_paper(benchmark, small_batch, small_reference, small_index):
    P = small_batch[small_index].numpy()
    answer = benchmark.pedantic(paper_pid, args=(P,), rounds=3, iterations=1, warmup_rounds=1)
    record(
        benchmark,
        "small",
        "paper",
        1,
        SMALL,
        np.abs(dict_atoms(answer) - small_reference["atoms"][small_index]).max(),
        small_reference,
        steps=answer["steps"],
        joint_index=small_index,
    )


@pytest.mark.benchmark(group="3: paper solver")
def test_small_fastpid(benchmark, small_batch, small_reference, small_index):
    P = small_batch[small_index]
    result = benchmark.pedantic(
        fastpid.pid, args=(P,), kwargs={"backend": "cpu", "tol": TOL}, rounds=200, iterations=1, warmup_rounds=5
    )
    record_fastpid(benchmark, "small", "cpu", result, small_reference["atoms"][small_index], small_reference, SMALL)


# ---------------------------------------------------------------- case 4: a sparse plug-in joint


@pytest.mark.benchmark(group="4: plug-in 20x20x10")
def test_plugin_fastpid(benchmark, plugin_joint, plugin_reference):
    result = benchmark.pedantic(
        fastpid.pid,
        args=(plugin_joint,),
        kwargs={"backend": "cpu", "tol": TOL},
        rounds=50,
        iterations=1,
        warmup_rounds=2,
    )
    record_fastpid(benchmark, "plugin", "cpu", result, plugin_reference["atoms"], plugin_reference, PLUGIN)


@pytest.mark.benchmark(group="4: plug-in 20x20x10")
def test_plugin_cvxpy(benchmark, plugin_joint, plugin_reference):
    answer = benchmark.pedantic(cvxpy_pid, args=(plugin_joint.numpy(),), rounds=3, iterations=1, warmup_rounds=1)
    record(
        benchmark,
        "plugin",
        "cvxpy",
        1,
        PLUGIN,
        np.abs(dict_atoms(answer) - plugin_reference["atoms"][0]).max(),
        plugin_reference,
        solver="CLARABEL",
        solver_options=CLARABEL_TIGHT,
    )


# ---------------------------------------------------------------- case 5: many classes and large alphabets

MANY = {  # name: (shape, Dirichlet concentration, or None for the plug-in joint of PLUGIN_SAMPLES samples)
    "20x20x101": ((20, 20, 101), 0.7),
    "20x20x1000": ((20, 20, 1000), 0.7),
    "plugin20x20x100": ((20, 20, 100), None),
    "32x32x32": ((32, 32, 32), 0.7),
}


def sampled_plugin_joint(shape) -> torch.Tensor:
    """``plugin_joint``'s construction for any number of classes: y uniform; given y,
    x1 uniform on 3 and x2 on 6 of the symbols, consecutive from 2y."""
    generator = torch.Generator().manual_seed(SEED + 3)
    y = torch.randint(shape[2], (PLUGIN_SAMPLES,), generator=generator)
    x1 = (2 * y + torch.randint(3, (PLUGIN_SAMPLES,), generator=generator)) % shape[0]
    x2 = (2 * y + torch.randint(6, (PLUGIN_SAMPLES,), generator=generator)) % shape[1]
    return fastpid.joint_from_samples(x1, x2, y, *shape).double()


@pytest.fixture(scope="session", params=sorted(MANY))
def many_case(request):
    shape, concentration = MANY[request.param]
    joint = (
        sampled_plugin_joint(shape)
        if concentration is None
        else torch.tensor(dirichlet_joint(np.random.default_rng(SEED + 5), shape, concentration))
    )
    return request.param, joint, certified_reference(joint[None], "cpu")


@pytest.mark.benchmark(group="5: many classes")
@pytest.mark.parametrize("elimination", ["auto", "side"])
def test_many_classes(benchmark, monkeypatch, many_case, elimination):
    """One joint with many classes or a large alphabet through ``fastpid.pid`` ("cpu"),
    with the elimination the rule picks and, where it is affordable, with the side
    elimination forced (the solver before the pair elimination existed)."""
    name, joint, reference = many_case
    if elimination == "side":
        if solver.side_flops(*joint.shape) > 2e9:
            pytest.skip("the side elimination takes seconds to minutes here (bench/results/eliminations-*.md)")
        monkeypatch.setenv("FASTPID_ELIMINATION", "side")
    rounds = 3 if solver.pairs_flops(*joint.shape) > 1e8 else 10
    result = benchmark.pedantic(
        fastpid.pid, args=(joint,), kwargs={"backend": "cpu"}, rounds=rounds, iterations=1, warmup_rounds=1
    )
    record_fastpid(benchmark, f"many/{name}", f"cpu/{elimination}", result, reference["atoms"], reference, joint.shape)
    benchmark.extra_info["key"] = f"many/{name}/cpu/{elimination}"
    benchmark.extra_info["elimination"] = (
        solver.choose_elimination(*joint.shape) if elimination == "auto" else elimination
    )


# ---------------------------------------------------------------- lanes

LANE_SHAPES = [(2, 2, 2), (5, 5, 5), (8, 8, 4), (10, 10, 6), (4, 4, 16)]  # up to kLaneMaxDuals = 128


@pytest.mark.benchmark(group="lanes: C++ backend alone")
@pytest.mark.parametrize("lanes", ["on", "off"])
@pytest.mark.parametrize("shape", LANE_SHAPES, ids=["x".join(map(str, s)) for s in LANE_SHAPES])
def test_lanes(benchmark, monkeypatch, shape, lanes):
    """Dirichlet(1) joints of a small shape, ~16,000 cells per call, four at a time in
    vector lanes and (FASTPID_CPU_LANES=0) one at a time."""
    if lanes == "off":
        monkeypatch.setenv("FASTPID_CPU_LANES", "0")
    rng = np.random.default_rng(SEED)
    count = max(32, 16384 // int(np.prod(shape)))
    joints = torch.tensor(np.stack([dirichlet_joint(rng, shape) for _ in range(count)]))
    solution = benchmark.pedantic(
        backends.get("cpu").solve,
        args=(joints, TOL * LN2, 100, solver.PATIENCE),
        rounds=5,
        iterations=1,
        warmup_rounds=1,
    )
    benchmark.extra_info.update(
        {
            "key": f"lanes/{'x'.join(map(str, shape))}/{lanes}",
            "joints": count,
            "shape": list(shape),
            "converged_fraction": float(solution.converged.double().mean()),
        }
    )


# ---------------------------------------------------------------- fixed cost and machine ceilings


@pytest.mark.benchmark(group="roofline: C++ backend alone")
@pytest.mark.parametrize("case, max_iter", [("large", 100), ("large", 0), ("batch", 100), ("batch", 0)])
def test_backend_alone(benchmark, case, max_iter, large_joint, small_batch):
    """The compiled solve without fastpid.pid's Python side (support, certificate, atoms):
    to convergence, and with ``max_iter=0`` (set-up and one certificate: the fixed cost)."""
    joints = (large_joint[None] if case == "large" else small_batch).contiguous()
    solve = backends.get("cpu").solve
    solution = benchmark.pedantic(
        solve,
        args=(joints, TOL * LN2, max_iter, solver.PATIENCE),
        rounds=20 if case == "large" else 5,
        iterations=1,
        warmup_rounds=1,
    )
    iterations = solution.iterations.double()
    # Steps run: the returned (best) iterate's index, plus up to PATIENCE more for a joint that stalled.
    steps = torch.where(solution.converged, iterations, iterations + solver.PATIENCE)
    benchmark.extra_info.update(
        {
            "key": f"{case}/cpu/backend" + ("" if max_iter else "/setup"),
            "case": case,
            "method": f"cpu backend, max_iter={max_iter}",
            "joints": len(joints),
            "shape": list(joints.shape[-3:]),
            "steps_mean": float(steps.mean()),
            "converged_fraction": float(solution.converged.double().mean()),
        }
    )


@pytest.mark.benchmark(group="roofline: machine")
def test_machine_dgemm(benchmark):
    n = 256
    a, b = torch.rand(n, n, dtype=torch.float64), torch.rand(n, n, dtype=torch.float64)
    out = torch.empty(n, n, dtype=torch.float64)
    benchmark.pedantic(torch.mm, args=(a, b), kwargs={"out": out}, rounds=50, iterations=5, warmup_rounds=5)
    benchmark.extra_info.update(
        {"key": "machine/dgemm", "flops": 2 * n**3, "what": f"torch.mm {n}x{n} float64, one thread (MKL)"}
    )


@pytest.mark.benchmark(group="roofline: machine")
def test_machine_exp(benchmark):
    n = 1 << 16  # 512 KiB in, 512 KiB out: in cache
    x, out = torch.rand(n, dtype=torch.float64) * -20, torch.empty(n, dtype=torch.float64)
    benchmark.pedantic(torch.exp, args=(x,), kwargs={"out": out}, rounds=50, iterations=5, warmup_rounds=5)
    benchmark.extra_info.update(
        {"key": "machine/exp", "count": n, "what": f"torch.exp of {n} float64 (vectorised), one thread"}
    )


@pytest.mark.benchmark(group="roofline: machine")
def test_machine_copy(benchmark):
    n = 1 << 23  # 64 MiB per array: twice the L3
    x, out = torch.rand(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    benchmark.pedantic(out.copy_, args=(x,), rounds=20, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(
        {
            "key": "machine/copy",
            "bytes": 2 * 8 * n,
            "what": f"copy of {8 * n >> 20} MiB float64 (read + write), one thread",
        }
    )
