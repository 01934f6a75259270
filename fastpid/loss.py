r"""``fastpid.PIDLoss``: a weighted sum of PID atoms as a differentiable training loss.

For per-modality soft symbols p1_n, p2_n (softmax of logits, probabilities, or
soft cluster assignments of features) and labels y_n,

    P(x1, x2, y) = Σ_n p1_n(x1) p2_n(x2) 1[y_n = y] / Σ_n 1,
    loss = Σ_a w_a · atom_a(P)   (bits; a ∈ redundancy, unique1, unique2, synergy, mi),

so a negative weight rewards an atom and a positive one penalises it.  The
gradient reaches the logits through ``fastpid.pid``'s closed-form backward.
Under ``torch.distributed`` the per-process sums are added exactly before the
division, so every process computes the loss of all samples; the backward sums
every process's gradient, which DDP's averaging turns into the gradient of
that one loss.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import fields

import torch

from .decomposition import PIDResult, pid
from .discretize import Discretizer, _positive_int, _positive_real
from .joints import _distributed, all_reduce_joint, all_reduce_label_count, joint_from_probs

TERMS = ("redundancy", "unique1", "unique2", "synergy", "mi")


def _check_weights(weights) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise TypeError(
            f"weights must be a non-empty mapping from atom name to weight, e.g. {{'synergy': -1.0}}; got {weights!r}"
        )
    unknown = sorted(set(weights) - set(TERMS), key=str)
    if unknown:
        raise ValueError(f"unknown PID term(s) {unknown} in weights; allowed: {', '.join(TERMS)}")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise ValueError(f"the weight of {name!r} must be a finite real number, got {weight!r}")
    return {name: float(weight) for name, weight in weights.items()}


def _check_discretizers(discretizers) -> tuple[Discretizer, Discretizer] | None:
    if discretizers is None:
        return None
    if not (
        isinstance(discretizers, Sequence)
        and len(discretizers) == 2
        and all(isinstance(d, Discretizer) for d in discretizers)
    ):
        raise TypeError(f"discretizers must be a pair (d1, d2) of fitted fastpid.Discretizer, got {discretizers!r}")
    return tuple(discretizers)


def _check_rank(name: str, value, rank: int, shape: str) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() != rank:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a tensor of shape {shape}, got {got}")


def _detached(result: PIDResult) -> PIDResult:
    # Copies, not detached views: under torch.compile (torch 2.14.1) keeping a detached view of
    # the op's unbound atoms makes aot_autograd fail ("Dimension specified as 0 but tensor has
    # no dimensions"); tests/test_compile.py::test_compiled_training_step_with_pid_loss.
    return PIDResult(
        **{
            f.name: None if getattr(result, f.name) is None else getattr(result, f.name).detach().clone()
            for f in fields(result)
        }
    )


class PIDLoss(torch.nn.Module):
    r"""Loss Σ_a w_a · atom_a of the joint of two modalities' soft symbols and the labels.

    ``PIDLoss({"synergy": -1.0, "redundancy": 0.5})`` rewards synergy and penalises
    redundancy.  The last solve, detached, is kept in ``last_result`` for logging.

    Args:
        weights: {term: weight} with terms among redundancy, unique1, unique2,
            synergy, mi.
        logits: the inputs of ``forward`` are logits (softmax over the last axis,
            default) or, if False, probabilities.  Unused with ``discretizers``.
        discretizers: a pair of fitted ``fastpid.Discretizer``: the inputs are
            then features, mapped to soft symbols by ``soft_assign(·, temperature)``.
        temperature: softmax temperature of the discretizers' soft assignment.
        num_classes: number of labels (default: largest label + 1, over every
            process when synchronising).
        sync: sum the joint over the processes of the default ``torch.distributed``
            group when one is initialised (default True).
        backend, tol, strict: passed to ``fastpid.pid`` (a joint that misses ``tol``
            gives a ``fastpid.ConvergenceWarning``, or with ``strict`` a ``ConvergenceError``).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        logits: bool = True,
        discretizers: Sequence[Discretizer] | None = None,
        temperature: float = 1.0,
        num_classes: int | None = None,
        sync: bool = True,
        backend: str = "auto",
        tol: float = 1e-8,
        strict: bool = False,
    ):
        super().__init__()
        self.weights = _check_weights(weights)
        self.discretizers = _check_discretizers(discretizers)
        self.temperature = _positive_real("temperature", temperature)
        self.num_classes = None if num_classes is None else _positive_int("num_classes", num_classes)
        self.logits = bool(logits)
        self.sync, self.backend, self.tol, self.strict = bool(sync), backend, tol, bool(strict)
        self.last_result: PIDResult | None = None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ_a w_a · atom_a in bits (scalar) for x1 (N, n1), x2 (N, n2) and labels y (N,).

        x1, x2 are logits, probabilities (``logits=False``) or, with
        ``discretizers``, features (N, d1), (N, d2)."""
        _check_rank("x1", x1, 2, "(N, n)")
        _check_rank("x2", x2, 2, "(N, n)")
        _check_rank("y", y, 1, "(N,) of integer labels")
        if self.discretizers is not None:
            x1, x2 = (d.soft_assign(x, self.temperature) for d, x in zip(self.discretizers, (x1, x2)))
        elif self.logits:
            _warn_if_probabilities(x1=x1, x2=x2)
        counts = joint_from_probs(
            x1, x2, y, self._label_count(y), logits=self.logits and self.discretizers is None, normalize=False
        )
        if self.sync:
            counts = all_reduce_joint(counts, normalize=False)
        result = pid(counts, normalize=True, backend=self.backend, tol=self.tol, strict=self.strict)
        self.last_result = _detached(result)
        return sum(weight * getattr(result, name) for name, weight in self.weights.items())

    def _label_count(self, y: torch.Tensor) -> int | None:
        """``num_classes``, else (synchronised over several processes) the largest label + 1
        over every process; None lets ``joint_from_probs`` take it from ``y`` (and check ``y`` once)."""
        if self.num_classes is not None or not (self.sync and _distributed()):
            return self.num_classes
        return all_reduce_label_count(y)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={weight:g}" for name, weight in self.weights.items())


def _warn_if_probabilities(**inputs: torch.Tensor) -> None:
    """PIDLoss takes logits by default: rows that are already distributions would be
    softmaxed a second time, silently flattening them; say so."""
    for name, x in inputs.items():
        values = x.detach()
        if bool((values >= 0).all()) and bool(((values.sum(-1) - 1).abs() <= 1e-4).all()):
            warnings.warn(
                f"PIDLoss: every row of {name} is a probability distribution, but PIDLoss applies a "
                "softmax (logits=True); pass logits=False for probabilities",
                UserWarning,
                stacklevel=3,
            )
