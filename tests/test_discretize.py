"""fastpid.Discretizer: L2-normalise → PCA → k-means symbols, fitted once and reused."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import DEVICES
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

import fastpid
from fastpid import discretize

CENTERS = np.random.default_rng(0).normal(scale=5.0, size=(4, 8))


def blobs(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated Gaussian blobs in 8 dimensions and their true labels."""
    return make_blobs(samples, centers=CENTERS, cluster_std=0.5, random_state=seed)


@pytest.fixture(scope="module")
def fitted() -> fastpid.Discretizer:
    features, _ = blobs(400, seed=1)
    return fastpid.Discretizer(n_components=3, n_clusters=4, normalize=False, random_state=0).fit(features)


def test_defaults_follow_the_paper():
    discretizer = fastpid.Discretizer()
    assert (discretizer.n_components, discretizer.n_clusters, discretizer.n_symbols) == (5, 20, 20)
    assert discretizer.normalize and not discretizer.is_fitted


def test_blobs_are_recovered_and_the_fit_is_reused_on_new_data(fitted):
    features, labels = blobs(400, seed=1)
    new_features, new_labels = blobs(300, seed=2)
    before = fitted.transform(features)
    assert adjusted_rand_score(labels, before.numpy()) == 1.0
    new_symbols = fitted.transform(torch.tensor(new_features))
    assert adjusted_rand_score(new_labels, new_symbols.numpy()) == 1.0
    assert torch.equal(fitted.transform(features), before)  # transforming new data did not refit


def test_symbols_are_those_of_sklearn_pca_then_kmeans():
    """backend="sklearn": the torch projection and nearest-centroid rule reproduce scikit-learn's labels."""
    features = np.random.default_rng(3).normal(size=(500, 12))
    rows = features / np.linalg.norm(features, axis=1, keepdims=True)
    projected = PCA(5, random_state=7).fit_transform(rows)
    expected = KMeans(20, n_init=3, random_state=7).fit(projected).labels_
    discretizer = fastpid.Discretizer(5, 20, random_state=7, n_init=3, backend="sklearn")
    symbols = discretizer.fit_transform(torch.tensor(features))
    assert symbols.dtype == torch.long and symbols.shape == (500,)
    np.testing.assert_array_equal(symbols.numpy(), expected)


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians) between the row spaces of a and b (orthonormal rows)."""
    return np.arccos(np.clip(np.linalg.svd(a @ b.T, compute_uv=False), -1.0, 1.0))


def inertia(discretizer: fastpid.Discretizer, features: np.ndarray) -> float:
    state = discretizer.state_dict()
    rows = (
        torch.nn.functional.normalize(torch.tensor(features), dim=1)
        if discretizer.normalize
        else torch.tensor(features)
    )
    projected = (rows - state["mean"]) @ state["components"].T
    return float((projected[:, None] - state["centroids"]).pow(2).sum(-1).min(-1).values.sum())


def probe_features() -> list[np.ndarray]:
    """Features like the demo's probes: blobs, anisotropic clouds, and a trained-encoder-like mixture."""
    rng = np.random.default_rng(8)
    blobs_, _ = make_blobs(1280, n_features=16, centers=12, cluster_std=1.5, random_state=3)
    anisotropic = rng.normal(size=(1280, 32)) @ rng.normal(size=(32, 32)) * np.linspace(0.1, 3, 32)
    relu = np.maximum(rng.normal(size=(1280, 8)) @ rng.normal(size=(8, 64)), 0)
    return [blobs_, anisotropic, relu]


@pytest.mark.parametrize("n_init", [4, 10])
def test_the_torch_fit_matches_sklearn(n_init):
    """The torch fit (the default) against scikit-learn's: the same PCA subspace (principal
    angles < 1e-6), k-means inertia within 1 % of scikit-learn's best of as many restarts."""
    for features in probe_features():
        ours = fastpid.Discretizer(5, 20, n_init=n_init, random_state=0).fit(features)
        theirs = fastpid.Discretizer(5, 20, n_init=n_init, random_state=0, backend="sklearn").fit(features)
        angles = principal_angles(ours.state_dict()["components"].numpy(), theirs.state_dict()["components"].numpy())
        assert angles.max() < 1e-6
        assert inertia(ours, features) <= 1.01 * inertia(theirs, features)


