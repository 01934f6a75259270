"""Joints from data (fastpid/joints.py) against plain references, gradcheck, errors, and gloo."""

from __future__ import annotations

import itertools
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastpid


def counted_joint(x1, x2, y, shape):
    """Plain reference: count every sample into its cell, one at a time."""
    joint = np.zeros(shape)
    for a, b, c in zip(x1.tolist(), x2.tolist(), y.tolist()):
        joint[a, b, c] += 1
    return joint / len(x1)


def random_symbols(generator, shape, sizes):
    return [torch.randint(0, n, shape, generator=generator) for n in sizes]


@pytest.mark.parametrize("sizes", [(2, 2, 2), (3, 5, 4), (1, 7, 3)])
@pytest.mark.parametrize("samples", [1, 10, 257])
def test_samples_match_counting(sizes, samples):
    generator = torch.Generator().manual_seed(samples)
    x1, x2, y = random_symbols(generator, (samples,), sizes)
    joint = fastpid.joint_from_samples(x1, x2, y, *sizes)
    np.testing.assert_allclose(joint.numpy(), counted_joint(x1, x2, y, sizes), rtol=0, atol=1e-15)


def test_samples_batched_equals_one_at_a_time():
    generator = torch.Generator().manual_seed(1)
    sizes = (3, 4, 2)
    x1, x2, y = random_symbols(generator, (2, 3, 50), sizes)
    batched = fastpid.joint_from_samples(x1, x2, y, *sizes)
    assert batched.shape == (2, 3, *sizes)
    for i, j in itertools.product(range(2), range(3)):
        single = fastpid.joint_from_samples(x1[i, j], x2[i, j], y[i, j], *sizes)
        torch.testing.assert_close(batched[i, j], single, rtol=0, atol=0)


def test_samples_default_sizes_counts_and_dtype():
    x1, x2, y = torch.tensor([0, 2, 2]), torch.tensor([1, 0, 1]), torch.tensor([0, 0, 3])
    counts = fastpid.joint_from_samples(x1, x2, y, normalize=False, dtype=torch.float32)
    assert counts.shape == (3, 2, 4) and counts.dtype == torch.float32
    assert counts.sum() == 3 and counts[2, 1, 3] == 1


def soft_reference(p1, p2, y, ny):
    """(1/N) Σ_n p1_n ⊗ p2_n ⊗ onehot(y_n), sample by sample."""
    joint = torch.zeros(p1.shape[-1], p2.shape[-1], ny, dtype=p1.dtype)
    for n in range(len(y)):
        joint[:, :, y[n]] += torch.outer(p1[n], p2[n])
    return joint / len(y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes", [(2, 3, 2), (5, 4, 3)])
def test_probs_match_reference(dtype, sizes):
    n1, n2, ny = sizes
    generator = torch.Generator().manual_seed(2)
    p1 = torch.rand(40, n1, generator=generator, dtype=dtype).softmax(-1)
    p2 = torch.rand(40, n2, generator=generator, dtype=dtype).softmax(-1)
    y = torch.randint(0, ny, (40,), generator=generator)
    joint = fastpid.joint_from_probs(p1, p2, y, ny)
    torch.testing.assert_close(joint, soft_reference(p1, p2, y, ny))
    torch.testing.assert_close(fastpid.joint_from_probs(p1.log(), p2.log(), y, ny, logits=True), joint)


def test_probs_of_one_hot_rows_is_the_sample_joint():
    generator = torch.Generator().manual_seed(3)
    x1, x2, y = random_symbols(generator, (2, 30), (3, 4, 2))
    p1 = torch.nn.functional.one_hot(x1, 3).double()
    p2 = torch.nn.functional.one_hot(x2, 4).double()
    torch.testing.assert_close(fastpid.joint_from_probs(p1, p2, y, 2), fastpid.joint_from_samples(x1, x2, y, 3, 4, 2))


def test_probs_gradcheck():
    generator = torch.Generator().manual_seed(4)
    logits1 = torch.randn(8, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    logits2 = torch.randn(8, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (8,), generator=generator)
    assert torch.autograd.gradcheck(lambda a, b: fastpid.joint_from_probs(a, b, y, 3, logits=True), (logits1, logits2))
    # through the PID: logits -> joint -> atoms
    assert torch.autograd.gradcheck(
        lambda a, b: fastpid.pid(fastpid.joint_from_probs(a, b, y, 3, logits=True), tol=1e-12).synergy,
        (logits1, logits2),
        eps=1e-6,
        atol=1e-5,
    )


SYMBOLS = torch.tensor([0, 1, 1])


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((SYMBOLS, SYMBOLS, torch.tensor([0, 1])), {}, ValueError, "same batch shape"),
        ((SYMBOLS, SYMBOLS, torch.tensor([0, 1, 2])), {"ny": 2}, ValueError, "out of range"),
        ((SYMBOLS, -SYMBOLS, SYMBOLS), {}, ValueError, "negative symbol"),
        ((SYMBOLS.float(), SYMBOLS, SYMBOLS), {}, TypeError, "integer symbols"),
        ((torch.zeros(0, dtype=torch.long),) * 3, {}, ValueError, "N ≥ 1"),
        ((SYMBOLS, SYMBOLS, SYMBOLS), {"n1": 0}, ValueError, "positive int"),
        (
            ("01", SYMBOLS, SYMBOLS),
            {},
            TypeError,
            "x1 must be a tensor, numpy array or list of integer symbols, got str",
        ),
    ],
)
def test_samples_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastpid.joint_from_samples(*args, **kwargs)


