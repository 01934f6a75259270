r"""Joints P(x1, x2, y) from data: symbols, soft predictions, and several processes.

Every joint here is an average of per-sample contributions,

    P(x1, x2, y) = (1/N) Σ_n p1_n(x1) p2_n(x2) 1[y_n = y],

with one-hot p1_n, p2_n for symbols (``joint_from_samples``: the plug-in
estimate) and any distributions for soft predictions (``joint_from_probs``).
Because the sum is over samples, per-process sums add up exactly to the joint
of all samples: ``all_reduce_joint`` does that with ``torch.distributed``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.distributed as dist

from ._checks import SUM_TOLERANCE

# An alphabet inferred from the largest symbol is refused when it is this many times the
# number of samples (and above INFERRED_FREE): a stray large label, not a real alphabet.
INFERRED_PER_SAMPLE = 10
INFERRED_FREE = 1024


def as_symbols(name: str, x) -> torch.Tensor:
    """Symbols as a tensor: a tensor as it is, a numpy array or a (nested) list converted."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        array = np.asarray(x)
        if array.dtype.kind not in "iu":
            raise TypeError(
                f"{name} must hold integer symbols, got a {type(x).__name__} of {array.dtype}; "
                "encode labels of other types first (e.g. numpy.unique(labels, return_inverse=True))"
            )
        return torch.from_numpy(array.astype(np.int64))
    raise TypeError(f"{name} must be a tensor, numpy array or list of integer symbols, got {type(x).__name__}")


def _check_symbols(name: str, x: torch.Tensor, size: int | None, size_name: str | None = None) -> int:
    """Check integer symbols in [0, size) and return the alphabet size (max + 1 if None)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer symbols, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer symbols (e.g. torch.long), got {x.dtype}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., N) with N ≥ 1 samples, got shape {tuple(x.shape)}")
    if x.min() < 0:
        raise ValueError(f"{name} holds a negative symbol ({int(x.min())}); symbols must be in [0, n)")
    top = int(x.max())
    if size is None:
        samples = x.shape[-1]
        if top + 1 > max(INFERRED_FREE, INFERRED_PER_SAMPLE * samples):
            raise ValueError(
                f"{name} holds symbol {top}: its alphabet, inferred as largest symbol + 1, would have {top + 1:,} "
                f"symbols for {samples:,} samples; relabel the symbols to 0..k-1 "
                f"(torch.unique(x, return_inverse=True)) "
                f"or pass the alphabet size ({size_name or 'its size'}={top + 1}) if it is meant"
            )
        return top + 1
    if isinstance(size, bool) or not (isinstance(size, numbers.Integral) and size >= 1):
        raise ValueError(f"the alphabet size of {name} must be a positive int, got {size!r}")
    size = int(size)
    if top >= size:
        raise ValueError(
            f"{name} holds symbol {top}, out of range for an alphabet of size {size} (symbols in [0, {size}))"
        )
    return size


def _check_same_samples(**tensors: torch.Tensor) -> None:
    """Same device and same batch-and-sample shape (..., N) for every input."""
    names = list(tensors)
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(
            "inputs are on different devices: " + ", ".join(f"{n} on {t.device}" for n, t in tensors.items())
        )
    shapes = {tuple(t.shape) for t in tensors.values()}
    if len(shapes) > 1:
        raise ValueError(
            "inputs must have the same batch shape and number of samples (..., N); got "
            + ", ".join(f"{n}: {tuple(t.shape)}" for n, t in zip(names, tensors.values()))
        )


def joint_from_samples(
    x1: torch.Tensor,
    x2: torch.Tensor,
    y: torch.Tensor,
    n1: int | None = None,
    n2: int | None = None,
    ny: int | None = None,
    *,
    normalize: bool = True,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""The plug-in joint P(x1, x2, y) = #{n: (x1_n, x2_n, y_n) = (x1, x2, y)} / N.

    Args:
        x1, x2, y: integer symbols of shape (..., N) on one device (tensors, numpy
            arrays or lists); leading axes are a batch of independent sample sets.
        n1, n2, ny: alphabet sizes (default: largest symbol + 1 over the batch).
        normalize: divide by N (default); ``False`` returns the counts, which add
            up across processes (``all_reduce_joint``).
        dtype: dtype of the result (floating if ``normalize``; an integer dtype
            gives exact counts with ``normalize=False``).

    Returns:
        Tensor of shape (..., n1, n2, ny) on the inputs' device.
    """
    x1, x2, y = as_symbols("x1", x1), as_symbols("x2", x2), as_symbols("y", y)
    if normalize and not dtype.is_floating_point:
        raise ValueError(
            f"dtype must be a floating dtype for a normalised joint, got {dtype}; "
            "pass normalize=False for integer counts"
        )
    n1, n2, ny = (
        _check_symbols("x1", x1, n1, "n1"),
        _check_symbols("x2", x2, n2, "n2"),
        _check_symbols("y", y, ny, "ny"),
    )
    _check_same_samples(x1=x1, x2=x2, y=y)
    batch_shape, samples = x1.shape[:-1], x1.shape[-1]
    cells = n1 * n2 * ny
    index = (x1.long() * n2 + x2.long()) * ny + y.long()
    batches = index.reshape(-1, samples)
    offsets = torch.arange(batches.shape[0], device=index.device)[:, None] * cells
    counts = torch.bincount((batches + offsets).reshape(-1), minlength=batches.shape[0] * cells)
    joint = counts.to(dtype).reshape(*batch_shape, n1, n2, ny)
    return joint / samples if normalize else joint


