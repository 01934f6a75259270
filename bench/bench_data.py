r"""CPU benchmarks of the data-to-PID layer and of the controller's probe (pytest-benchmark).

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/bench_data.py --benchmark-json=bench/results/data.json

One thread (bench/conftest.py).  Cases, all on the shapes of the main job
(``fastpid demo``): 2,000 samples, two views discretised to 20 symbols, 10 labels.

1. ``fastpid.bootstrap`` with 1,000 resamples (all joints in batched calls)
   against the same resamples solved one ``fastpid.pid`` call each (a sample of
   ``LOOP_SAMPLE`` of them): time per resample, ratio in ``extra_info``.
2. One controller probe (``TwoStageController.measure``: two discretiser fits on
   1,280 × 32 features and one 20 × 20 × 10 solve; with ``rule="noise"`` also
   ``fastpid.plugin_noise``, its bias resamples within the probe or, as the
   controller runs them by default, on a background thread) and its parts, the
   numbers behind the monitoring share the demo prints.
"""

from __future__ import annotations

import pytest
import torch

import fastpid
from fastpid.controller import TwoStageController

SAMPLES, SYMBOLS, LABELS = 2000, 20, 10
RESAMPLES, LOOP_SAMPLE = 1000, 50
PROBE, WIDTH = 1280, 32

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def samples():
    """Two views' symbols that depend on the label, and the label."""
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, LABELS, (SAMPLES,), generator=generator)
    noise = [torch.randint(0, SYMBOLS, (SAMPLES,), generator=generator) for _ in range(2)]
    keep = [torch.rand(SAMPLES, generator=generator) < share for share in (0.7, 0.4)]
    return [torch.where(k, (2 * y + v % 2) % SYMBOLS, v) for k, v in zip(keep, noise)] + [y]


@pytest.fixture(scope="module")
def features():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, LABELS, (PROBE,), generator=generator)
    centers = torch.randn(LABELS, WIDTH, generator=generator)
    views = [(centers[labels] * scale + torch.randn(PROBE, WIDTH, generator=generator)).relu() for scale in (2.0, 0.5)]
    return views, labels


@pytest.mark.benchmark(group="bootstrap")
def test_bootstrap_batched(benchmark, samples):
    result = benchmark(
        fastpid.bootstrap, *samples, SYMBOLS, SYMBOLS, LABELS, n_resamples=RESAMPLES, seed=0, progress=False
    )
    benchmark.extra_info.update(
        per_resample_s=benchmark.stats.stats.median / RESAMPLES, max_gap_bits=float(result.max_gap)
    )


@pytest.mark.benchmark(group="bootstrap")
def test_bootstrap_one_call_per_resample(benchmark, samples):
    x1, x2, y = samples
    index = torch.randint(0, SAMPLES, (LOOP_SAMPLE, SAMPLES), generator=torch.Generator().manual_seed(0))

    def loop():
        for rows in index:
            fastpid.pid(fastpid.joint_from_samples(x1[rows], x2[rows], y[rows], SYMBOLS, SYMBOLS, LABELS))

    benchmark(loop)
    benchmark.extra_info.update(per_resample_s=benchmark.stats.stats.median / LOOP_SAMPLE)


def _alternating_probes(controller, features):
    """Probes on the features and on a slightly moved copy in turn, as a training run's
    probes drift: the warm-started discretisers refit every time (a probe on the same
    features as the last would keep the last fit)."""
    views, labels = features
    generator = torch.Generator().manual_seed(2)
    moved = [view + 0.05 * torch.randn(view.shape, generator=generator) for view in views]
    probes = [views, moved]
    turn = iter(range(10**9))
    return lambda: controller.measure(probes[next(turn) % 2], labels)


@pytest.mark.benchmark(group="probe")
@pytest.mark.parametrize("rule", ["paper", "noise"])
def test_probe(benchmark, features, rule):
    """The noise-aware rule with its bias resamples solved within the probe: the whole cost."""
    controller = TwoStageController(2, rule=rule, bias_in_background=False)
    values = benchmark(_alternating_probes(controller, features))
    benchmark.extra_info.update(gap_bits=values[(0, 1)]["gap"])


@pytest.mark.benchmark(group="probe")
def test_probe_noise_bias_in_background(benchmark, features):
    """What the training thread waits for under the noise-aware rule (the default): the bias
    resamples of each probe are solved, untimed, before the next probe starts."""
    controller = TwoStageController(2, rule="noise")
    probe = _alternating_probes(controller, features)
    benchmark.pedantic(probe, setup=lambda: controller.history, rounds=100, warmup_rounds=2)
    benchmark.extra_info.update(bias_ms=1e3 * controller.bias_seconds / len(benchmark.stats.stats.data))


@pytest.mark.benchmark(group="probe")
@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_probe_discretizer_fit(benchmark, features, backend):
    """A cold fit (k-means++ seeding), in torch and fastpid's ops or in scikit-learn."""
    benchmark(lambda: fastpid.Discretizer(5, SYMBOLS, backend=backend).fit_transform(features[0][0]))


@pytest.mark.benchmark(group="probe")
@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_probe_discretizer_refit(benchmark, features, backend):
    """A probe's warm-started refit (the controller's): on the view and a slightly moved copy in turn."""
    view = features[0][0]
    moved = view + 0.05 * torch.randn(view.shape, generator=torch.Generator().manual_seed(2))
    discretizer = fastpid.Discretizer(5, SYMBOLS, warm_start=True, backend=backend).fit(view)
    turn = iter(range(10**9))
    benchmark(lambda: discretizer.fit_transform((view, moved)[next(turn) % 2]))


@pytest.mark.benchmark(group="probe")
def test_probe_solve(benchmark, features):
    views, labels = features
    symbols = [fastpid.Discretizer(5, SYMBOLS).fit_transform(view) for view in views]
    joint = fastpid.joint_from_samples(*symbols, labels, SYMBOLS, SYMBOLS, LABELS)
    result = benchmark(fastpid.pid, joint, tol=1e-6)
    benchmark.extra_info.update(iterations=int(result.iterations), gap_bits=float(result.gap))