PROBS = torch.full((3, 2), 0.5)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (
            (PROBS, torch.full((4, 2), 0.5), SYMBOLS),
            {},
            ValueError,
            r"must share their batch shape and N; got p1: \(3, 2\), p2: \(4, 2\), y: \(3,\)",
        ),
        ((PROBS, PROBS, torch.tensor([0, 1, 5])), {"ny": 2}, ValueError, "out of range"),
        ((torch.tensor([[1.5, -0.5]] * 3), PROBS, SYMBOLS), {}, ValueError, "negative"),
        ((torch.full((3, 2), 0.7), PROBS, SYMBOLS), {}, ValueError, "sum to 1"),
        ((torch.full((3, 2), float("nan")), PROBS, SYMBOLS), {"logits": True}, ValueError, "NaN"),
        ((torch.zeros(0, 2), torch.zeros(0, 2), SYMBOLS[:0]), {}, ValueError, "N ≥ 1"),
        ((torch.ones(3, 2, dtype=torch.long), PROBS, SYMBOLS), {}, TypeError, "floating-point"),
        ((PROBS, PROBS, SYMBOLS.float()), {}, TypeError, "integer symbols"),
    ],
)
def test_probs_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastpid.joint_from_probs(*args, **kwargs)


def test_all_reduce_without_process_group_normalises_only():
    counts = torch.tensor([[[1.0, 3.0]]])
    torch.testing.assert_close(fastpid.all_reduce_joint(counts), counts / 4)
    assert fastpid.all_reduce_joint(counts, normalize=False) is counts


