r"""The PID of every pair of modalities about one target, in one batched solve.

For modalities X_0 … X_{m−1} and target Y, ``pid_pairs`` decomposes
I(Y; X_i, X_j) for every i < j.  The pairs' joints are zero-padded to one shape
(max n_i, max n_j, ny) and solved together: symbols of zero mass change no
atom, so each pair gets the PID of its own joint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from itertools import combinations

import torch
import torch.nn.functional as F

from .decomposition import PIDResult, pid
from .joints import joint_from_samples


def pid_pairs(
    xs: Sequence[torch.Tensor],
    y: torch.Tensor,
    sizes: Sequence[int | None] | None = None,
    ny: int | None = None,
    **pid_kwargs,
) -> dict[tuple[int, int], PIDResult]:
    r"""BROJA PID of the plug-in joint P(x_i, x_j, y) for every pair i < j.

    Args:
        xs: m ≥ 2 tensors of integer symbols, each of shape (..., N) like ``y``.
        y: integer target symbols of shape (..., N).
        sizes: alphabet size of each modality (None, or None entries: largest
            symbol + 1).
        ny: number of target symbols (default: largest symbol + 1).
        **pid_kwargs: passed to ``fastpid.pid`` (backend, tol, max_iter, return_q).

    Returns:
        {(i, j): PIDResult} in the order of ``itertools.combinations(range(m), 2)``;
        each result has the batch shape of the inputs (scalars for (N,) inputs)
        and its ``q``, if requested, has the pair's own shape (..., n_i, n_j, ny).
    """
    if isinstance(xs, torch.Tensor) or not isinstance(xs, Sequence) or len(xs) < 2:
        raise TypeError("xs must be a list of at least two symbol tensors of shape (..., N)")
    sizes = [None] * len(xs) if sizes is None else list(sizes)
    if len(sizes) != len(xs):
        raise ValueError(f"sizes must give one alphabet size per modality: {len(xs)} modalities, {len(sizes)} sizes")
    pairs = list(combinations(range(len(xs)), 2))
    joints = [joint_from_samples(xs[i], xs[j], y, sizes[i], sizes[j], ny) for i, j in pairs]
    rows = max(joint.shape[-3] for joint in joints)
    cols = max(joint.shape[-2] for joint in joints)
    padded = torch.stack(
        [F.pad(joint, (0, 0, 0, cols - joint.shape[-2], 0, rows - joint.shape[-3])) for joint in joints]
    )
    result = pid(padded, **pid_kwargs)
    return {pair: _pair_result(result, k, joint.shape) for k, (pair, joint) in enumerate(zip(pairs, joints))}


def _pair_result(result: PIDResult, k: int, shape: torch.Size) -> PIDResult:
    """The k-th pair of a result with a leading pair axis; q cropped back to ``shape``."""
    pair = PIDResult(**{f.name: getattr(result, f.name)[k] for f in fields(result) if f.name != "q"})
    if result.q is not None:
        pair.q = result.q[k, ..., : shape[-3], : shape[-2], :]
    return pair
