r"""Bootstrap of the plug-in PID: bias, standard error and intervals from resampling.

With θ̂ the atoms of the plug-in joint of the N samples and θ*_1..θ*_B those of
B resamples (N samples drawn with replacement):

    bias       b = mean(θ*) − θ̂        (> 0 where the plug-in overstates, e.g.
                                       synergy and unique information at small N)
    corrected  θ̂ − b = 2θ̂ − mean(θ*)
    se         std(θ*)
    percentile [q_{α/2}(θ*), q_{1−α/2}(θ*)]               α = 1 − confidence
    basic      [2θ̂ − q_{1−α/2}(θ*), 2θ̂ − q_{α/2}(θ*)]     the percentile interval
                                                           reflected about θ̂

The percentile interval inherits the plug-in's bias twice over (θ* is biased
about θ̂ as θ̂ is about θ); the basic interval removes it to first order and is
the one to report for coverage.  Neither is valid for an atom whose truth is 0:
it lies on the boundary of the atoms' range (≥ 0), where the resampled atoms are
not a shifted copy of the estimates' sampling distribution.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
import warnings
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .decomposition import (
    ATOM_FIELDS,
    DEFAULT_TOL,
    ConvergenceWarning,
    PIDResult,
    pid,
    pid_with_jacobian,
    report_unconverged,
)
from .joints import as_symbols, joint_from_samples

QUANTITIES = ATOM_FIELDS  # the order of every stacked statistic
CHUNK_ELEMENTS = 2**21  # resampled symbols (or joint cells) per batched solve
PROGRESS_CELLS = 2**22  # auto progress bar above this many resampled joint cells


def quantities(result: PIDResult) -> torch.Tensor:
    """The atoms of a PIDResult stacked on a last axis of size 5, ordered as ``QUANTITIES``."""
    return torch.stack([getattr(result, name) for name in QUANTITIES], -1)


def as_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A torch.Generator: ``seed`` itself, a new one seeded with an int, or None (global RNG)."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")
    return torch.Generator(device).manual_seed(int(seed))


@dataclass
class BootstrapResult:
    """Bootstrap summary of the plug-in PID in bits.

    Every statistic has shape (*batch, 5), the last axis ordered as
    ``QUANTITIES`` = (redundancy, unique1, unique2, synergy, mi); ``replicates``
    has shape (n_resamples, *batch, 5).  ``percentile`` and ``basic`` are
    (lower, upper) pairs of such tensors.  ``unconverged`` (*batch) counts the
    solves (plug-in and resamples) that missed the tolerance; ``max_gap`` (*batch)
    is their largest duality gap, which bounds the error of every solve."""

    estimate: torch.Tensor
    bias: torch.Tensor
    corrected: torch.Tensor
    se: torch.Tensor
    percentile: tuple[torch.Tensor, torch.Tensor]
    basic: tuple[torch.Tensor, torch.Tensor]
    replicates: torch.Tensor
    confidence: float
    unconverged: torch.Tensor
    max_gap: torch.Tensor

    def to_dict(self) -> dict:
        """Per quantity, its statistics as Python numbers (nested lists for a batch), plus
        ``confidence``, ``unconverged`` and ``max_gap``; the replicates are left out."""
        plain = {
            name: {
                key: (tuple(t.tolist() for t in value) if isinstance(value, tuple) else value.tolist())
                for key, value in self.summary(name).items()
            }
            for name in QUANTITIES
        }
        return {
            **plain,
            "confidence": self.confidence,
            "unconverged": self.unconverged.tolist(),
            "max_gap": self.max_gap.tolist(),
        }

    def to_dataframe(self):
        """A pandas DataFrame with one row per quantity (and sample set, in ``set``, for a
        batch): estimate, bias, corrected, se and both intervals."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError("BootstrapResult.to_dataframe needs pandas: pip install pandas") from error
        batch = self.estimate.shape[:-1]
        rows = []
        for index in np.ndindex(batch):
            for name in QUANTITIES:
                stats = {
                    key: tuple(float(t[index]) for t in value) if isinstance(value, tuple) else float(value[index])
                    for key, value in self.summary(name).items()
                }
                low, high = stats.pop("basic")
                p_low, p_high = stats.pop("percentile")
                rows.append(
                    {
                        **({"set": index if len(index) > 1 else index[0]} if batch else {}),
                        "quantity": name,
                        **stats,
                        "basic_low": low,
                        "basic_high": high,
                        "percentile_low": p_low,
                        "percentile_high": p_high,
                    }
                )
        return pandas.DataFrame(rows)

    def __str__(self) -> str:
        """One table row per quantity (bits) for one sample set; for a batch, its size and the worst gap."""
        if self.estimate.dim() > 1:
            return (
                f"bootstrap of {self.estimate[..., 0].numel():,} sample sets, {len(self.replicates):,} "
                f"resamples each; largest gap {float(self.max_gap.max()):.1e} bits, "
                f"{int(self.unconverged.sum())} unconverged"
            )
        percent = f"{100 * self.confidence:g}%"
        lines = [f"{'bits':<12}{'estimate':>10}{'bias':>10}{'corrected':>11}{'se':>9}  {percent} basic interval"]
        for name in QUANTITIES:
            stats = self.summary(name)
            low, high = stats["basic"]
            lines.append(
                f"{name:<12}{float(stats['estimate']):10.4f}{float(stats['bias']):+10.4f}"
                f"{float(stats['corrected']):11.4f}{float(stats['se']):9.4f}  "
                f"[{float(low):.4f}, {float(high):.4f}]"
            )
        lines.append(
            f"{len(self.replicates):,} resamples; largest gap {float(self.max_gap):.1e} bits, "
            f"{int(self.unconverged)} unconverged"
        )
        return "\n".join(lines)

    def summary(self, name: str) -> dict[str, torch.Tensor]:
        """The statistics of one quantity (a name in ``QUANTITIES``) as a dict."""
        if name not in QUANTITIES:
            raise ValueError(f"unknown quantity {name!r}; expected one of {QUANTITIES}")
        k = QUANTITIES.index(name)
        return {
            "estimate": self.estimate[..., k],
            "bias": self.bias[..., k],
            "corrected": self.corrected[..., k],
            "se": self.se[..., k],
            "percentile": tuple(t[..., k] for t in self.percentile),
            "basic": tuple(t[..., k] for t in self.basic),
        }