def test_one_restart_is_as_good_as_sklearns_on_average():
    """With one restart (the default) each fit is a draw: over ten seeds, the mean inertia
    is within 1 % of scikit-learn's."""
    for features in probe_features():
        ours, theirs = (
            np.mean(
                [
                    inertia(fastpid.Discretizer(5, 20, random_state=seed, backend=b).fit(features), features)
                    for seed in range(10)
                ]
            )
            for b in ("torch", "sklearn")
        )
        assert ours <= 1.01 * theirs


def test_the_torch_fit_gives_the_pid_of_the_sklearn_fit():
    """Two views discretised by either backend give the same PID of the labels within noise."""
    rng = np.random.default_rng(4)
    labels = rng.integers(10, size=2000)
    centres = rng.normal(scale=2.0, size=(2, 10, 12))
    views = [centres[v][labels] + rng.normal(size=(2000, 12)) for v in range(2)]
    results = {}
    for backend in ("torch", "sklearn"):
        x1, x2 = (fastpid.Discretizer(5, 20, backend=backend).fit_transform(view) for view in views)
        results[backend] = fastpid.bootstrap(x1, x2, torch.tensor(labels), n_resamples=200, seed=0, progress=False)
    for k in range(4):
        torch_low, torch_high = (float(bound[k]) for bound in results["torch"].basic)
        sk_low, sk_high = (float(bound[k]) for bound in results["sklearn"].basic)
        assert (
            sk_low <= float(results["torch"].estimate[k]) <= sk_high
            or torch_low <= float(results["sklearn"].estimate[k]) <= torch_high
        )


def test_same_seed_same_symbols_and_inputs_of_any_kind_agree():
    features = np.random.default_rng(4).normal(size=(200, 6))
    first = fastpid.Discretizer(3, 6, random_state=11).fit(features)
    second = fastpid.Discretizer(3, 6, random_state=11).fit(torch.tensor(features, dtype=torch.float32))
    expected = first.transform(features)
    assert torch.equal(second.transform(features), expected)
    assert torch.equal(first.transform(torch.tensor(features, dtype=torch.float32)), expected)


def test_normalisation_makes_symbols_scale_free():
    features = torch.randn(300, 6, dtype=torch.float64)
    scales = torch.rand(300, 1, dtype=torch.float64) * 10 + 0.1
    normalised = fastpid.Discretizer(3, 8).fit(features)
    assert torch.equal(normalised.transform(features * scales), normalised.transform(features))
    raw = fastpid.Discretizer(3, 8, normalize=False).fit(features)
    assert not torch.equal(raw.transform(features * scales), raw.transform(features))


@pytest.mark.parametrize("temperature", [1e-3, 1.0, 1e3])
def test_soft_assign_is_a_distribution_whose_argmax_is_transform(fitted, temperature):
    features, _ = blobs(300, seed=5)
    noisy = torch.tensor(features) + torch.randn(300, 8, dtype=torch.float64) * 3  # rows between blobs
    soft = fitted.soft_assign(noisy, temperature)
    assert soft.shape == (300, fitted.n_symbols) and soft.dtype == torch.float64
    torch.testing.assert_close(soft.sum(-1), torch.ones(300, dtype=torch.float64))
    assert torch.equal(soft.argmax(-1), fitted.transform(noisy))


def test_soft_assign_sharpens_as_the_temperature_falls(fitted):
    features = torch.tensor(blobs(100, seed=6)[0])
    peaks = [fitted.soft_assign(features, t).max(-1).values.mean() for t in (1e4, 1e3, 1e2, 10.0)]
    assert 1 / fitted.n_symbols < peaks[0] < peaks[1] < peaks[2] < peaks[3] < 1


def test_soft_assign_gradient(fitted):
    features = torch.tensor(blobs(10, seed=7)[0], requires_grad=True)
    soft = fitted.soft_assign(features, 30.0)
    (grad,) = torch.autograd.grad(soft[:, 0].sum(), features)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    assert torch.autograd.gradcheck(lambda x: fitted.soft_assign(x, 30.0), (features[:4].detach().requires_grad_(),))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_features_device(fitted):
    features = torch.tensor(blobs(50, seed=8)[0])
    symbols = fitted.transform(features.cuda())
    assert symbols.device.type == "cuda" and fitted.soft_assign(features.cuda()).device.type == "cuda"
    assert torch.equal(symbols.cpu(), fitted.transform(features))


