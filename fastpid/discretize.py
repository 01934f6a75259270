r"""Continuous features → symbols for plug-in joints, as in arXiv 2509.20840.

Each row x ∈ R^d is L2-normalised (optional), projected by PCA,

    z = (x̂ − μ) Wᵀ,   W ∈ R^{k×d} (k = ``n_components``),

and assigned to the nearest of ``n_clusters`` k-means centroids c_1 … c_K:

    symbol(x) = argmin_k ‖z − c_k‖²,
    soft_assign(x, T)_k = softmax_k(−‖z − c_k‖² / T).

The fit runs in torch on the features' device (``backend="torch"``, the
default: no copy to the host, no synchronisation beyond the fit's own) or in
scikit-learn on a CPU float64 copy (``backend="sklearn"``, the reference the
torch fit is tested against).  PCA: the eigenvectors of the covariance (or of
the Gram matrix when there are fewer rows than columns), signs fixed so that
each component's largest entry is positive, as scikit-learn fixes them.
k-means: k-means++ seeds, then Lloyd's iterations, the restart of least inertia
kept; on CPU tensors through fastpid's compiled ops (``fastpid::kmeans_seed``,
``fastpid::kmeans_lloyd``, csrc/cpu/kmeans_cpu.cpp), elsewhere through the torch
reference below (all restarts in one batched tensor op), which the ops are
tested against.  The projection and the
assignment run in torch on the features' device, so ``soft_assign`` is
differentiable with respect to them.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch

from .backends import compiled_ops


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _positive_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


KMEANS_MAX_ITER = 300  # Lloyd iterations at most (scikit-learn's default)
KMEANS_TOL = 1e-4  # stop once the centroids move by less than this × the mean variance of the columns


def _pca(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean (d,), the top ``k`` principal axes (k, d) of ``rows`` (N, d), signs fixed, and the
    rows projected on them (N, k)."""
    mean = rows.mean(0)
    centred = rows - mean
    if centred.shape[0] >= centred.shape[1]:
        _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        components = vectors[:, -k:].flip(1).T
    else:  # fewer rows than columns: through the Gram matrix
        values, vectors = torch.linalg.eigh(centred @ centred.T)
        values, vectors = values[-k:].flip(0), vectors[:, -k:].flip(1)
        components = (centred.T @ vectors / values.clamp_min(torch.finfo(rows.dtype).tiny).sqrt()).T
    largest = components.gather(1, components.abs().argmax(1, keepdim=True))
    components = components * torch.where(largest < 0, -1.0, 1.0).to(components.dtype)
    return mean, components, centred @ components.T


def _seeding_uniforms(restarts: int, clusters: int, generator: torch.Generator) -> torch.Tensor:
    """The uniform draws (restarts, clusters, trials) in [0, 1) that k-means++ seeding turns into
    seeds, trials = 2 + ⌊ln K⌋ candidates per seed (scikit-learn's rule), drawn on the CPU so that a
    seed gives the same draws on every device."""
    return torch.rand(restarts, clusters, 2 + int(math.log(clusters)), generator=generator, dtype=torch.float64)


