r"""One training harness for every method: a schedule decides, epoch by epoch, what trains.

Stage "unimodal": each active modality m trains its encoder and its own head,

    L_1 = Σ_{m active} CE(head_m(encoder_m(x_m)), y),

so a paused modality's parameters get no gradient and do not move.  Stage "joint":
the whole late-fusion model trains on

    L_2 = CE(z, y) + w Σ_m CE(z_m, y)        (z fused logits, z_m unimodal logits),

with w = ``head_weight`` (0.6 in the two-stage method, 0 for plain joint training).
A fresh Adam optimiser starts at each stage.  An optional ``gradient_hook`` may
rewrite the gradients of a joint step before the optimiser applies them (OGM-GE).

The schedule is a ``two_stage.Schedule`` (``stage``, ``active``, ``due(epoch)``,
``epoch_end(epoch, features, labels, encoders) -> Decision``, ``history``, and
optionally ``discretize_seconds``): ``TwoStageController`` or
``baselines.FixedSchedule``.  It is passed the modalities' branches (encoder_m with
head_m) as ``encoders``, so a restored initial state keeps each head matched to its
encoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from .models import MultimodalNet
from .two_stage import Decision

Split = tuple[Sequence[torch.Tensor], torch.Tensor]  # (one (N, d_m) float tensor per view, (N,) int labels)
# A fresh optimiser per stage; "sgd" as in the OGM-GE and MMPareto authors' code
# (momentum 0.9, weight decay 1e-4).
OPTIMIZERS = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4),
}
GradientHook = Callable[[MultimodalNet, list[torch.Tensor], torch.Tensor, int], None]
# (net, fused logits, unimodal logits, labels) -> the loss, its gradients left in the parameters
JointBackward = Callable[[MultimodalNet, torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass
class RunRecord:
    """The outcome of one run.

    Accuracies are on the test split: ``fused_accuracy`` of the fused logits,
    ``probe_accuracy[m]`` of a logistic regression fitted on modality m's frozen
    train features.  Times in seconds: ``wall_seconds`` the whole run (training and
    evaluation), ``unimodal_seconds`` stage 1 (probes included), ``monitor_seconds``
    the probes (encoding the probe set, then the schedule's ``epoch_end``: PID and
    decision), ``discretize_seconds`` the part of them spent fitting the
    discretisers (PCA and k-means), ``bias_seconds`` the noise-aware rule's bias
    resamples (solved on a background thread, outside ``monitor_seconds``, by
    default), and ``monitor_share`` = monitor / unimodal (None without stage 1).  ``epochs``: one entry per epoch
    (stage, active set, mean training loss, fused test accuracy and each
    modality's ridge-probe test accuracy: the learning curves); ``decisions``: the schedule's history,
    PID values (bits) keyed by modality pair "i-j"."""

    method: str
    seed: int
    fused_accuracy: float
    probe_accuracy: list[float]
    wall_seconds: float
    unimodal_seconds: float
    monitor_seconds: float
    discretize_seconds: float
    bias_seconds: float
    monitor_share: float | None
    unimodal_epochs: int
    joint_epochs: int
    epochs: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    optimizer: str = ""  # the optimiser and learning rate, e.g. "adam, lr 0.003"

    def to_dict(self) -> dict:
        return asdict(self)


def _check_split(name: str, split: Split, n_modalities: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``split`` as (views, labels): one float (N, d_m) tensor per modality and (N,) int labels."""
    if not (isinstance(split, (tuple, list)) and len(split) == 2):
        raise TypeError(f"{name} must be a pair (views, labels), got {type(split).__name__}")
    views, labels = split
    if not (
        isinstance(labels, torch.Tensor)
        and labels.dim() == 1
        and not labels.is_floating_point()
        and labels.dtype != torch.bool
    ):
        raise ValueError(f"{name} labels must be a 1-D integer tensor (N,)")
    if len(views) != n_modalities:
        raise ValueError(f"{name} has {len(views)} views, the net has {n_modalities} encoders")
    for m, view in enumerate(views):
        if not (
            isinstance(view, torch.Tensor) and view.is_floating_point() and view.dim() == 2 and len(view) == len(labels)
        ):
            shape = tuple(view.shape) if isinstance(view, torch.Tensor) else type(view).__name__
            raise ValueError(
                f"{name} view {m} must be a float tensor (N, d) with N = {len(labels)} labels, got {shape}"
            )
    return list(views), labels


def joint_loss(
    fused: torch.Tensor, unimodal: Sequence[torch.Tensor], labels: torch.Tensor, head_weight: float
) -> torch.Tensor:
    """L_2 = CE(z, y) + w Σ_m CE(z_m, y) (mean over the batch)."""
    loss = F.cross_entropy(fused, labels)
    if head_weight:
        loss = loss + head_weight * sum(F.cross_entropy(logits, labels) for logits in unimodal)
    return loss


def unimodal_loss(
    net: MultimodalNet, views: Sequence[torch.Tensor], labels: torch.Tensor, active: Sequence[bool]
) -> torch.Tensor:
    """L_1 = Σ_{m active} CE(head_m(encoder_m(x_m)), y); inactive modalities are not run."""
    return sum(
        F.cross_entropy(net.heads[m](net.encoders[m](views[m])), labels) for m in range(net.n_modalities) if active[m]
    )


@torch.no_grad()
def fused_accuracy(net: MultimodalNet, views: Sequence[torch.Tensor], labels: torch.Tensor) -> float:
    """Share of samples whose fused logits peak at the label."""
    net.eval()
    return float((net(views)[0].argmax(1) == labels).float().mean())


def curves(net: MultimodalNet, train: Split, test: Split) -> dict:
    """One epoch's point of the learning curves: fused test accuracy, each modality's
    ridge-probe test accuracy, and the seconds they took."""
    started = time.perf_counter()
    fused = fused_accuracy(net, *test)
    probes = ridge_probe_accuracy(net, train, test)
    return {"fused_accuracy": fused, "probe_accuracy": probes, "seconds": time.perf_counter() - started}


@torch.no_grad()
def ridge_probe_accuracy(net: MultimodalNet, train: Split, test: Split, ridge: float = 1e-3) -> list[float]:
    """Per modality: test accuracy of a least-squares linear probe (ridge regression of the
    one-hot labels on the frozen encoder's standardised train features, in closed form):
    cheap enough to take at every epoch, where ``linear_probe_accuracy`` is the final word."""
    net.eval()
    (train_views, train_labels), (test_views, test_labels) = train, test
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    targets = F.one_hot(train_labels, n_classes).to(torch.float64)
    accuracies = []
    for encoder, train_view, test_view in zip(net.encoders, train_views, test_views):
        features, test_features = encoder(train_view).double(), encoder(test_view).double()
        mean, std = features.mean(0), features.std(0).clamp_min(1e-12)
        design = torch.cat([(features - mean) / std, torch.ones(len(features), 1, dtype=torch.float64)], 1)
        gram = design.T @ design + ridge * len(design) * torch.eye(design.shape[1], dtype=torch.float64)
        weights = torch.linalg.solve(gram, design.T @ targets)
        test_design = torch.cat(
            [(test_features - mean) / std, torch.ones(len(test_features), 1, dtype=torch.float64)], 1
        )
        accuracies.append(float(((test_design @ weights).argmax(1) == test_labels).double().mean()))
    return accuracies


@torch.no_grad()
def linear_probe_accuracy(net: MultimodalNet, train: Split, test: Split) -> list[float]:
    """Per modality: test accuracy of a logistic regression (on standardised features)
    fitted on the frozen encoder's train features."""
    net.eval()
    (train_views, train_labels), (test_views, test_labels) = train, test
    accuracies = []
    for encoder, train_view, test_view in zip(net.encoders, train_views, test_views):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        probe.fit(encoder(train_view).cpu().numpy(), train_labels.cpu().numpy())
        accuracies.append(float(probe.score(encoder(test_view).cpu().numpy(), test_labels.cpu().numpy())))
    return accuracies


def train(
    schedule,
    net: MultimodalNet,
    train_split: Split,
    test_split: Split,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 256,
    seed: int = 0,
    probe_size: int = 1280,
    probe_seed: int | None = None,
    head_weight: float = 0.6,
    optimizer: str = "adam",
    gradient_hook: GradientHook | None = None,
    joint_backward: JointBackward | None = None,
    method: str = "",
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> RunRecord:
    """Train ``net`` for ``epochs`` epochs as ``schedule`` decides and evaluate it.

    Before each epoch the schedule's ``stage`` and ``active`` say what trains; after
    it, the schedule gets the features of a fixed probe set (``probe_size`` random
    train samples, or all of them if fewer, drawn under ``probe_seed``, default
    ``seed``) when a probe is ``due``.  ``seed`` seeds
    torch's global generator and the shuffling, so a run is repeatable given the
    net's initial weights.
    ``gradient_hook(net, features, labels, epoch)`` runs between backward and the
    optimiser step of every joint batch; ``joint_backward(net, fused, unimodal,
    labels)`` replaces a joint batch's loss and backward (returning the loss).
    """
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if not (isinstance(probe_size, int) and probe_size >= 1):
        raise ValueError(f"probe_size must be a positive int, got {probe_size!r}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    shuffler = torch.Generator().manual_seed(seed)
    net.to(device)
    train_views, train_labels = _on(device, *_check_split("train_split", train_split, net.n_modalities))
    test_views, test_labels = _on(device, *_check_split("test_split", test_split, net.n_modalities))
    n_train = len(train_labels)
    probe_draw = shuffler if probe_seed is None else torch.Generator().manual_seed(probe_seed)
    probe_index = torch.randperm(n_train, generator=probe_draw)[:probe_size].to(device)
    probe_views, probe_labels = [v[probe_index] for v in train_views], train_labels[probe_index]
    branches = net.branches()

    stage, step = None, None
    # The learning curves' evaluation is the harness's, not training: kept out of the stage times.
    unimodal_seconds, monitor_seconds, curve_seconds, log = 0.0, 0.0, 0.0, []
    last_features, trained = [None] * net.n_modalities, [False] * net.n_modalities
    bar = tqdm(range(epochs), desc=method or "train", disable=not progress, leave=False)
    for epoch in bar:
        if schedule.stage != stage:
            if stage == "joint":
                raise RuntimeError(f"the schedule went back to {schedule.stage!r} after joint training (epoch {epoch})")
            stage = schedule.stage
            if stage == "joint":
                unimodal_seconds = time.perf_counter() - started - curve_seconds if epoch else 0.0
            step = OPTIMIZERS[optimizer](net.parameters(), lr)
        active = tuple(schedule.active)
        if not any(active):
            raise RuntimeError(f"the schedule paused every modality in stage {stage!r} (epoch {epoch})")
        net.train()
        total, batches = 0.0, 0
        for index in torch.randperm(n_train, generator=shuffler).to(device).split(batch_size):
            views, labels = [v[index] for v in train_views], train_labels[index]
            step.zero_grad(set_to_none=True)
            if stage == "joint" and joint_backward is not None:
                fused, unimodal, _ = net(views)
                loss = joint_backward(net, fused, unimodal, labels)
            elif stage == "joint":
                fused, unimodal, features = net(views)
                loss = joint_loss(fused, unimodal, labels, head_weight)
                loss.backward()
                if gradient_hook is not None:
                    gradient_hook(net, features, labels, epoch)
            else:
                loss = unimodal_loss(net, views, labels, active)
                loss.backward()
            step.step()
            total, batches = total + loss.item(), batches + 1
        log.append(
            {
                "epoch": epoch,
                "stage": stage,
                "active": list(active),
                "loss": total / batches,
                **curves(net, (train_views, train_labels), (test_views, test_labels)),
            }
        )
        curve_seconds += log[-1].pop("seconds")
        if stage == "unimodal":
            trained = [was or now for was, now in zip(trained, active)]
            probe_started, probe_features = time.perf_counter(), None
            if schedule.due(epoch):
                net.eval()
                with torch.no_grad():  # an encoder paused since the last probe has the same features
                    probe_features = [
                        encoder(view) if again or last is None else last
                        for encoder, view, again, last in zip(net.encoders, probe_views, trained, last_features)
                    ]
                last_features, trained = probe_features, [False] * net.n_modalities
            schedule.epoch_end(epoch, probe_features, probe_labels, branches)
            if probe_features is not None:
                monitor_seconds += time.perf_counter() - probe_started
        bar.set_postfix(stage=stage, loss=log[-1]["loss"])
    if stage == "unimodal":
        unimodal_seconds = time.perf_counter() - started - curve_seconds

    fused = fused_accuracy(net, test_views, test_labels)
    probes = linear_probe_accuracy(net, (train_views, train_labels), (test_views, test_labels))
    unimodal_epochs = sum(entry["stage"] == "unimodal" for entry in log)
    decisions = [_decision_dict(d) for d in schedule.history]  # first: it waits for pending bias solves
    return RunRecord(
        method=method,
        seed=seed,
        fused_accuracy=fused,
        probe_accuracy=probes,
        wall_seconds=time.perf_counter() - started,
        unimodal_seconds=unimodal_seconds,
        monitor_seconds=monitor_seconds,
        discretize_seconds=getattr(schedule, "discretize_seconds", 0.0),
        bias_seconds=getattr(schedule, "bias_seconds", 0.0),
        monitor_share=monitor_seconds / unimodal_seconds if unimodal_seconds else None,
        unimodal_epochs=unimodal_epochs,
        joint_epochs=epochs - unimodal_epochs,
        epochs=log,
        decisions=decisions,
        optimizer=f"{optimizer}, lr {lr:g}",
    )


def _on(device, views, labels):
    return [view.to(device) for view in views], labels.to(device)


def _decision_dict(decision: Decision) -> dict:
    """A decision as plain JSON-able values; PID values keyed by pair "i-j"."""
    entry = asdict(decision)
    entry["active"] = list(decision.active)
    if decision.pid is not None:
        entry["pid"] = {f"{i}-{j}": dict(values) for (i, j), values in decision.pid.items()}
    return entry