@pytest.mark.parametrize("device", DEVICES)
def test_fits_on_the_features_device(device):
    """The fit runs where the features are (off the CPU: the torch reference's PCA and
    k-means), with the symbols and centroids of the fit on a CPU copy (fastpid's ops)."""
    features = torch.tensor(blobs(600, seed=5)[0])
    here = fastpid.Discretizer(3, 4, normalize=False, n_init=2)
    there = fastpid.Discretizer(3, 4, normalize=False, n_init=2)
    symbols = there.fit_transform(features.to(device))
    assert symbols.device.type == device
    assert torch.equal(symbols.cpu(), here.fit_transform(features))
    for name, value in here.state_dict().items():
        torch.testing.assert_close(there.state_dict()[name], value, rtol=0, atol=1e-9)


def test_a_warm_refit_keeps_each_symbol_where_it_was():
    """Refitting on drifted features starts Lloyd from the last centroids: the
    first fit is k-means++'s, a refit on the same rows keeps the fit and every
    point's symbol, and after a drift (a small rotation and
    noise, which turn the PCA basis, and the rows shuffled) each symbol still names
    the same points, where a seeded refit numbers the clusters afresh."""
    features = torch.tensor(blobs(600, seed=5)[0])
    warm = fastpid.Discretizer(3, 4, normalize=False, warm_start=True)
    cold = fastpid.Discretizer(3, 4, normalize=False)
    first = warm.fit_transform(features)
    assert torch.equal(first, cold.fit_transform(features))
    centroids = warm.state_dict()["centroids"]
    assert torch.equal(warm.fit_transform(features.clone()), first)
    assert torch.equal(warm.state_dict()["centroids"], centroids)
    nudged = features.clone()
    nudged[0, 0] += 1e-9  # any change refits
    assert (warm.fit_transform(nudged) == first).double().mean() > 0.99
    generator = torch.Generator().manual_seed(0)
    turn = 0.1 * torch.randn(8, 8, dtype=torch.float64, generator=generator)
    order = torch.randperm(600, generator=generator)
    drifted = (
        features @ torch.linalg.matrix_exp(turn - turn.T)
        + 0.3 * torch.randn(600, 8, dtype=torch.float64, generator=generator)
    )[order]
    assert torch.equal(warm.fit_transform(drifted), first[order])
    reseeded = cold.fit_transform(drifted)
    assert adjusted_rand_score(first[order].numpy(), reseeded.numpy()) == 1.0  # the same partition ...
    assert not torch.equal(reseeded, first[order])  # ... under other names
    assert warm.fit(features[:, :5]).is_fitted  # another width: seeded afresh


def test_state_dict_restores_the_fit(fitted):
    features, _ = blobs(100, seed=3)
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    restored = fastpid.Discretizer(n_components=3, n_clusters=4, normalize=False)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.transform(features), fitted.transform(features))
    restored.load_state_dict(fastpid.Discretizer().state_dict())
    assert not restored.is_fitted
    with pytest.raises(ValueError, match=r"centroids have shape \(4, 3\), this Discretizer expects \(20, 5\)"):
        fastpid.Discretizer().load_state_dict(fitted.state_dict())
    with pytest.raises(ValueError, match="holds mean, components and centroids"):
        fastpid.Discretizer().load_state_dict({"mean": torch.zeros(3)})


def test_warm_state_dict_keeps_the_last_fit():
    """A warm-started Discretizer restored from its state treats the last fit's
    features as the uninterrupted one does: they are not refitted."""
    features, _ = blobs(200, seed=4)
    warm = fastpid.Discretizer(3, 4, normalize=False, warm_start=True)
    symbols = warm.fit_transform(features)
    buffer = io.BytesIO()
    torch.save(warm.state_dict(), buffer)
    buffer.seek(0)
    restored = fastpid.Discretizer(3, 4, normalize=False, warm_start=True)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert set(restored.state_dict()) == {"mean", "components", "centroids", "rows", "labels"}
    assert torch.equal(restored.fit_transform(features), symbols)
    assert torch.equal(restored.state_dict()["centroids"], warm.state_dict()["centroids"])


