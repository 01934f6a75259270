"""Samples from a file to symbols: the ``fastpid pid`` command's input side.

A table (CSV with a header row, or an ``.npz`` of equally long 1-D arrays) holds
one column per variable.  Each column becomes integer symbols 0..k-1: columns
of labels (strings, or integers) by their sorted distinct values; continuous
columns (numbers that are not all integers) by ``bins`` quantile bins, or by
k-means on the column (``Discretizer``, ``discretize="kmeans"``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from .discretize import Discretizer


def read_columns(path: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """The named columns of a CSV (strings, as read) or ``.npz`` file (arrays)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            missing = [name for name in names if name not in arrays]
            if missing:
                raise ValueError(f"{path} has no arrays {missing}; it holds {sorted(arrays)}")
            return {name: np.asarray(arrays[name]).reshape(-1) for name in names}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in names if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} has no columns {missing}; its header is {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    return {name: np.array([row[name] for row in rows]) for name in names}


def _as_numbers(values: np.ndarray) -> np.ndarray | None:
    """The column as float64 if every entry is a number, else None (labels)."""
    try:
        return values.astype(np.float64)
    except ValueError:
        return None


def encode(values: np.ndarray, bins: int, discretize: str = "quantile") -> tuple[np.ndarray, list]:
    """Integer symbols (N,) for one column and what each symbol stands for (a label, or
    the bin's value range)."""
    numbers = _as_numbers(values)
    if numbers is None or np.array_equal(numbers, np.round(numbers)):
        names, symbols = np.unique(values if numbers is None else numbers.astype(np.int64), return_inverse=True)
        return symbols, names.tolist()
    if not np.isfinite(numbers).all():
        raise ValueError("a continuous column holds NaN or infinite values")
    if discretize == "kmeans":
        symbols = (
            Discretizer(n_components=1, n_clusters=bins, normalize=False)
            .fit_transform(torch.from_numpy(numbers[:, None]))
            .numpy()
        )
    else:
        edges = np.unique(np.quantile(numbers, np.linspace(0, 1, bins + 1)[1:-1]))
        symbols = np.searchsorted(edges, numbers, side="right")
    used, symbols = np.unique(symbols, return_inverse=True)
    return symbols, [(float(numbers[symbols == k].min()), float(numbers[symbols == k].max())) for k in range(len(used))]
