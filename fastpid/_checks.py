"""Validation of joints handed to the public API: clear errors, never silent NaN."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SUM_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-5}


def as_joint_tensor(p, normalize: bool = False) -> tuple[torch.Tensor, bool]:
    """Turn ``p`` (tensor, array, a sequence of joints, or nested lists of numbers) into one
    floating tensor: integer counts become float64 with ``normalize`` (and are refused
    without it), half precision becomes float32.

    Returns the tensor and whether the input was numpy."""
    if isinstance(p, np.ndarray):
        if p.dtype.kind not in "fiu":
            raise TypeError(f"P must hold float32 or float64 probabilities, got numpy dtype {p.dtype}")
        return _floating(torch.tensor(p), normalize), True
    if isinstance(p, torch.Tensor):
        return _floating(p, normalize), False
    if isinstance(p, Sequence) and not isinstance(p, (str, bytes)) and len(p) > 0:
        if not any(isinstance(item, (torch.Tensor, np.ndarray)) for item in p):
            # Nested lists of numbers: an array in Python's own types, read as float64.
            try:
                return torch.tensor(np.asarray(p, dtype=np.float64)), False
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"P as nested lists must hold numbers in a regular (..., n1, n2, ny) layout: {error}"
                ) from None
        joints = [as_joint_tensor(item)[0] for item in p]
        devices = {j.device for j in joints}
        if len(devices) > 1:
            first = joints[0].device
            bad = next(i for i, j in enumerate(joints) if j.device != first)
            raise ValueError(
                f"P mixes devices: joint 0 is on {first} but joint {bad} is on {joints[bad].device}; "
                "move every joint to one device"
            )
        shapes = {tuple(j.shape) for j in joints}
        if len(shapes) > 1:
            raise ValueError(f"P is a sequence of joints of different shapes {sorted(shapes)}; pad them to one shape")
        return torch.stack(joints), all(isinstance(item, np.ndarray) for item in p)
    raise TypeError(
        f"P must be a torch.Tensor, a numpy.ndarray, a sequence of them or nested lists of numbers, "
        f"of shape (..., n1, n2, ny); got {type(p).__name__}"
    )


def _floating(p: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Integer counts as float64 (only with ``normalize``: they cannot sum to 1), half precision as float32."""
    if p.dtype in (torch.float16, torch.bfloat16):
        return p.float()
    if p.dtype.is_floating_point or p.dtype.is_complex or p.dtype == torch.bool:
        return p
    if not normalize:
        raise TypeError(
            f"P holds integers ({p.dtype}): pass normalize=True to use them as counts, or convert with P / P.sum()"
        )
    return p.to(torch.float64)


def check_layout(p: torch.Tensor) -> None:
    """The checks of ``check_joint`` that read no values: dtype, rank, empty axes, the meta device.

    They depend only on metadata, so they stay in a ``torch.compile`` graph."""
    if p.dtype not in SUM_TOLERANCE:
        raise TypeError(f"P must be float32 or float64, got {p.dtype}; convert counts with P / P.sum()")
    if p.dim() < 3:
        raise ValueError(f"P must have shape (..., n1, n2, ny) with at least 3 dimensions, got shape {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError(f"P has an empty axis: shape {tuple(p.shape)}; every axis needs at least one entry")
    if p.device.type == "meta":
        raise ValueError("P is on the meta device and holds no values; pass a joint on a real device")


def check_joint(p: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Check a batch of joints of shape (..., n1, n2, ny) and return it summing to 1.

    Raises TypeError for non-float dtypes and ValueError for wrong rank, empty
    axes, NaN/inf/negative mass, and sums off 1 (beyond float rounding) unless
    ``normalize``; the error names the first bad joint of a batch.  The compiled
    forward (csrc/broja_forward.cpp) makes the same test and rescaling with the
    same ops, so both accept the same joints and rescale them alike."""
    check_layout(p)
    batch_shape = p.shape[:-3]
    flat = p.reshape(-1, p.shape[-3] * p.shape[-2] * p.shape[-1])
    total = flat.sum(1)
    # A total within the tolerance of 1 is finite and positive; normalize takes any such total.
    summed = torch.isfinite(total) & (total > 0) if normalize else (total - 1).abs() <= SUM_TOLERANCE[p.dtype]
    fine = summed & (flat.amin(1) >= 0)
    if not bool(fine.all()):  # one test for the common case; raise_for_values finds what is wrong
        raise_for_values(p, normalize, fine)
    return p / total.reshape(*batch_shape, 1, 1, 1)


def raise_for_values(p: torch.Tensor, normalize: bool, fine: torch.Tensor) -> None:
    """The ValueError for the first joint of ``p`` that ``fine`` (one flag per joint,
    False where ``check_joint``'s test refuses it) flags, naming its problem."""
    batch_shape = p.shape[:-3]
    index = int(torch.nonzero(~fine.reshape(-1))[0, 0])
    where = (
        f"joint {tuple(int(i) for i in np.unravel_index(index, tuple(batch_shape)))}" if batch_shape else "the joint"
    )
    joint = p.detach().reshape(-1, p.shape[-3] * p.shape[-2] * p.shape[-1])[index]
    if not bool(torch.isfinite(joint).all()):
        raise ValueError(f"P must be finite: {where} holds NaN or infinite mass")
    if bool((joint < 0).any()):
        raise ValueError(f"P must be non-negative: {where} holds negative mass (min {joint.min().item():.3g})")
    total = joint.sum()
    if not bool(torch.isfinite(total)):
        raise ValueError(f"P's total mass overflows {p.dtype}: {where} sums to inf; rescale it")
    if not total > 0:
        raise ValueError(f"P must carry mass: {where} sums to 0")
    raise ValueError(
        f"P must sum to 1 over its last three axes: {where} sums to {total.item():.10g}; pass normalize=True to rescale"
    )


def check_options(tol: float, max_iter: int) -> None:
    """Solver options: a finite non-negative tolerance and a non-negative iteration cap."""
    if not (isinstance(tol, (int, float)) and tol >= 0 and tol < float("inf")):
        raise ValueError(f"tol must be a finite non-negative number of bits, got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