def _check_count(name: str, count) -> None:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 2:
        raise ValueError(f"{name} must be an int ≥ 2, got {count!r}")


def _check_progress(progress) -> None:
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None (automatic), True or False, got {progress!r}")


def _resample(x1, x2, y, size: int, generator) -> list[torch.Tensor]:
    """``size`` resamples of the samples (x1, x2, y) (each (..., N)), N drawn with replacement: (size, ..., N) each."""
    index = torch.randint(x1.shape[-1], (size, *x1.shape), generator=generator, device=x1.device)
    return [torch.gather(x.expand(size, *x.shape), -1, index) for x in (x1, x2, y)]


def bootstrap(
    x1: torch.Tensor,
    x2: torch.Tensor,
    y: torch.Tensor,
    n1: int | None = None,
    n2: int | None = None,
    ny: int | None = None,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | torch.Generator | None = None,
    backend: str = "auto",
    progress: bool | None = None,
    tol: float = DEFAULT_TOL,
    strict: bool = False,
) -> BootstrapResult:
    r"""Bootstrap the plug-in PID of samples (x1, x2, y).

    Args:
        x1, x2, y: integer symbols of shape (..., N) (tensors, numpy arrays or
            lists); leading axes are a batch of independent sample sets, each
            resampled on its own.
        n1, n2, ny: alphabet sizes (default: largest symbol + 1 over the batch).
        n_resamples: B ≥ 2 resamples of N samples drawn with replacement.
        confidence: coverage of the intervals, in (0, 1).
        seed: an int, a ``torch.Generator`` or None (torch's global RNG).
        backend: ``fastpid.pid`` backend.
        progress: tqdm bar over the batched solves; None shows it when more than
            ``PROGRESS_CELLS`` resampled joint cells are solved.
        tol: ``fastpid.pid``'s tolerance on every solve (bits).
        strict: raise ``fastpid.ConvergenceError`` if any solve misses ``tol``; by
            default the call gives one ``fastpid.ConvergenceWarning`` with the
            count (also in ``unconverged`` and ``max_gap``).

    Returns:
        BootstrapResult; every resampled joint is built by ``joint_from_samples``
        and solved by ``fastpid.pid``, batched in chunks of ``CHUNK_ELEMENTS``.
    """
    _check_count("n_resamples", n_resamples)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    _check_progress(progress)

    estimate, replicates, unconverged, max_gap = _surrogates(
        "fastpid.bootstrap", _resample, x1, x2, y, (n1, n2, ny), n_resamples, seed, backend, tol, strict, progress
    )
    alpha = 1 - confidence
    low, high = torch.quantile(
        replicates, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=replicates.dtype, device=replicates.device), dim=0
    )
    bias = replicates.mean(0) - estimate
    return BootstrapResult(
        estimate=estimate,
        bias=bias,
        corrected=estimate - bias,
        se=replicates.std(0),
        percentile=(low, high),
        basic=(2 * estimate - high, 2 * estimate - low),
        replicates=replicates,
        confidence=float(confidence),
        unconverged=unconverged,
        max_gap=max_gap,
    )


