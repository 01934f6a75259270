"""The two-stage controller under torch.distributed: two gloo processes, each with
a shard of the probe set, decide as one process on all samples."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastpid.controller import TwoStageController

SAMPLES, SHARD = 1200, 700  # rank 0 holds the first 700 samples, rank 1 the other 500


def probe_features(epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Bits u0, u1, a, b and the label y = (u0, u1, a xor b); each modality shows
    some bits as one of 8 noisy cluster centres.  Epoch 0: modality 0 shows
    (u0, a, b), modality 1 nothing (U0 ≫ U1); epoch 1: (u0, a) and (u1, b)
    (U0 = U1 = S = 1 bit); epoch 2: u0 and (u1, a, b) (no synergy left)."""
    generator = torch.Generator().manual_seed(epoch)
    u0, u1, a, b = torch.randint(0, 2, (4, SAMPLES), generator=generator)
    labels = 4 * u0 + 2 * u1 + (a ^ b)
    nothing = torch.zeros_like(u0)
    shown = [(4 * u0 + 2 * a + b, nothing), (2 * u0 + a, 2 * u1 + b), (u0, 4 * u1 + 2 * a + b)][epoch]
    centres = torch.randn(2, 8, 8, generator=generator)
    features = [
        centres[m][symbols] + 0.05 * torch.randn(SAMPLES, 8, generator=generator) for m, symbols in enumerate(shown)
    ]
    return features, labels


def run_controller(shard: slice, encoders) -> TwoStageController:
    """Three probes (probe_every=1) on ``shard`` of each epoch's probe set."""
    controller = TwoStageController(probe_every=1, n_clusters=8)
    for epoch in range(3):
        with torch.no_grad():
            for encoder in encoders:
                encoder.weight.fill_(epoch)
        features, labels = probe_features(epoch)
        controller.epoch_end(epoch, [block[shard] for block in features], labels[shard], encoders)
    return controller


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        encoders = [torch.nn.Linear(2, 2) for _ in range(2)]
        controller = run_controller(slice(0, SHARD) if rank == 0 else slice(SHARD, None), encoders)
        results[rank] = (controller.history, [encoder.weight.detach().clone() for encoder in encoders])
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_decide_as_one_process_on_all_samples():
    encoders = [torch.nn.Linear(2, 2) for _ in range(2)]
    expected = run_controller(slice(None), encoders).history
    assert [d.active for d in expected] == [(False, True), (True, True), (True, True)]
    assert expected[-1].stage == "joint" and expected[-1].restored_epoch == 1
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(_free_port(), results), nprocs=2)
    for rank in range(2):
        history, weights = results[rank]
        assert history == expected, f"rank {rank} decided otherwise"
        assert all(torch.equal(w, torch.ones(2, 2)) for w in weights)  # the epoch-1 peak restored
