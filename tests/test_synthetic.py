"""Synthetic sources (fastpid/synthetic.py): exact truths, sampling, and convergence of the plug-in PID."""

from __future__ import annotations

import math

import pytest
import torch

import fastpid
from fastpid import synthetic
from fastpid.resampling import quantities

TRUTH_ATOL = 1e-7  # bits


def binary_entropy(q: float) -> float:
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


GENERATORS = {
    "xor": synthetic.xor(),
    "noisy xor": synthetic.noisy(synthetic.xor(), x1=0.1, x2=0.1, y=0.05),
    "redundant": synthetic.redundant(),
    "redundant3": synthetic.redundant(3),
    "unique1": synthetic.unique(),
    "unique2 of 3": synthetic.unique(3, source=2),
    "mixture r,a,s": synthetic.independent(synthetic.redundant(), synthetic.unique(), synthetic.xor()),
    "noisy mixture": synthetic.independent(
        synthetic.noisy(synthetic.redundant(), x1=0.1, x2=0.2), synthetic.noisy(synthetic.unique(source=2), x2=0.1)
    ),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_population_joint_has_the_stated_atoms(name, backend):
    system = GENERATORS[name]
    assert system.joint.dtype == torch.float64 and system.truth.shape == (5,)
    assert abs(system.joint.sum().item() - 1) < 1e-14 and (system.joint >= 0).all()
    result = fastpid.pid(system.joint, backend=backend)
    torch.testing.assert_close(quantities(result), system.truth, rtol=0, atol=TRUTH_ATOL)


def test_analytic_truths():
    """The stated atoms, written out: additivity for the mixture, 1 − h(q) for noisy XOR."""

    def truth(system):
        return [round(v, 12) for v in system.truth.tolist()]

    assert truth(synthetic.xor()) == [0, 0, 0, 1, 1]
    assert truth(synthetic.redundant(4)) == [2, 0, 0, 0, 2]
    assert truth(synthetic.unique(4, source=2)) == [0, 0, 2, 0, 2]
    assert truth(GENERATORS["mixture r,a,s"]) == [1, 1, 0, 1, 3]
    assert GENERATORS["mixture r,a,s"].sizes == (8, 8, 8)
    # y ⊕ x̃1 ⊕ x̃2 flips when an odd number of the three noises do
    odd = (1 - (1 - 2 * 0.1) * (1 - 2 * 0.1) * (1 - 2 * 0.05)) / 2
    assert synthetic.noisy(synthetic.xor(), 0.1, 0.1, 0.05).truth_dict() == pytest.approx(
        {
            "redundancy": 0,
            "unique1": 0,
            "unique2": 0,
            "synergy": 1 - binary_entropy(odd),
            "mi": 1 - binary_entropy(odd),
        },
        abs=TRUTH_ATOL,
    )


def test_noisy_mixture_has_every_atom_interior():
    """The source of the coverage test: every atom at least 0.1 bit from the boundary 0."""
    assert (GENERATORS["noisy mixture"].truth[:4] > 0.1).all()


def test_noisy_without_noise_is_the_system():
    system = GENERATORS["mixture r,a,s"]
    same = synthetic.noisy(system)
    assert torch.equal(same.joint, system.joint)
    torch.testing.assert_close(same.truth, system.truth, rtol=0, atol=TRUTH_ATOL)


def test_independent_lays_out_mixed_radix():
    """x1 = 2 r + a for r from the first system and a from the second."""
    system = synthetic.independent(synthetic.redundant(), synthetic.unique())
    x1, x2, y = system.sample(2000, seed=3)
    r, a = x1 // 2, x1 % 2
    assert torch.equal(x2 // 2, r) and torch.equal(y // 2, r) and torch.equal(y % 2, a)


def test_sample_shapes_range_and_reproducibility():
    system = GENERATORS["unique2 of 3"]
    x1, x2, y = system.sample(50, seed=7, batch_shape=(4, 3))
    assert all(t.shape == (4, 3, 50) and t.dtype == torch.int64 for t in (x1, x2, y))
    assert x1.max() < 3 and x2.max() < 3 and y.max() < 3 and min(t.min() for t in (x1, x2, y)) >= 0
    assert torch.equal(y, x2)
    again = system.sample(50, seed=7, batch_shape=(4, 3))
    assert all(torch.equal(a, b) for a, b in zip((x1, x2, y), again))
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(system.sample(50, seed=generator, batch_shape=(4, 3))[0], x1)
    assert not torch.equal(system.sample(50, seed=8, batch_shape=(4, 3))[0], x1)


def test_sample_frequencies_match_the_joint():
    """Cell frequencies of 200000 draws lie within 5 standard errors of P."""
    system = GENERATORS["noisy mixture"]
    n = 200_000
    freq = fastpid.joint_from_samples(*system.sample(n, seed=0), *system.sizes)
    se = (system.joint * (1 - system.joint) / n).sqrt()
    assert ((freq - system.joint).abs() <= 5 * se + 1e-12).all()


@pytest.mark.parametrize("name", ["noisy xor", "redundant", "unique1", "mixture r,a,s", "noisy mixture"])
def test_plugin_converges_to_the_truth(name):
    """Mean absolute error over 50 draws, summed over the four atoms: falls at least
    twofold per decade of N (100, 1000, 10000) and every atom is within 0.02 bit at N = 10000."""
    system = GENERATORS[name]
    errors = []
    for n in (100, 1000, 10_000):
        x1, x2, y = system.sample(n, seed=n, batch_shape=(50,))
        estimate = quantities(fastpid.pid(fastpid.joint_from_samples(x1, x2, y, *system.sizes)))
        errors.append((estimate - system.truth).abs().mean(0))
    total = [float(e[:4].sum()) for e in errors]
    assert total[1] < total[0] / 2 and total[2] < total[1] / 2, total
    assert errors[-1].max() < 0.02, errors[-1]


def test_errors():
    system = synthetic.xor()
    for n in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            system.sample(n)
    with pytest.raises(ValueError, match="batch_shape"):
        system.sample(3, batch_shape=(2, 0))
    with pytest.raises(TypeError, match="seed"):
        system.sample(3, seed="0")
    with pytest.raises(ValueError, match="symbols must be an int ≥ 2"):
        synthetic.redundant(1)
    with pytest.raises(ValueError, match="symbols must be an int ≥ 2"):
        synthetic.unique(2.0)
    with pytest.raises(ValueError, match="source must be 1 or 2"):
        synthetic.unique(source=0)
    with pytest.raises(ValueError, match="probabilities in"):
        synthetic.noisy(system, x1=1.5)
    with pytest.raises(TypeError, match="Synthetic"):
        synthetic.noisy(system.joint)
    with pytest.raises(TypeError, match="one or more Synthetic"):
        synthetic.independent()
    with pytest.raises(TypeError, match="one or more Synthetic"):
        synthetic.independent(system, system.joint)