def _check_probs(name: str, p: torch.Tensor, logits: bool) -> torch.Tensor:
    """Per-sample distributions (..., N, n): from logits by softmax, else checked to be ones."""
    if not isinstance(p, torch.Tensor) or not p.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating-point tensor of shape (..., N, n), got "
            f"{type(p).__name__ if not isinstance(p, torch.Tensor) else p.dtype}"
        )
    if p.dim() < 2 or p.shape[-1] == 0 or p.shape[-2] == 0:
        raise ValueError(
            f"{name} must have shape (..., N, n) with N ≥ 1 samples and n ≥ 1 symbols, got shape {tuple(p.shape)}"
        )
    if p.dtype in (torch.float16, torch.bfloat16):  # half precision (autocast, bf16 heads): the joint in float32
        p = p.float()
    values = p.detach()
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if logits:
        return torch.softmax(p, -1)
    if (values < 0).any():
        raise ValueError(
            f"{name} holds negative probabilities (min {values.min().item():.3g}); "
            "pass logits=True for unnormalised scores"
        )
    off = (values.sum(-1) - 1).abs().max()
    if off > SUM_TOLERANCE.get(p.dtype, 1e-3):
        raise ValueError(
            f"{name}'s rows must sum to 1 over the last axis (off by up to {off.item():.3g}); "
            "pass logits=True to apply a softmax"
        )
    return p


def joint_from_probs(
    p1: torch.Tensor,
    p2: torch.Tensor,
    y: torch.Tensor,
    ny: int | None = None,
    *,
    logits: bool = False,
    normalize: bool = True,
) -> torch.Tensor:
    r"""P(x1, x2, y) = (1/N) Σ_n p1_n(x1) p2_n(x2) 1[y_n = y] from soft predictions.

    Args:
        p1, p2: per-sample distributions over each modality's symbols, shapes
            (..., N, n1) and (..., N, n2) (class probabilities, soft cluster
            assignments); with ``logits=True`` scores turned into distributions
            by a softmax over the last axis.
        y: integer labels of shape (..., N).
        ny: number of labels (default: largest label + 1).
        normalize: divide by N (default); ``False`` returns the sum over samples.

    Returns:
        Tensor of shape (..., n1, n2, ny), differentiable with respect to p1 and
        p2; float32 for half-precision inputs (float16, bfloat16, autocast), which
        are upcast before the softmax and the sum.
    """
    p1, p2, y = (
        torch.from_numpy(p1) if isinstance(p1, np.ndarray) else p1,
        torch.from_numpy(p2) if isinstance(p2, np.ndarray) else p2,
        as_symbols("y", y),
    )
    p1, p2 = _check_probs("p1", p1, logits), _check_probs("p2", p2, logits)
    if y.dim() == p1.dim() and y.shape[:-1] == p1.shape[:-1]:
        raise ValueError(
            f"y must hold class indices of shape {tuple(p1.shape[:-1])}, got shape {tuple(y.shape)}, "
            "which looks one-hot; pass y.argmax(-1)"
        )
    ny = _check_symbols("y", y, ny, "ny")
    if not (p1.shape[:-1] == p2.shape[:-1] == y.shape):
        raise ValueError(
            f"p1 (..., N, n1), p2 (..., N, n2) and y (..., N) must share their batch shape and N; "
            f"got p1: {tuple(p1.shape)}, p2: {tuple(p2.shape)}, y: {tuple(y.shape)}"
        )
    _check_same_samples(p1=p1[..., 0], p2=p2[..., 0], y=y)  # devices
    onehot = torch.nn.functional.one_hot(y.long(), ny).to(p1.dtype)
    with torch.autocast(p1.device.type, enabled=False):  # the sum over samples in the inputs' precision
        joint = torch.einsum("...ni,...nj,...nk->...ijk", p1, p2.to(p1.dtype), onehot)
    return joint / y.shape[-1] if normalize else joint


def all_reduce_joint(counts: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    r"""Sum per-process counts (…, n1, n2, ny) over every process of the default group.

    Each process passes the unnormalised joint of its own samples
    (``normalize=False`` in ``joint_from_samples`` / ``joint_from_probs``); the
    sum is the joint of all samples, exactly.  Differentiable (the backward sums
    the gradients of all processes).  Without an initialised process group this
    returns the input (normalised on request).

    Returns:
        The global joint, divided by its total mass if ``normalize``.
    """
    if _distributed():
        if counts.requires_grad:
            from torch.distributed.nn.functional import all_reduce  # differentiable; loaded on use

            counts = all_reduce(counts)
        else:
            counts = counts.clone()
            dist.all_reduce(counts)
    return counts / counts.sum((-3, -2, -1), keepdim=True) if normalize else counts


def all_reduce_label_count(labels: torch.Tensor) -> int:
    """ny for the joints of sharded samples: max(labels) + 1 over every process of the
    default group, so that every process's counts have one shape for
    ``all_reduce_joint``.  Without an initialised process group, this process's
    max(labels) + 1.  ``labels`` (..., N): integer symbols ≥ 0, N ≥ 1."""
    count = _check_symbols("labels", labels, None)
    if not _distributed():
        return count
    top = torch.tensor([count], device=labels.device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return int(top)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
