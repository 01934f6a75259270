r"""Plug-in Shannon quantities of joints P(x1, x2, y), batched over leading axes.

Everything is in bits and follows the convention 0 log 0 = 0.  These are the
terms that turn the BROJA value V(P) into the four atoms:

    I(Y; X1)     = H(Y) − H(Y | X1)
    I(Y; X1, X2) = H(Y) − H(Y | X1, X2)
    co-information  I(Y; X1; X2) = I(Y; X1) + I(Y; X2) − I(Y; X1, X2) = R − S
"""

from __future__ import annotations

import math

import torch

from ._checks import as_joint_tensor, check_joint

LN2 = math.log(2.0)


def _neg_entropy(p: torch.Tensor, dims) -> torch.Tensor:
    """Σ p log p over ``dims`` (nats)."""
    return torch.xlogy(p, p).sum(dims)


def conditional_entropies(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2) in nats for p of shape (..., n1, n2, ny)."""
    p1, p2, py = p.sum(-2), p.sum(-3), p.sum((-3, -2))
    x1, x2, x12 = p1.sum(-1), p2.sum(-1), p.sum(-1)
    return {
        "y": -_neg_entropy(py, -1),
        "y|x1": _neg_entropy(x1, -1) - _neg_entropy(p1, (-2, -1)),
        "y|x2": _neg_entropy(x2, -1) - _neg_entropy(p2, (-2, -1)),
        "y|x1x2": _neg_entropy(x12, (-2, -1)) - _neg_entropy(p, (-3, -2, -1)),
    }


def _mutual_informations(P, normalize: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """I(Y; X1), I(Y; X2), I(Y; X1, X2) in bits of a checked joint, and whether it came as numpy."""
    tensor, from_numpy = as_joint_tensor(P, normalize)
    h = conditional_entropies(check_joint(tensor, normalize))
    return {
        key: (h["y"] - h[f"y|{given}"]) / LN2 for key, given in (("y;x1", "x1"), ("y;x2", "x2"), ("y;x1x2", "x1x2"))
    }, from_numpy


def mutual_information(P, *, normalize: bool = False) -> dict[str, torch.Tensor]:
    """I(Y; X1), I(Y; X2) and I(Y; X1, X2) in bits of joints P of shape (..., n1, n2, ny).

    P is checked as ``fastpid.pid`` checks it (a tensor, a numpy array, a
    sequence of joints or nested lists of numbers; finite, non-negative, summing
    to 1 unless ``normalize``); numpy in gives numpy out."""
    values, from_numpy = _mutual_informations(P, normalize)
    return {key: value.numpy() for key, value in values.items()} if from_numpy else values


def co_information(P, *, normalize: bool = False) -> torch.Tensor:
    """I(Y; X1; X2) = I(Y; X1) + I(Y; X2) − I(Y; X1, X2) in bits (= R − S for any PID);
    P is checked as in ``mutual_information``."""
    mi, from_numpy = _mutual_informations(P, normalize)
    value = mi["y;x1"] + mi["y;x2"] - mi["y;x1x2"]
    return value.numpy() if from_numpy else value