def test_label_count_without_process_group_is_the_local_one():
    assert fastpid.all_reduce_label_count(torch.tensor([[0, 4], [2, 1]])) == 5
    with pytest.raises(TypeError, match="labels must hold integer symbols"):
        fastpid.all_reduce_label_count(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="labels holds a negative symbol"):
        fastpid.all_reduce_label_count(torch.tensor([0, -1]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reduce_shard(rank, world, port, x1, x2, y, logits, results):
    """One gloo process: the joint of its shard of the samples, all-reduced."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        shard = slice(rank * 7, None if rank == world - 1 else (rank + 1) * 7)  # unequal shards
        counts = fastpid.joint_from_samples(x1[shard], x2[shard], y[shard], 3, 4, 2, normalize=False)
        soft = logits[shard].clone().requires_grad_()
        soft_joint = fastpid.all_reduce_joint(
            fastpid.joint_from_probs(soft, soft[:, :2], y[shard], 2, logits=True, normalize=False)
        )
        soft_joint.sum().backward()
        results[rank] = (
            fastpid.all_reduce_joint(counts),
            soft_joint.detach(),
            soft.grad is not None,
            fastpid.all_reduce_label_count(y[shard] + 3 * rank),
        )  # the shards' counts differ
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_all_reduce_equals_the_joint_of_all_samples():
    generator = torch.Generator().manual_seed(5)
    x1, x2, y = random_symbols(generator, (20,), (3, 4, 2))
    logits = torch.randn(20, 3, generator=generator, dtype=torch.float64)
    results = mp.Manager().dict()
    mp.spawn(_reduce_shard, args=(2, _free_port(), x1, x2, y, logits, results), nprocs=2)
    expected = fastpid.joint_from_samples(x1, x2, y, 3, 4, 2)
    expected_soft = fastpid.joint_from_probs(logits, logits[:, :2], y, 2, logits=True)
    label_count = max(int(y[:7].max()) + 1, int(y[7:].max()) + 4)
    for rank in range(2):
        hard, soft, has_grad, labels = results[rank]
        assert labels == label_count
        torch.testing.assert_close(hard, expected, rtol=0, atol=1e-15)
        torch.testing.assert_close(soft, expected_soft)
        assert has_grad


def test_numpy_lists_and_numpy_integers_are_taken():
    """numpy arrays, lists and numpy integers (sizes, seeds) work as tensors and ints do."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.integers(3, size=300), rng.integers(2, size=300)
    y = (x1 + x2) % 3
    reference = fastpid.joint_from_samples(torch.from_numpy(x1), torch.from_numpy(x2), torch.from_numpy(y), 3, 2, 3)
    for args in ((x1, x2, y), (list(x1), list(x2), list(y))):
        torch.testing.assert_close(fastpid.joint_from_samples(*args, np.int64(3), np.int32(2), np.int64(3)), reference)
    probs = rng.dirichlet(np.ones(4), size=300)
    assert fastpid.joint_from_probs(probs, probs, y).shape == (4, 4, 3)
    tensors = [torch.from_numpy(v) for v in (x1, x2, y)]
    expected = fastpid.bootstrap(*tensors, n_resamples=10, seed=3)
    ours = fastpid.bootstrap(x1, x2, y, n_resamples=np.int64(10), seed=np.int64(3))
    torch.testing.assert_close(ours.replicates, expected.replicates)
    pairs = fastpid.pid_pairs([x1, x2, y], y)
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}
    counts = fastpid.joint_from_samples(x1, x2, y, normalize=False, dtype=torch.int64)
    assert counts.dtype == torch.int64 and int(counts.sum()) == 300
    with pytest.raises(ValueError, match="floating dtype for a normalised joint"):
        fastpid.joint_from_samples(x1, x2, y, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"y must hold integer symbols.*numpy.unique"):
        fastpid.joint_from_samples(x1, x2, np.array(["a", "b", "c"] * 100))


def test_probs_half_precision_and_one_hot_labels():
    """Half-precision predictions give a float32 joint (not a silent float16 one); a one-hot y
    is named as such; shape errors show the shapes as passed."""
    y = torch.randint(3, (200,))
    for dtype in (torch.float16, torch.bfloat16):
        joint = fastpid.joint_from_probs(
            torch.randn(200, 4, dtype=dtype), torch.randn(200, 5, dtype=dtype), y, logits=True
        )
        assert joint.dtype == torch.float32 and abs(float(joint.sum()) - 1) < 1e-5
    with pytest.raises(
        ValueError,
        match=r"y must hold class indices of shape \(200,\), got shape \(200, 3\), "
        r"which looks one-hot; pass y.argmax\(-1\)",
    ):
        fastpid.joint_from_probs(
            torch.randn(200, 4), torch.randn(200, 5), torch.nn.functional.one_hot(y, 3), logits=True
        )
    with pytest.raises(ValueError, match=r"got p1: \(200, 4\), p2: \(150, 5\), y: \(200,\)"):
        fastpid.joint_from_probs(torch.randn(200, 4), torch.randn(150, 5), y, logits=True)
