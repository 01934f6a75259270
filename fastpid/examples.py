r"""Example joints P[x1, x2, y]: float64 arrays of shape (n1, n2, ny) that sum to 1.

``CANONICAL`` holds the textbook gates, with x1, x2 (and a, b1, b2) independent
uniform bits:

    XOR     y = x1 ⊕ x2                     dit.pid.bivariates['synergy']
    AND     y = x1 ∧ x2                     dit.pid.bivariates['and']
    OR      y = x1 ∨ x2                     (AND with every symbol relabelled)
    RDN     x1 = x2 = y                     dit.pid.bivariates['redundant']
    UNQ     y = x1                          dit.pid.bivariates['unique 1'], x1 ↔ x2
    COPY    y = 2 x1 + x2                   dit.pid.bivariates['cat']
    SUM     y = x1 + x2                     dit.pid.bivariates['sum']
    RDNXOR  x1 = 2a + b1, x2 = 2a + b2,     dit.pid.bivariates['rdn xor']
            y = 2a + (b1 ⊕ b2)

(dit's 'unique 1' is y = x2: dit numbers its sources from 0.) The joints are
built here, so this module does not need dit; ``DIT_BIVARIATES`` names the dit
counterparts, which the tests compare against. ``CANONICAL_VALUES`` gives the
exact BROJA atoms (R, U1, U2, S) in bits (Bertschinger et al. 2014).

The generators take a ``numpy.random.Generator`` and return new arrays.
"""

from __future__ import annotations

from itertools import product

import numpy as np

BITS = list(product((0, 1), repeat=2))


def uniform_over(outcomes) -> np.ndarray:
    """The joint uniform over the listed (x1, x2, y) outcomes; alphabets 0..max."""
    index = np.array(list(outcomes))
    P = np.zeros(tuple(index.max(axis=0) + 1))
    np.add.at(P, tuple(index.T), 1.0)
    return P / P.sum()


def _frozen(P: np.ndarray) -> np.ndarray:
    P.flags.writeable = False
    return P


CANONICAL: dict[str, np.ndarray] = {
    name: _frozen(uniform_over(outcomes))
    for name, outcomes in {
        "XOR": [(a, b, a ^ b) for a, b in BITS],
        "AND": [(a, b, a & b) for a, b in BITS],
        "OR": [(a, b, a | b) for a, b in BITS],
        "RDN": [(a, a, a) for a in (0, 1)],
        "UNQ": [(a, b, a) for a, b in BITS],
        "COPY": [(a, b, 2 * a + b) for a, b in BITS],
        "SUM": [(a, b, a + b) for a, b in BITS],
        "RDNXOR": [(2 * a + b1, 2 * a + b2, 2 * a + (b1 ^ b2)) for a, b1, b2 in product((0, 1), repeat=3)],
    }.items()
}

DIT_BIVARIATES = {
    "XOR": "synergy",
    "AND": "and",
    "RDN": "redundant",
    "COPY": "cat",
    "SUM": "sum",
    "RDNXOR": "rdn xor",
}

_AND_REDUNDANCY = 0.75 * np.log2(4 / 3)  # 0.311278: I(Y;X1) = I(Y;X2) for AND

CANONICAL_VALUES: dict[str, tuple[float, float, float, float]] = {
    "XOR": (0.0, 0.0, 0.0, 1.0),
    "AND": (_AND_REDUNDANCY, 0.0, 0.0, 0.5),
    "OR": (_AND_REDUNDANCY, 0.0, 0.0, 0.5),
    "RDN": (1.0, 0.0, 0.0, 0.0),
    "UNQ": (0.0, 1.0, 0.0, 0.0),
    "COPY": (0.0, 1.0, 1.0, 0.0),
    "SUM": (0.5, 0.0, 0.0, 1.0),
    "RDNXOR": (1.0, 0.0, 0.0, 1.0),
}


def dirichlet_joint(rng: np.random.Generator, shape, concentration: float = 1.0) -> np.ndarray:
    """P ~ Dirichlet(concentration · 1) over all n1·n2·ny cells."""
    return rng.dirichlet(np.full(int(np.prod(shape)), concentration)).reshape(shape)


def sparse_joint(rng: np.random.Generator, shape, zero_fraction: float, concentration: float = 1.0) -> np.ndarray:
    """A Dirichlet joint with each cell set to 0 with probability ``zero_fraction``.

    At least one cell keeps its mass.
    """
    P = dirichlet_joint(rng, shape, concentration)
    keep = rng.random(shape) >= zero_fraction
    keep.flat[rng.integers(keep.size)] = True
    P = P * keep
    return P / P.sum()


def boundary_joint(rng: np.random.Generator, shape, concentration: float = 1.0) -> np.ndarray:
    """P(x1, x2, y) = P(x1, y) K(x2 | x1): the Markov chain Y - X1 - X2.

    X2 is a garbling of X1, so unique2 = min_Q I_Q(Y; X2 | X1) = 0 exactly (P
    itself attains it): the optimum lies on the boundary of Δ_P.
    """
    n1, n2, ny = shape
    P_x1y = dirichlet_joint(rng, (n1, ny), concentration)
    channel = rng.dirichlet(np.full(n2, concentration), size=n1)
    return np.einsum("ay,ab->aby", P_x1y, channel)