@dataclass
class PlugInNoise:
    """Standard errors and biases of the plug-in PID in bits for the cost of a few solves
    (``plugin_noise``).  ``estimate``, ``se`` and ``bias`` have shape (*batch, 5), the last
    axis ordered as ``QUANTITIES``; ``result`` is the plug-in joint's full ``PIDResult``
    (gap, convergence) and ``n_resamples`` the resamples behind ``bias``.  Where the
    resamples were solved on an executor, reading ``bias`` (or ``bias_seconds``, the time
    their solve took) waits for them; ``bias_ready`` says whether that would wait."""

    estimate: torch.Tensor
    se: torch.Tensor
    result: PIDResult
    n_resamples: int
    _bias: tuple[torch.Tensor, float] | Future = field(repr=False)

    def _resolved(self) -> tuple[torch.Tensor, float]:
        if isinstance(self._bias, Future):
            self._bias = self._bias.result()
        return self._bias

    @property
    def bias(self) -> torch.Tensor:
        """The control-variate bias (*batch, 5)."""
        return self._resolved()[0]

    @property
    def bias_seconds(self) -> float:
        """Wall time of the resamples' solve, wherever it ran."""
        return self._resolved()[1]

    @property
    def bias_ready(self) -> bool:
        """Whether ``bias`` is at hand (True unless it is still being solved on an executor)."""
        return not isinstance(self._bias, Future) or self._bias.done()