def _kmeans_plus_plus(points: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Greedy k-means++ seeds (restarts, clusters, k) for ``points`` (N, k) from ``uniforms``
    (restarts, clusters, trials), all restarts at once: seed 0 is point ⌊u·N⌋; each next seed is,
    of ``trials`` candidates drawn with probability ∝ the squared distance to the nearest seed
    (inverse CDF), the one that leaves the smallest potential.  The torch reference of
    ``fastpid::kmeans_seed`` (csrc/cpu/kmeans_cpu.h)."""
    n = points.shape[0]
    restarts, clusters, trials = uniforms.shape
    uniforms = uniforms.to(points.device)
    rows = torch.arange(restarts, device=points.device)
    first = (uniforms[:, 0, 0] * n).long().clamp_max(n - 1)
    centroids = [points[first]]
    nearest = (points[None] - centroids[0][:, None]).pow(2).sum(-1)  # (restarts, N)
    for j in range(1, clusters):
        cumulative = nearest.cumsum(1)
        total = cumulative[:, -1:]
        uniform = ~(total > 0)  # every point on a seed: draw uniformly
        cumulative = torch.where(uniform, torch.arange(1, n + 1, device=points.device, dtype=points.dtype), cumulative)
        total = torch.where(uniform, float(n), total)
        candidates = torch.searchsorted(cumulative, uniforms[:, j] * total, right=True).clamp_max(n - 1)
        distances = (points[None, None] - points[candidates][:, :, None]).pow(2).sum(-1)  # (restarts, trials, N)
        potentials = torch.minimum(nearest[:, None], distances)
        best = potentials.sum(-1).argmin(1)
        centroids.append(points[candidates[rows, best]])
        nearest = potentials[rows, best]
    return torch.stack(centroids, 1)


def _lloyd(
    points: torch.Tensor, centroids: torch.Tensor, tolerance: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lloyd's iterations from ``centroids`` (R, K, k), every restart on its own; the final
    centroids, the labels (R, N) of the nearest final centroid and the inertia (R,).  A restart
    stops when its labels repeat or its centroids move by at most ``tolerance`` (scikit-learn's
    rules); an empty cluster keeps its centroid.  The torch reference of ``fastpid::kmeans_lloyd``."""
    restarts, clusters, dim = centroids.shape
    batch = points[None].expand(restarts, -1, -1)
    offsets = (torch.arange(restarts, device=points.device) * clusters)[:, None]
    flat_points = points.repeat(restarts, 1)

    def nearest(centroids):
        # argmin_k ‖x − c_k‖² = argmin_k (‖c_k‖² − 2 x·c_k): ‖x‖² does not change the order
        return torch.baddbmm(centroids.pow(2).sum(-1)[:, None], batch, centroids.mT, alpha=-2).min(-1)

    labels = torch.full((restarts, points.shape[0]), -1, device=points.device)
    running = torch.ones(restarts, dtype=torch.bool, device=points.device)
    for _ in range(max_iter):
        new_labels = nearest(centroids)[1]
        running &= (new_labels != labels).any(1)  # repeated labels: their centroids are the labels' means
        if not running.any():
            break
        labels = new_labels
        index = (labels + offsets).flatten()
        sums = points.new_zeros(restarts * clusters, dim).index_add_(0, index, flat_points)
        counts = torch.bincount(index, minlength=restarts * clusters)[:, None]
        moved = torch.where(counts > 0, sums / counts, centroids.reshape(-1, dim)).view_as(centroids)
        moved = torch.where(running[:, None, None], moved, centroids)
        running &= (moved - centroids).pow(2).sum((1, 2)) > tolerance
        centroids = moved
        if not running.any():
            break
    scores, labels = nearest(centroids)
    return centroids, labels, (scores + points.pow(2).sum(-1)).clamp_min(0).sum(-1)


def _kmeans(
    points: torch.Tensor, clusters: int, seeds: torch.Tensor | None, n_init: int, random_state
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of ``points`` (N, k), float64: Lloyd's iterations from ``seeds`` (K, k), or from
    k-means++ seeds of ``n_init`` restarts drawn under ``random_state`` when ``seeds`` is None;
    the centroids (K, k) and labels (N,) of the restart of least inertia.  CPU points go through
    the compiled ops where the extension is built (one call each instead of tens of small torch
    ops per iteration), other devices through the torch reference."""
    ops = compiled_ops() if points.device.type == "cpu" else None
    points = points.contiguous()
    if seeds is None:
        generator = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
        uniforms = _seeding_uniforms(n_init, clusters, generator)
        seeds = _kmeans_plus_plus(points, uniforms) if ops is None else ops.kmeans_seed(points, uniforms)
    else:
        seeds = seeds[None]
    # × the mean variance of the columns (from the centred squares: torch's var is ~3× slower here)
    tolerance = KMEANS_TOL * float((points - points.mean(0)).square().mean())
    lloyd = _lloyd if ops is None else ops.kmeans_lloyd
    centroids, labels, inertia = lloyd(points, seeds, tolerance, KMEANS_MAX_ITER)
    best = int(inertia.argmin())
    return centroids[best], labels[best]


class Discretizer:
    r"""L2-normalise → PCA to ``n_components`` → k-means with ``n_clusters`` symbols.

    ``fit`` once (in torch on the features' device, or with scikit-learn), then reuse: ``transform``
    gives each row the symbol of its nearest centroid and ``soft_assign`` the
    distribution softmax(−‖z − c_k‖² / T) over the symbols, both computed in
    torch on the features' device.  Since the softmax is monotone,
    ``transform(x) == soft_assign(x, T).argmax(-1)`` for every T > 0.

    Args:
        n_components: PCA dimension k (at most min(N, d) of the fitted features).
        n_clusters: number of symbols K (at most the number of fitted rows).
        normalize: divide each row by its L2 norm before the PCA (default True).
        random_state: seed of k-means (and of scikit-learn's randomised PCA solver).
        n_init: k-means restarts from k-means++ seeds; the one with the lowest
            inertia is kept (default 1, scikit-learn's own default for k-means++).
        backend: ``"torch"`` (default) fits on the features' device;
            ``"sklearn"`` fits scikit-learn's PCA and KMeans on a CPU float64 copy.
        warm_start: a refit starts Lloyd's iterations from the previous fit's
            centroids, carried into the new PCA basis (c ↦ (μ_old + c W_old − μ_new)
            W_newᵀ), instead of from k-means++ seeds; the first fit, and a refit on
            features of another width, seed as usual.  For features that drift
            slowly between fits, such as a training run's probes: the seeding
            (about half of a 1,280-row fit's time) is skipped, Lloyd needs fewer
            iterations, and symbols keep their meaning from one fit to the next.
            A refit on features equal to the last fit's keeps that fit and its
            symbols (a paused encoder's probes: nothing to refit).
    """

    def __init__(
        self,
        n_components: int = 5,
        n_clusters: int = 20,
        *,
        normalize: bool = True,
        random_state: int | None = 0,
        n_init: int = 1,
        warm_start: bool = False,
        backend: str = "torch",
    ):
        if backend not in ("torch", "sklearn"):
            raise ValueError(f"backend must be 'torch' or 'sklearn', got {backend!r}")
        self.backend = backend
        self.n_components = _positive_int("n_components", n_components)
        self.n_clusters = _positive_int("n_clusters", n_clusters)
        self.n_init = _positive_int("n_init", n_init)
        self.normalize = bool(normalize)
        self.random_state = random_state
        self.warm_start = bool(warm_start)
        self._fitted: dict[str, np.ndarray] | None = None  # mean (d,), components (k, d), centroids (K, k)
        self._last: dict[str, np.ndarray] | None = None  # warm_start: the last fit's rows (N, d) and labels (N,)
        self._on_device: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    @property
    def n_symbols(self) -> int:
        """Size of the alphabet that ``transform`` draws from: ``n_clusters``."""
        return self.n_clusters

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run."""
        return self._fitted is not None

    def fit(self, features) -> Discretizer:
        """Fit the PCA and k-means on ``features`` (N, d) (tensor on any device, or numpy)."""
        self._fit(features)
        return self

    def _fit(self, features) -> torch.Tensor:
        """Fit as ``fit`` does; k-means' labels of the rows (N,) on the features' device."""
        prepared = self._prepare(features).detach()
        last = self._last
        if last is not None and last["rows"].shape == prepared.shape:
            if last["rows"].device != prepared.device:  # resumed from a state_dict: move once
                last["rows"], last["labels"] = last["rows"].to(prepared.device), last["labels"].to(prepared.device)
            if torch.equal(last["rows"], prepared.to(last["rows"].dtype)):
                return last["labels"]
        samples, dim = prepared.shape
        if self.normalize and dim == 1:
            warnings.warn(
                "Discretizer: L2 normalisation maps one-column features to ±1, so at most two clusters "
                "differ; pass normalize=False for scalar features",
                UserWarning,
                stacklevel=3,
            )
        if samples < self.n_clusters:
            raise ValueError(
                f"features have {samples} rows, fewer than n_clusters={self.n_clusters}; "
                "fit on at least as many samples as clusters"
            )
        if self.n_components > min(samples, dim):
            raise ValueError(
                f"n_components={self.n_components} exceeds min(N, d) = min({samples}, {dim}) "
                "of the features; choose n_components ≤ min(N, d)"
            )
        if self.backend == "sklearn":
            mean, components, centroids, labels = self._fit_sklearn(prepared.cpu().to(torch.float64).numpy())
            labels = torch.from_numpy(labels.astype(np.int64)).to(prepared.device)
        else:
            mean, components, centroids, labels = self._fit_torch(prepared.to(torch.float64))
        self._fitted = {"mean": mean, "components": components, "centroids": centroids}
        # A copy on the features' device: the next fit compares with it there, without a host copy.
        self._last = {"rows": prepared.clone(), "labels": labels} if self.warm_start else None
        self._on_device.clear()
        return labels

    def _fit_torch(self, rows: torch.Tensor) -> tuple:
        """PCA and k-means in torch, float64, on the rows' device: mean, components and
        centroids as numpy arrays, labels a tensor on the rows' device."""
        mean, components, projected = _pca(rows, self.n_components)
        previous = self._previous_centroids(mean.cpu().numpy(), components.cpu().numpy())
        seeds = None if previous is None else torch.as_tensor(previous, dtype=rows.dtype, device=rows.device)
        centroids, labels = _kmeans(projected, self.n_clusters, seeds, self.n_init, self.random_state)
        return mean.cpu().numpy(), components.cpu().numpy(), centroids.cpu().numpy(), labels

    def _fit_sklearn(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """scikit-learn's PCA and KMeans on a CPU float64 copy."""
        # scikit-learn is loaded on use: it would slow `import fastpid` (docs/performance.md).
        from sklearn import config_context
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        # The rows and parameters are checked in _fit: scikit-learn's own checks would repeat ours.
        with config_context(assume_finite=True, skip_parameter_validation=True):
            pca = PCA(self.n_components, random_state=self.random_state)
            projected = pca.fit_transform(rows)
            seeds = self._previous_centroids(pca.mean_, pca.components_)
            kmeans = KMeans(
                self.n_clusters,
                init="k-means++" if seeds is None else seeds,
                n_init=self.n_init if seeds is None else 1,
                random_state=self.random_state,
            )
            kmeans.fit(projected)
        return pca.mean_, pca.components_, kmeans.cluster_centers_, kmeans.labels_

    def state_dict(self) -> dict:
        """The fitted mean, components and centroids as CPU float64 tensors (empty
        before ``fit``), with ``warm_start`` the last fit's rows and labels too (CPU
        copies); ``torch.load(weights_only=True)`` reads it."""
        state = {name: torch.from_numpy(array.copy()) for name, array in (self._fitted or {}).items()}
        return state | {name: tensor.cpu().clone() for name, tensor in (self._last or {}).items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a fit saved by ``state_dict()`` (an empty state: unfitted)."""
        fit, last = {"mean", "components", "centroids"}, {"rows", "labels"}
        if state and set(state) not in (fit, fit | last):
            raise ValueError(
                f"a Discretizer state holds mean, components and centroids (and, warm-started, "
                f"rows and labels), got {sorted(state)}"
            )
        if state and tuple(state["centroids"].shape) != (self.n_clusters, self.n_components):
            raise ValueError(
                f"the state's centroids have shape {tuple(state['centroids'].shape)}, this "
                f"Discretizer expects ({self.n_clusters}, {self.n_components})"
            )
        self._fitted = (
            {name: torch.as_tensor(state[name]).numpy().astype(np.float64) for name in fit} if state else None
        )
        warm = self.warm_start and last <= set(state)
        self._last = {name: torch.as_tensor(state[name]).clone() for name in last} if warm else None
        self._on_device.clear()

    def _previous_centroids(self, mean: np.ndarray, components: np.ndarray) -> np.ndarray | None:
        """The last fit's centroids in the basis (mean, components), when warm-starting from them."""
        last = self._fitted
        if not self.warm_start or last is None or last["mean"].shape != mean.shape:
            return None
        return (last["mean"] + last["centroids"] @ last["components"] - mean) @ components.T

    def transform(self, features) -> torch.Tensor:
        """Symbol argmin_k ‖z − c_k‖² of every row: LongTensor (N,) on the features' device."""
        with torch.no_grad():
            return self._squared_distances(features).argmin(-1)

    def fit_transform(self, features) -> torch.Tensor:
        """Fit on ``features`` and return their symbols: k-means' own assignment
        (in float64), so ``fit(features).transform(features)`` without the second
        pass; the two can differ only at ties within the features' rounding."""
        return self._fit(features)

    def soft_assign(self, features, temperature: float = 1.0) -> torch.Tensor:
        r"""Soft symbols softmax_k(−‖z − c_k‖² / T): rows of shape (N, n_clusters) summing to 1.

        Differentiable with respect to tensor ``features``; on their device, in their
        dtype (at least float32)."""
        temperature = _positive_real("temperature", temperature)
        return torch.softmax(-self._squared_distances(features) / temperature, -1)

    def _prepare(self, features) -> torch.Tensor:
        """Checked features (N, d) as a floating tensor, L2-normalised row-wise if asked."""
        if isinstance(features, np.ndarray):
            features = torch.from_numpy(features)
        if not isinstance(features, torch.Tensor):
            raise TypeError(
                f"features must be a torch.Tensor or numpy.ndarray of shape (N, d), got {type(features).__name__}"
            )
        if not features.dtype.is_floating_point:
            raise TypeError(f"features must be floating point, got {features.dtype}; convert with .float()")
        if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must have shape (N, d) with N, d ≥ 1, got shape {tuple(features.shape)}")
        if not torch.isfinite(torch.stack(torch.aminmax(features.detach()))).all():  # NaN propagates; 5× faster
            raise ValueError("features hold NaN or infinite values")
        if features.dtype not in (torch.float32, torch.float64):
            features = features.float()
        return torch.nn.functional.normalize(features, dim=1) if self.normalize else features

    def _squared_distances(self, features) -> torch.Tensor:
        """‖z − c_k‖² for every row and centroid, shape (N, n_clusters)."""
        if self._fitted is None:
            raise ValueError("this Discretizer is not fitted yet; call fit(features) first")
        rows = self._prepare(features)
        mean, components, centroids = self._parameters(rows.device, rows.dtype)
        if rows.shape[1] != mean.shape[0]:
            raise ValueError(
                f"features have {rows.shape[1]} columns but the Discretizer was fitted on "
                f"{mean.shape[0]}; pass features of shape (N, {mean.shape[0]})"
            )
        projected = (rows - mean) @ components.T
        return (projected[:, None, :] - centroids).pow(2).sum(-1)

    def _parameters(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Fitted mean, components and centroids as tensors, cached per device and dtype."""
        key = (device, dtype)
        if key not in self._on_device:
            self._on_device[key] = tuple(
                torch.as_tensor(self._fitted[name], dtype=dtype, device=device)
                for name in ("mean", "components", "centroids")
            )
        return self._on_device[key]