def degenerate_joints(shape, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Named corner cases of the given shape (each axis of size ≥ 2).

    ``empty_x1_symbol``, ``empty_x2_symbol``, ``empty_target_class``: one symbol of
    zero mass; ``point_mass``: all mass on one cell; ``constant_target``: all mass
    on one y; ``independent_target``: P = P(x1, x2) P(y). Deterministic unless
    ``rng`` is given.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    base = dirichlet_joint(rng, shape)
    point_mass = np.zeros(shape)
    point_mass[0, 0, 0] = 1.0
    cases = {
        "empty_x1_symbol": base * (np.arange(shape[0]) != 0)[:, None, None],
        "empty_x2_symbol": base * (np.arange(shape[1]) != 0)[None, :, None],
        "empty_target_class": base * (np.arange(shape[2]) != 0),
        "point_mass": point_mass,
        "constant_target": base * (np.arange(shape[2]) == 0),
        "independent_target": base.sum(2, keepdims=True) * base.sum((0, 1)),
    }
    return {name: P / P.sum() for name, P in cases.items()}


SHAPES = [
    (2, 2, 2),
    (3, 3, 3),
    (2, 3, 4),
    (4, 2, 3),
    (3, 7, 2),
    (5, 5, 5),
    (6, 6, 6),
    (10, 10, 6),
    (4, 12, 8),
    (16, 16, 4),
    (20, 20, 6),
    (32, 8, 16),
    (32, 32, 32),
]
CONCENTRATIONS = (0.1, 0.5, 1.0, 5.0)
ZERO_FRACTIONS = (0.5, 0.9)
DEGENERATE_SHAPES = [(2, 2, 2), (4, 3, 5), (10, 10, 6)]


def accuracy_set(rng: np.random.Generator, max_cells: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, P) pairs for accuracy checks: canonical gates, Dirichlet joints
    (concentrations 0.1 to 5), sparse, boundary and degenerate joints, on
    ``SHAPES`` (2×2×2 to 32×32×32, square and not).

    ``max_cells`` keeps only joints with at most that many cells (dit's cone
    solver is slow at 10³: docs/performance.md). The joints drawn do not depend on it: a smaller
    set is a subset of a larger one from the same seed.
    """
    joints = [(name, P.copy()) for name, P in CANONICAL.items()]
    for shape in SHAPES:
        label = "x".join(map(str, shape))
        joints += [(f"dirichlet{c}_{label}", dirichlet_joint(rng, shape, c)) for c in CONCENTRATIONS]
        joints += [(f"sparse{z}_{label}", sparse_joint(rng, shape, z)) for z in ZERO_FRACTIONS]
        joints.append((f"boundary_{label}", boundary_joint(rng, shape)))
    for shape in DEGENERATE_SHAPES:
        label = "x".join(map(str, shape))
        joints += [(f"{name}_{label}", P) for name, P in degenerate_joints(shape, rng).items()]
    return [(name, P) for name, P in joints if max_cells is None or P.size <= max_cells]


# Batched families for the robustness fuzz (bench/stress.py, tests/test_robustness.py):
# each returns ``count`` joints of one shape as a (count, n1, n2, ny) float64 array.


def plugin_batch(rng: np.random.Generator, shape, count: int, samples: int) -> np.ndarray:
    """Plug-in joints: ``samples`` draws from a Dirichlet(1) joint each, as frequencies."""
    truth = rng.dirichlet(np.ones(int(np.prod(shape))), size=count)
    return (rng.multinomial(samples, truth) / samples).reshape((count, *shape))


def dirichlet_batch(rng: np.random.Generator, shape, count: int, concentration: float) -> np.ndarray:
    """Dirichlet(concentration) joints; below ~0.1 most cells are many orders of magnitude
    below the largest (and some underflow to exact zeros)."""
    P = rng.dirichlet(np.full(int(np.prod(shape)), concentration), size=count)
    return (P / P.sum(1, keepdims=True)).reshape((count, *shape))


def deterministic_batch(rng: np.random.Generator, shape, count: int) -> np.ndarray:
    """Exact zeros on the optimum's face: y = f_m(x1, x2) for a mixture of one to three
    random maps f_m (copies and gates among them), with input masses from Dirichlet(1);
    half the joints have noise ε = 10^-U(1, 8) on y (gates with noise)."""
    n1, n2, ny = shape
    inputs = rng.dirichlet(np.ones(n1 * n2), size=count).reshape(count, n1, n2)
    P = np.zeros((count, n1, n2, ny))
    maps = rng.integers(1, 4, size=count)
    weights = rng.dirichlet(np.ones(3), size=count) * (np.arange(3) < maps[:, None])
    weights /= weights.sum(1, keepdims=True)
    rows = np.arange(count)[:, None, None]
    for m in range(3):
        f = rng.integers(ny, size=(count, n1, n2))
        np.add.at(
            P, (rows, np.arange(n1)[None, :, None], np.arange(n2)[None, None, :], f), weights[:, m, None, None] * inputs
        )
    noise = np.where(rng.random(count) < 0.5, 0.0, 10.0 ** -rng.uniform(1, 8, size=count))
    P = (1 - noise)[:, None, None, None] * P + noise[:, None, None, None] * inputs[..., None] / ny
    return P / P.sum((1, 2, 3), keepdims=True)


def near_degenerate_batch(rng: np.random.Generator, shape, count: int) -> np.ndarray:
    """Dirichlet(1) joints with one symbol of x1, x2 or y scaled down by 10^-U(3, 15):
    marginals with a near-empty symbol."""
    P = rng.dirichlet(np.ones(int(np.prod(shape))), size=count).reshape((count, *shape))
    axis = rng.integers(3, size=count)
    for a in range(3):
        chosen = axis == a
        symbol = rng.integers(shape[a], size=int(chosen.sum()))
        index = [slice(None)] * 4
        index[0], index[a + 1] = np.nonzero(chosen)[0], symbol
        P[tuple(index)] *= 10.0 ** -rng.uniform(3, 15, size=int(chosen.sum()))[:, None, None]
    return P / P.sum((1, 2, 3), keepdims=True)