FEATURES = torch.randn(30, 6, dtype=torch.float64)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: fastpid.Discretizer(n_clusters=0), ValueError, "n_clusters must be a positive int"),
        (lambda: fastpid.Discretizer(n_components=2.5), ValueError, "n_components must be a positive int"),
        (lambda: fastpid.Discretizer(n_init=0), ValueError, "n_init must be a positive int"),
        (lambda: fastpid.Discretizer(2, 3).transform(FEATURES), ValueError, "not fitted"),
        (lambda: fastpid.Discretizer(2, 3).soft_assign(FEATURES), ValueError, "not fitted"),
        (lambda: fastpid.Discretizer(2, 3).fit(FEATURES[:, 0]), ValueError, r"shape \(N, d\)"),
        (lambda: fastpid.Discretizer(2, 3).fit(FEATURES[None]), ValueError, r"shape \(N, d\)"),
        (lambda: fastpid.Discretizer(2, 3).fit(FEATURES[:0]), ValueError, r"shape \(N, d\)"),
        (
            lambda: fastpid.Discretizer(2, 3).fit(FEATURES).transform(FEATURES[:, :5]),
            ValueError,
            r"5 columns but the Discretizer was fitted on 6",
        ),
        (lambda: fastpid.Discretizer(2, 40).fit(FEATURES), ValueError, "fewer than n_clusters=40"),
        (lambda: fastpid.Discretizer(7, 3).fit(FEATURES), ValueError, r"n_components=7 exceeds min\(N, d\)"),
        (lambda: fastpid.Discretizer(5, 4).fit(FEATURES[:4]), ValueError, r"n_components=5 exceeds min\(N, d\)"),
        (
            lambda: fastpid.Discretizer(2, 3).fit(FEATURES.clone().index_fill_(0, torch.tensor([3]), float("nan"))),
            ValueError,
            "NaN or infinite",
        ),
        (
            lambda: fastpid.Discretizer(2, 3).fit(FEATURES).transform(FEATURES * float("inf")),
            ValueError,
            "NaN or infinite",
        ),
        (
            lambda: fastpid.Discretizer(2, 3).fit(torch.where(FEATURES == FEATURES[5, 2], -math.inf, FEATURES)),
            ValueError,
            "NaN or infinite",
        ),
        (lambda: fastpid.Discretizer(2, 3).fit(FEATURES.long()), TypeError, "floating point"),
        (lambda: fastpid.Discretizer(2, 3).fit(FEATURES.tolist()), TypeError, "torch.Tensor or numpy.ndarray"),
        (lambda: fastpid.Discretizer(2, 3).fit(FEATURES).soft_assign(FEATURES, 0.0), ValueError, "temperature"),
        (
            lambda: fastpid.Discretizer(2, 3).fit(FEATURES).soft_assign(FEATURES, float("inf")),
            ValueError,
            "temperature",
        ),
    ],
    ids=[
        "clusters",
        "components",
        "n_init",
        "transform_unfitted",
        "soft_unfitted",
        "rank1",
        "rank3",
        "empty",
        "width",
        "few_samples",
        "components_over_d",
        "components_over_n",
        "nan",
        "inf",
        "one_minus_inf",
        "integer",
        "list",
        "zero_temperature",
        "inf_temperature",
    ],
)
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # scikit-learn sees the collapse too
def test_one_column_features_warn_under_normalisation():
    scalar = torch.randn(200, 1)
    with pytest.warns(UserWarning, match=r"one-column features to ±1.*normalize=False"):
        fastpid.Discretizer(n_components=1, n_clusters=4).fit(scalar)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        symbols = fastpid.Discretizer(n_components=1, n_clusters=4, normalize=False).fit_transform(scalar)
    assert len(torch.unique(symbols)) == 4


# The compiled k-means (fastpid::kmeans_seed, fastpid::kmeans_lloyd) against the torch reference.
needs_extension = pytest.mark.skipif(fastpid.backends.compiled_ops() is None, reason="needs fastpid's C++ extension")


def kmeans_point_sets() -> list[torch.Tensor]:
    """Blobs, anisotropic Gaussians, then duplicated points and a point set with fewer distinct
    points than clusters (exact ties and empty clusters), float64 (N, k)."""
    rng = np.random.default_rng(7)
    blobs_, _ = make_blobs(700, n_features=5, centers=9, cluster_std=1.0, random_state=2)
    anisotropic = rng.normal(size=(500, 3)) * np.array([5.0, 1.0, 0.1])
    duplicated = np.repeat(rng.normal(size=(60, 2)), 5, axis=0)
    few_distinct = np.repeat(rng.normal(size=(6, 4)), 20, axis=0)
    return [torch.tensor(points) for points in (blobs_, anisotropic, duplicated, few_distinct)]