def plugin_noise(
    x1: torch.Tensor,
    x2: torch.Tensor,
    y: torch.Tensor,
    n1: int | None = None,
    n2: int | None = None,
    ny: int | None = None,
    *,
    n_resamples: int = 4,
    seed: int | torch.Generator | None = None,
    backend: str = "auto",
    tol: float = DEFAULT_TOL,
    executor: Executor | None = None,
) -> PlugInNoise:
    r"""Standard error and bias of the plug-in PID of samples (x1, x2, y), cheaply.

    With P̂ the plug-in joint of N samples and g = ∂θ/∂P at P̂ (the solver's closed-form
    gradient), the first-order expansion θ(P) ≈ θ(P̂) + ⟨g, P − P̂⟩ gives

        se² = (Σ_c P̂_c g_c² − (Σ_c P̂_c g_c)²) / N        (delta method)

    and the bootstrap's bias with that linear term as a control variate,

        bias = mean_b [θ(P*_b) − θ(P̂) − ⟨g, P*_b − P̂⟩]    (B = ``n_resamples``),

    whose expectation is the bootstrap's bias (the linear term averages to zero
    under resampling) and whose spread is second order in 1/N, so a few
    resamples give what plain resampling needs hundreds for.  Both are checked
    against ``bootstrap`` in tests/test_bootstrap.py; docs/data.md states
    them with the measured agreement.  The gradients of all five atoms come from one
    call of the fused backward (``fastpid.decomposition.pid_with_jacobian``); the B
    resampled joints are solved in one batched call.  Arguments as ``bootstrap``'s.

    ``executor`` (a ``concurrent.futures.Executor``): the resampling and the resamples' solve
    run there and this returns once the estimate and the standard error are known; ``bias``
    waits for them when read.  The solve releases the GIL, so a thread pool takes the bias
    off a training loop's critical path.  The sample tensors must not change until then.
    """
    _check_count("n_resamples", n_resamples)
    x1, x2, y = as_symbols("x1", x1), as_symbols("x2", x2), as_symbols("y", y)
    plugin = joint_from_samples(x1, x2, y, n1, n2, ny)
    result, jacobian = pid_with_jacobian(plugin, backend=backend, tol=tol)
    estimate, gradient = quantities(result), jacobian.flatten(-4, -2)  # gradient (*batch, cells, 5)
    weights = plugin.flatten(-3)[..., None]
    mean = (weights * gradient).sum(-2)
    se = ((weights * gradient.square()).sum(-2) - mean.square()).clamp_min(0).div(x1.shape[-1]).sqrt()
    generator = as_generator(seed, x1.device)
    # On an executor's thread, CUDA work goes to that thread's current stream: queue it on
    # the caller's, after the work that made the samples.
    stream = torch.cuda.current_stream(x1.device) if x1.device.type == "cuda" else None

    def control_variate_bias() -> tuple[torch.Tensor, float]:
        started = time.perf_counter()
        with torch.cuda.stream(stream):  # None: nothing to do
            resampled = joint_from_samples(*_resample(x1, x2, y, n_resamples, generator), *plugin.shape[-3:])
            linear = ((resampled - plugin).flatten(-3)[..., None] * gradient).sum(-2)
            bias = (quantities(pid(resampled, backend=backend, tol=tol)) - estimate - linear).mean(0)
        return bias, time.perf_counter() - started

    bias = control_variate_bias() if executor is None else executor.submit(control_variate_bias)
    return PlugInNoise(estimate, se, result, n_resamples, bias)


