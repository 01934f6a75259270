r"""Synthetic sources (X1, X2, Y) whose BROJA decomposition is known exactly.

Each ``Synthetic`` holds a population joint P(x1, x2, y) and its true atoms
``truth`` = (R, U1, U2, S, I(Y; X1, X2)) in bits, in the order of
``fastpid.resampling.QUANTITIES``; ``sample`` draws i.i.d. symbols from P.

    xor()            y = x1 ⊕ x2 of uniform bits             S = 1
    redundant(k)     x1 = x2 = y uniform on k symbols        R = log2 k
    unique(k, i)     y = x_i uniform on k symbols, the other
                     source independent and uniform          U_i = log2 k
    independent(*s)  independent systems side by side; each variable is the
                     tuple of the systems' variables          atoms add up
    noisy(s, ...)    symmetric noise on each variable         atoms by fastpid.pid

The truths of ``xor``, ``redundant``, ``unique`` and ``independent`` are
analytic (BROJA atoms of independent systems add up: the optimal Q of the
composite is the product of the parts' optima); ``noisy`` computes them with
``fastpid.pid`` on the exact population joint (certified to 1e-10 bits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .decomposition import pid
from .examples import CANONICAL
from .resampling import QUANTITIES, as_generator, quantities

TRUTH_TOLERANCE = 1e-10  # bits: duality gap of the truths computed by fastpid.pid


@dataclass(frozen=True)
class Synthetic:
    """A population joint ``joint`` (n1, n2, ny) (float64, sums to 1) and its
    true atoms ``truth`` (5,) in bits, ordered as ``QUANTITIES``."""

    joint: torch.Tensor
    truth: torch.Tensor

    @property
    def sizes(self) -> tuple[int, int, int]:
        """The alphabet sizes (n1, n2, ny)."""
        return tuple(self.joint.shape)

    def truth_dict(self) -> dict[str, float]:
        """The true atoms as {name: bits}."""
        return dict(zip(QUANTITIES, self.truth.tolist()))

    def sample(
        self, n: int, seed: int | torch.Generator | None = None, batch_shape: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Symbols (x1, x2, y), each int64 of shape (*batch_shape, n): i.i.d. draws from P.

        ``seed``: an int, a ``torch.Generator`` to draw from, or None (torch's global RNG)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int number of samples, got {n!r}")
        batch_shape = tuple(batch_shape)
        if not all(isinstance(d, int) and d >= 1 for d in batch_shape):
            raise ValueError(f"batch_shape must hold positive ints, got {batch_shape!r}")
        rows = math.prod(batch_shape)
        probs = self.joint.reshape(1, -1).expand(rows, -1)
        cells = torch.multinomial(probs, n, replacement=True, generator=as_generator(seed))
        _, n2, ny = self.sizes
        cells = cells.reshape(*batch_shape, n)
        return cells // (n2 * ny), cells // ny % n2, cells % ny


def _symbol_count(name: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"{name} must be an int ≥ 2 symbols, got {k!r}")
    return k


def xor() -> Synthetic:
    """y = x1 ⊕ x2 of independent uniform bits: pure synergy, S = I = 1 bit."""
    return Synthetic(torch.tensor(CANONICAL["XOR"]), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64))


def redundant(symbols: int = 2) -> Synthetic:
    """x1 = x2 = y uniform on ``symbols`` values: pure redundancy, R = I = log2(symbols)."""
    k = _symbol_count("symbols", symbols)
    joint = torch.zeros(k, k, k, dtype=torch.float64)
    joint[range(k), range(k), range(k)] = 1 / k
    bits = math.log2(k)
    return Synthetic(joint, torch.tensor([bits, 0.0, 0.0, 0.0, bits], dtype=torch.float64))


def unique(symbols: int = 2, source: int = 1) -> Synthetic:
    """y = x_source uniform on ``symbols`` values, the other source independent and
    uniform on as many: pure uniqueness, U_source = I = log2(symbols)."""
    k = _symbol_count("symbols", symbols)
    if source not in (1, 2):
        raise ValueError(f"source must be 1 or 2, got {source!r}")
    copy = torch.eye(k, dtype=torch.float64) / k**2  # P(x_source, y)
    joint = copy[:, None, :].expand(k, k, k) if source == 1 else copy[None, :, :].expand(k, k, k)
    truth = torch.zeros(5, dtype=torch.float64)
    truth[source] = truth[4] = math.log2(k)
    return Synthetic(joint.contiguous(), truth)


def independent(*systems: Synthetic) -> Synthetic:
    """Independent systems side by side: x1 = (x1 of each), x2 = (x2 of each),
    y = (y of each), in mixed radix with the first system most significant.

    Every atom is the sum of the systems' atoms."""
    if not systems or not all(isinstance(s, Synthetic) for s in systems):
        raise TypeError("independent() takes one or more Synthetic systems")
    joint = systems[0].joint
    for system in systems[1:]:
        n1, n2, ny = joint.shape
        m1, m2, my = system.sizes
        joint = torch.einsum("abc,def->adbecf", joint, system.joint).reshape(n1 * m1, n2 * m2, ny * my)
    return Synthetic(joint, sum(s.truth for s in systems))


def _symmetric_channel(k: int, error: float) -> torch.Tensor:
    """K[a, b]: keep a with probability 1 − error, else uniform over the k − 1 others."""
    if not (isinstance(error, (int, float)) and 0 <= error <= 1):
        raise ValueError(f"noise levels must be probabilities in [0, 1], got {error!r}")
    if k == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    off = torch.full((k, k), error / (k - 1), dtype=torch.float64)
    return off.fill_diagonal_(1 - error)


def noisy(system: Synthetic, x1: float = 0.0, x2: float = 0.0, y: float = 0.0) -> Synthetic:
    """Each variable seen through a symmetric channel: kept with probability 1 − ε,
    else replaced by one of its other symbols uniformly (ε = ``x1``, ``x2``, ``y``).

    P̃(a, b, c) = Σ P(a', b', c') K1[a', a] K2[b', b] Ky[c', c].  The truth is
    ``fastpid.pid`` of this exact population joint (duality gap ≤ 1e-10 bits).
    Apply it to the parts before ``independent`` for noise on each part."""
    if not isinstance(system, Synthetic):
        raise TypeError(f"noisy() takes a Synthetic system, got {type(system).__name__}")
    n1, n2, ny = system.sizes
    joint = torch.einsum(
        "abc,ad,be,cf->def",
        system.joint,
        _symmetric_channel(n1, x1),
        _symmetric_channel(n2, x2),
        _symmetric_channel(ny, y),
    )
    result = pid(joint, tol=TRUTH_TOLERANCE, max_iter=500)
    if not bool(result.converged):
        raise RuntimeError(f"the truth of this noisy system did not certify (gap {float(result.gap):.3g} bits)")
    return Synthetic(joint, quantities(result))