@needs_extension
@pytest.mark.parametrize("restarts, clusters", [(1, 1), (1, 12), (3, 20)])
def test_compiled_kmeans_is_the_torch_reference(restarts, clusters):
    """Same seeds exactly; Lloyd from them: same centroids and inertia to rounding, at every
    iteration cap, and the same labels where no two centroids tie (the two compute distances in
    different orders, so at a tie each may pick either nearest centroid)."""
    ops = fastpid.backends.compiled_ops()
    for k, points in enumerate(kmeans_point_sets()):
        uniforms = discretize._seeding_uniforms(restarts, clusters, torch.Generator().manual_seed(k))
        seeds = discretize._kmeans_plus_plus(points, uniforms)
        assert torch.equal(ops.kmeans_seed(points, uniforms), seeds)
        tolerance = 1e-4 * float(points.var(0).mean())
        for max_iter in (1, 3, 300):
            reference = discretize._lloyd(points, seeds, tolerance, max_iter)
            compiled = ops.kmeans_lloyd(points, seeds, tolerance, max_iter)
            distances = torch.cdist(points[None], compiled[0]).pow(2)
            nearest = distances.gather(2, compiled[1][..., None])[..., 0]
            torch.testing.assert_close(nearest, distances.min(2).values, rtol=0, atol=1e-12)
            if k < 2:
                assert torch.equal(compiled[1], reference[1])
            torch.testing.assert_close(compiled[0], reference[0], rtol=0, atol=1e-12)
            torch.testing.assert_close(compiled[2], reference[2], rtol=1e-12, atol=1e-12)


@needs_extension
def test_compiled_kmeans_restarts_do_not_wait_for_each_other():
    """A restart's result does not depend on the other restarts of the call."""
    ops = fastpid.backends.compiled_ops()
    points = kmeans_point_sets()[0]
    seeds = discretize._kmeans_plus_plus(points, discretize._seeding_uniforms(4, 9, torch.Generator().manual_seed(1)))
    together = ops.kmeans_lloyd(points, seeds, 0.0, 300)
    for r in range(4):
        alone = ops.kmeans_lloyd(points, seeds[r : r + 1], 0.0, 300)
        assert torch.equal(alone[1][0], together[1][r]) and torch.equal(alone[0][0], together[0][r])


@needs_extension
def test_the_fit_is_the_same_through_the_compiled_ops_or_torch(monkeypatch):
    """A Discretizer on CPU features (compiled k-means) gives the symbols and centroids of the
    torch reference (what other devices run), cold and warm-started."""
    features = [torch.tensor(f) for f in probe_features()]
    fits = {}
    for path in ("compiled", "torch"):
        if path == "torch":
            monkeypatch.setattr(discretize, "compiled_ops", lambda: None)
        warm = fastpid.Discretizer(5, 20, n_init=3, warm_start=True)
        fits[path] = [(warm.fit_transform(f), warm.fit_transform(f * 1.01 + 0.01), warm.state_dict()) for f in features]
    for (symbols, refit, state), (ref_symbols, ref_refit, ref_state) in zip(fits["compiled"], fits["torch"]):
        assert torch.equal(symbols, ref_symbols) and torch.equal(refit, ref_refit)
        torch.testing.assert_close(state["centroids"], ref_state["centroids"], rtol=0, atol=1e-12)


@needs_extension
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda ops: ops.kmeans_seed(torch.zeros(5, 2), torch.zeros(1, 2, 2, dtype=torch.float64)), "float64"),
        (lambda ops: ops.kmeans_seed(torch.zeros(5, 2, dtype=torch.float64), torch.zeros(2, 2)), r"\(R, K, T\)"),
        (
            lambda ops: ops.kmeans_lloyd(torch.zeros(5, 2, dtype=torch.float64), torch.zeros(1, 3, 4).double(), 0.0, 9),
            r"\(R, K, 2\)",
        ),
    ],
    ids=["points_dtype", "uniforms_rank", "centroids_width"],
)
def test_compiled_kmeans_rejects_bad_arguments(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(fastpid.backends.compiled_ops())