def _surrogates(
    source: str, draw, x1, x2, y, sizes, count: int, seed, backend: str, tol: float, strict: bool, progress: bool | None
):
    """The atoms of the plug-in joint of (x1, x2, y) and of ``count`` surrogate sample sets
    ``draw(x1, x2, y, size, generator)`` (each (size, ..., N)), solved in chunks of
    ``CHUNK_ELEMENTS``.  Returns the estimate (..., 5), the surrogates' atoms
    (count, ..., 5), the unconverged solves per set and the largest gap; reports
    unconverged solves once, as ``source``."""
    x1, x2, y = as_symbols("x1", x1), as_symbols("x2", x2), as_symbols("y", y)
    plugin = joint_from_samples(x1, x2, y, *sizes)
    sizes, batch_shape, samples = plugin.shape[-3:], x1.shape[:-1], x1.shape[-1]
    # fastpid.pid would warn once per chunk: this call reports once, for all of them.
    solve = functools.partial(pid, backend=backend, tol=tol, strict=strict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plugin_result = solve(plugin)
    n_sets, cells = math.prod(batch_shape), math.prod(sizes)
    chunk = max(1, CHUNK_ELEMENTS // (n_sets * max(samples, cells)))
    show = count * n_sets * cells > PROGRESS_CELLS if progress is None else progress
    generator = as_generator(seed, x1.device)
    atoms, gaps, unconverged = [], [plugin_result.gap[None]], (~plugin_result.converged).long()
    for start in tqdm(range(0, count, chunk), desc=source.split(".")[-1], unit="chunk", disable=not show):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = solve(joint_from_samples(*draw(x1, x2, y, min(chunk, count - start), generator), *sizes))
        atoms.append(quantities(result))
        gaps.append(result.gap)
        unconverged = unconverged + (~result.converged).long().sum(0)
    max_gap = torch.cat(gaps).amax(0)
    if bool(unconverged.any()):
        report_unconverged(
            source, int(unconverged.sum()), (count + 1) * n_sets, float(max_gap.max()), tol, strict, stacklevel=3
        )
    return quantities(plugin_result), torch.cat(atoms), unconverged, max_gap


@dataclass
class PermutationResult:
    """A permutation test of the plug-in PID against independence of Y and (X1, X2).

    ``estimate`` (*batch, 5) the atoms of the samples, ``null`` (n_permutations,
    *batch, 5) those of the surrogates, ``p_value`` (*batch, 5) one-sided, for
    each quantity of ``QUANTITIES``; ``unconverged`` and ``max_gap`` as in
    ``BootstrapResult``."""

    estimate: torch.Tensor
    null: torch.Tensor
    p_value: torch.Tensor
    unconverged: torch.Tensor
    max_gap: torch.Tensor

    def to_dict(self) -> dict:
        """Estimate and p-value per quantity as Python numbers; the null distribution left out."""
        return {
            **{
                name: {"estimate": self.estimate[..., k].tolist(), "p_value": self.p_value[..., k].tolist()}
                for k, name in enumerate(QUANTITIES)
            },
            "unconverged": self.unconverged.tolist(),
            "max_gap": self.max_gap.tolist(),
        }


TIE = 1e-12  # bits: surrogate atoms this close to the estimate count as ties (as large)


def permutation_test(
    x1,
    x2,
    y,
    n1: int | None = None,
    n2: int | None = None,
    ny: int | None = None,
    *,
    n_permutations: int = 1000,
    seed: int | torch.Generator | None = None,
    backend: str = "auto",
    progress: bool | None = None,
    tol: float = DEFAULT_TOL,
    strict: bool = False,
) -> PermutationResult:
    r"""Is there information at all?  A shuffled-surrogate test of every atom.

    The surrogates keep each sample's (x1, x2) together and the marginals of
    X1, X2 and Y, and shuffle y across the samples of each set: the null is Y
    independent of (X1, X2), where every atom is 0 but plug-in estimates are
    not (their bias grows with the alphabets over N).  For each atom
    p = (1 + #{surrogates ≥ estimate}) / (n_permutations + 1), one-sided (an
    exact p-value, never 0; Phipson & Smyth 2010).  A small p-value says the atom
    exceeds what independent data give at this N and these alphabets; it does
    not test one atom against the others.  All surrogates are solved in batched
    ``fastpid.pid`` calls, as in ``bootstrap`` (arguments as there).
    """
    _check_count("n_permutations", n_permutations)
    _check_progress(progress)

    def permute(x1, x2, y, size, generator):
        order = torch.rand((size, *y.shape), generator=generator, device=y.device).argsort(-1)
        return [
            x1.expand(size, *x1.shape),
            x2.expand(size, *x2.shape),
            torch.gather(y.expand(size, *y.shape), -1, order),
        ]

    estimate, null, unconverged, max_gap = _surrogates(
        "fastpid.permutation_test",
        permute,
        x1,
        x2,
        y,
        (n1, n2, ny),
        n_permutations,
        seed,
        backend,
        tol,
        strict,
        progress,
    )
    p_value = (1 + (null >= estimate - TIE).sum(0)).to(null.dtype) / (n_permutations + 1)
    return PermutationResult(estimate=estimate, null=null, p_value=p_value, unconverged=unconverged, max_gap=max_gap)
