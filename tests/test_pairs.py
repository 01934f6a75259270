"""PID of every pair of modalities (fastpid/pairs.py) against one fastpid.pid call per pair."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch
from conftest import FIELDS, certified_bound

import fastpid


def modalities(generator, sizes, shape):
    """Symbols of several modalities and a target that depends on the first three."""
    xs = [torch.randint(0, n, shape, generator=generator) for n in sizes]
    y = (xs[0] + xs[1] * xs[2] + torch.randint(0, 2, shape, generator=generator)) % 4
    return xs, y


@pytest.mark.parametrize("shape", [(300,), (2, 3, 200)])
def test_every_pair_equals_its_own_pid(shape, backend):
    sizes = (2, 5, 3, 4)
    xs, y = modalities(torch.Generator().manual_seed(0), sizes, shape)
    results = fastpid.pid_pairs(xs, y, backend=backend, return_q=True)
    assert list(results) == list(combinations(range(4), 2))
    for (i, j), result in results.items():
        single = fastpid.pid(fastpid.joint_from_samples(xs[i], xs[j], y), backend=backend, return_q=True)
        assert result.q.shape == single.q.shape == (*shape[:-1], sizes[i], sizes[j], 4)
        for name in FIELDS:
            got, want = getattr(result, name), getattr(single, name)
            assert got.shape == shape[:-1]
            bound = result.gap.clamp(min=0) + single.gap.clamp(min=0) + 1e-12
            assert ((got - want).abs() <= bound).all(), (i, j, name, got, want)
        torch.testing.assert_close(result.q.sum(-2), single.q.sum(-2), rtol=0, atol=1e-12)  # Q(x1, y) = P(x1, y)


def test_given_sizes_pad_and_change_no_atom():
    xs, y = modalities(torch.Generator().manual_seed(1), (3, 3, 2), (400,))
    inferred = fastpid.pid_pairs(xs, y)
    padded = fastpid.pid_pairs(xs, y, sizes=[6, None, 4], ny=7, return_q=True)
    assert padded[(0, 2)].q.shape == (6, 4, 7) and padded[(1, 2)].q.shape == (3, 4, 7)
    for pair in inferred:
        for name in FIELDS:
            bound = certified_bound(inferred[pair], padded[pair])
            assert abs(float(getattr(inferred[pair], name)) - float(getattr(padded[pair], name))) <= bound


def test_two_modalities_are_one_pid():
    xs, y = modalities(torch.Generator().manual_seed(2), (2, 2, 2), (100,))
    ((pair, result),) = fastpid.pid_pairs(xs[1:], y).items()
    single = fastpid.pid(fastpid.joint_from_samples(xs[1], xs[2], y))
    assert pair == (0, 1) and result.q is None
    assert float(result.synergy) == pytest.approx(float(single.synergy), abs=certified_bound(result, single))


def test_errors():
    xs, y = modalities(torch.Generator().manual_seed(3), (2, 3, 2), (50,))
    with pytest.raises(TypeError, match="at least two"):
        fastpid.pid_pairs(xs[:1], y)
    with pytest.raises(TypeError, match="at least two"):
        fastpid.pid_pairs(torch.stack(xs), y)
    with pytest.raises(ValueError, match="one alphabet size per modality"):
        fastpid.pid_pairs(xs, y, sizes=[2, 3])
    with pytest.raises(ValueError, match="out of range"):
        fastpid.pid_pairs(xs, y, sizes=[2, 2, 2])
    with pytest.raises(ValueError, match="same batch shape"):
        fastpid.pid_pairs([xs[0], xs[1][:40]], y)
    with pytest.raises(TypeError, match="integer symbols"):
        fastpid.pid_pairs([xs[0], xs[1].float()], y)
    with pytest.raises(ValueError, match="unknown backend"):
        fastpid.pid_pairs(xs, y, backend="gpu")
