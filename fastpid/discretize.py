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
k-means: k-means++ seeds, then Lloyd's iterations, all restarts in one batched
tensor op, the restart of least inertia kept.  The projection and the
assignment run in torch on the features' device, so ``soft_assign`` is
differentiable with respect to them.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch


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


def _pca(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and the top ``k`` principal axes (k, d) of ``rows`` (N, d), signs fixed."""
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
    return mean, components * torch.where(largest < 0, -1.0, 1.0).to(components.dtype)


def _kmeans_plus_plus(points: torch.Tensor, clusters: int, restarts: int, generator) -> torch.Tensor:
    """Greedy k-means++ seeds (restarts, clusters, k) for ``points`` (N, k), all restarts at once:
    each new seed is the best, by the potential it leaves, of 2 + ⌊ln K⌋ points drawn with
    probability ∝ the squared distance to the nearest seed (scikit-learn's rule)."""
    n = points.shape[0]
    trials = 2 + int(math.log(clusters))
    first = torch.randint(n, (restarts,), generator=generator).to(points.device)
    centroids = [points[first]]
    nearest = (points[None] - centroids[0][:, None]).pow(2).sum(-1)  # (restarts, N)
    for _ in range(1, clusters):
        weights = nearest.clamp_min(0)
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
        candidates = torch.multinomial(weights.cpu(), trials, replacement=True, generator=generator).to(points.device)
        distances = (points[None, None] - points[candidates][:, :, None]).pow(2).sum(-1)  # (restarts, trials, N)
        potentials = torch.minimum(nearest[:, None], distances)
        best = potentials.sum(-1).argmin(1)
        chosen = candidates.gather(1, best[:, None])[:, 0]
        centroids.append(points[chosen])
        nearest = potentials[torch.arange(restarts, device=points.device), best]
    return torch.stack(centroids, 1)


def _lloyd(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lloyd's iterations from ``centroids`` (R, K, k) for every restart at once; the final
    centroids, the labels (R, N) and the inertia (R,).  An empty cluster keeps its centroid.
    Stops when no label changes or the centroids move by less than KMEANS_TOL × the mean
    variance of the columns (scikit-learn's rules)."""
    restarts, clusters, dim = centroids.shape
    tolerance = KMEANS_TOL * points.var(0).mean()
    squares = points.pow(2).sum(-1)
    offsets = (torch.arange(restarts, device=points.device) * clusters)[:, None]
    flat_points = points.repeat(restarts, 1)
    labels = None
    for _ in range(KMEANS_MAX_ITER):
        # ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², one batched product for every restart
        distances = (
            torch.baddbmm(
                centroids.pow(2).sum(-1)[:, None],
                points[None].expand(restarts, -1, -1),
                centroids.transpose(1, 2),
                alpha=-2,
            )
            + squares[:, None]
        )
        new_labels = distances.argmin(-1)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        index = (labels + offsets).flatten()
        sums = torch.zeros(restarts * clusters, dim, dtype=points.dtype, device=points.device).index_add_(
            0, index, flat_points
        )
        counts = torch.bincount(index, minlength=restarts * clusters).to(points.dtype)[:, None]
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centroids.reshape(-1, dim)).view_as(centroids)
        shift = (moved - centroids).pow(2).sum((1, 2)).max()
        centroids = moved
        if shift <= tolerance:
            break
    distances = torch.cdist(points[None].expand(restarts, -1, -1), centroids).pow(2)
    inertia, labels = distances.min(-1)
    return centroids, labels, inertia.sum(-1)


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

    def _fit(self, features) -> np.ndarray:
        """Fit as ``fit`` does; k-means' labels of the rows (N,)."""
        prepared = self._prepare(features).detach()
        rows = prepared.cpu().to(torch.float64).numpy() if self.backend == "sklearn" or self.warm_start else None
        last = self._last
        if last is not None and rows is not None and np.array_equal(last["rows"], rows):
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
            mean, components, centroids, labels = self._fit_sklearn(rows)
        else:
            mean, components, centroids, labels = self._fit_torch(prepared.to(torch.float64))
        self._fitted = {"mean": mean, "components": components, "centroids": centroids}
        self._last = {"rows": rows, "labels": labels} if self.warm_start else None
        self._on_device.clear()
        return labels

    def _fit_torch(self, rows: torch.Tensor) -> tuple[np.ndarray, ...]:
        """PCA and k-means in torch, float64, on the rows' device."""
        mean, components = _pca(rows, self.n_components)
        projected = (rows - mean) @ components.T
        previous = self._previous_centroids(mean.cpu().numpy(), components.cpu().numpy())
        if previous is None:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(0 if self.random_state is None else int(self.random_state))
            seeds = _kmeans_plus_plus(projected, self.n_clusters, self.n_init, generator)
        else:
            seeds = torch.as_tensor(previous, dtype=rows.dtype, device=rows.device)[None]
        centroids, labels, inertia = _lloyd(projected, seeds)
        best = int(inertia.argmin())
        return (mean.cpu().numpy(), components.cpu().numpy(), centroids[best].cpu().numpy(), labels[best].cpu().numpy())

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
        before ``fit``), with ``warm_start`` the last fit's rows and labels too;
        ``torch.load(weights_only=True)`` reads it."""
        arrays = {**(self._fitted or {}), **(self._last or {})}
        return {name: torch.from_numpy(array.copy()) for name, array in arrays.items()}

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
        arrays = {name: torch.as_tensor(value).numpy() for name, value in state.items()}
        self._fitted = {name: arrays[name].astype(np.float64) for name in fit} if state else None
        self._last = {name: arrays[name] for name in last} if self.warm_start and last <= set(state) else None
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
        device = features.device if isinstance(features, torch.Tensor) else torch.device("cpu")
        return torch.from_numpy(self._fit(features).astype(np.int64)).to(device)

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
