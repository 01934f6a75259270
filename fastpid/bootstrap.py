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
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .joints import as_symbols, joint_from_samples
from .pid import DEFAULT_TOL, ConvergenceWarning, PIDResult, pid, report_unconverged

QUANTITIES = ("redundancy", "unique1", "unique2", "synergy", "mi")
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
        plain = {name: {key: (tuple(t.tolist() for t in value) if isinstance(value, tuple) else value.tolist())
                        for key, value in self.summary(name).items()} for name in QUANTITIES}
        return {**plain, "confidence": self.confidence, "unconverged": self.unconverged.tolist(),
                "max_gap": self.max_gap.tolist()}

    def summary(self, name: str) -> dict[str, torch.Tensor]:
        """The statistics of one quantity (a name in ``QUANTITIES``) as a dict."""
        if name not in QUANTITIES:
            raise ValueError(f"unknown quantity {name!r}; expected one of {QUANTITIES}")
        k = QUANTITIES.index(name)
        return {"estimate": self.estimate[..., k], "bias": self.bias[..., k], "corrected": self.corrected[..., k],
                "se": self.se[..., k], "percentile": tuple(t[..., k] for t in self.percentile),
                "basic": tuple(t[..., k] for t in self.basic)}


def _check_options(n_resamples, confidence, progress) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an int ≥ 2, got {n_resamples!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None (automatic), True or False, got {progress!r}")


def bootstrap(x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor,
              n1: int | None = None, n2: int | None = None, ny: int | None = None, *,
              n_resamples: int = 1000, confidence: float = 0.95, seed: int | torch.Generator | None = None,
              backend: str = "auto", progress: bool | None = None, tol: float = DEFAULT_TOL,
              strict: bool = False) -> BootstrapResult:
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
        strict: raise ``fastpid.ConvergenceError`` if any solve misses ``tol``; by default the call gives one ``fastpid.ConvergenceWarning``
            with the count (also in ``unconverged`` and ``max_gap``).

    Returns:
        BootstrapResult; every resampled joint is built by ``joint_from_samples``
        and solved by ``fastpid.pid``, batched in chunks of ``CHUNK_ELEMENTS``.
    """
    _check_options(n_resamples, confidence, progress)
    x1, x2, y = as_symbols("x1", x1), as_symbols("x2", x2), as_symbols("y", y)
    plugin = joint_from_samples(x1, x2, y, n1, n2, ny)
    sizes, batch_shape, samples = plugin.shape[-3:], x1.shape[:-1], x1.shape[-1]
    # fastpid.pid would warn once per chunk: this call reports once, for all of them.
    solve = functools.partial(pid, backend=backend, tol=tol, strict=strict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plugin_result = solve(plugin)
    estimate = quantities(plugin_result)
    n_sets, cells = math.prod(batch_shape), math.prod(sizes)
    chunk = max(1, CHUNK_ELEMENTS // (n_sets * max(samples, cells)))
    starts = range(0, n_resamples, chunk)
    show = n_resamples * n_sets * cells > PROGRESS_CELLS if progress is None else progress
    generator = as_generator(seed, x1.device)
    replicates, gaps, unconverged = [], [plugin_result.gap[None]], (~plugin_result.converged).long()
    for start in tqdm(starts, desc="bootstrap", unit="chunk", disable=not show):
        size = min(chunk, n_resamples - start)
        index = torch.randint(samples, (size, *batch_shape, samples), generator=generator, device=x1.device)
        resampled = [torch.gather(x.expand(size, *x.shape), -1, index) for x in (x1, x2, y)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = solve(joint_from_samples(*resampled, *sizes))
        replicates.append(quantities(result))
        gaps.append(result.gap)
        unconverged = unconverged + (~result.converged).long().sum(0)
    replicates, max_gap = torch.cat(replicates), torch.cat(gaps).amax(0)
    if bool(unconverged.any()):
        report_unconverged("fastpid.bootstrap", int(unconverged.sum()), (n_resamples + 1) * n_sets,
                           float(max_gap.max()), tol, strict)
    alpha = 1 - confidence
    low, high = torch.quantile(replicates, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=replicates.dtype,
                                                        device=replicates.device), dim=0)
    bias = replicates.mean(0) - estimate
    return BootstrapResult(
        estimate=estimate, bias=bias, corrected=estimate - bias, se=replicates.std(0),
        percentile=(low, high), basic=(2 * estimate - high, 2 * estimate - low), replicates=replicates,
        confidence=float(confidence), unconverged=unconverged, max_gap=max_gap)
