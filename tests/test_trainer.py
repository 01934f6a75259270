"""The training harness and the methods compared (controller/trainer.py, baselines.py,
models.py) on a tiny synthetic task: view 0 gives the class away, view 1 is noise."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from fastpid.controller.baselines import METHODS, OGMGE, FixedSchedule, MMPareto, min_norm_weight, run_method
from fastpid.controller.data import MultiView, TrainTest
from fastpid.controller.models import MultimodalNet, mlp_net
from fastpid.controller.trainer import linear_probe_accuracy, train
from fastpid.controller.two_stage import Decision

N_CLASSES = 4
FAST = {"epochs": 4, "batch_size": 64, "hidden": 16, "feature_dim": 8, "progress": False}
CONTROLLER = {"probe_every": 2, "n_clusters": 4, "n_components": 3}


def split(n: int, seed: int):
    """View 0: one-hot(y)·4 + N(0, 0.5²) (linearly separable); view 1: N(0, 1) noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    clear = 4 * nn.functional.one_hot(labels, N_CLASSES).float() + 0.5 * torch.randn(n, N_CLASSES, generator=generator)
    noise = torch.randn(n, 5, generator=generator)
    return MultiView((clear, noise), labels)


@pytest.fixture(scope="module")
def data():
    return TrainTest(split(200, 1), split(200, 2))


def config(name: str) -> dict:
    return {**FAST, **(CONTROLLER if name.startswith("controller") else {})}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_returns_a_complete_record(data, name):
    record = run_method(name, data, seed=0, **config(name))
    assert record.method == name and record.seed == 0
    json.dumps(record.to_dict())
    assert 0 <= record.fused_accuracy <= 1 and len(record.probe_accuracy) == 2
    assert record.probe_accuracy[0] > 0.9, "the separable view's probe"
    assert record.unimodal_epochs + record.joint_epochs == 4 == len(record.epochs)
    assert all(math.isfinite(entry["loss"]) for entry in record.epochs)
    assert record.wall_seconds >= record.unimodal_seconds >= record.monitor_seconds >= 0
    assert record.optimizer.startswith("sgd" if name in ("ogm-ge", "mmpareto") else "adam")
    if name in ("joint", "ogm-ge", "mmpareto"):
        assert record.unimodal_epochs == 0 and record.decisions == [] and record.monitor_share is None
    else:
        assert record.unimodal_epochs > 0 and record.joint_epochs > 0
        assert record.decisions[-1]["stage"] == "joint"
        assert [entry["stage"] for entry in record.epochs] == (
            ["unimodal"] * record.unimodal_epochs + ["joint"] * record.joint_epochs
        )
    if name.startswith("controller"):  # probe at the end of epoch 1, then the budget of 2 epochs is spent
        pid = record.decisions[-1]["pid"]["0-1"]
        assert {"redundancy", "unique1", "unique2", "synergy", "mi"} <= set(pid)
        assert record.decisions[-1]["restored_epoch"] == 1
        assert record.monitor_seconds > record.discretize_seconds > 0 and 0 < record.monitor_share <= 1


class Scripted:
    """A schedule that plays a fixed list of (stage, active) and snapshots the branches."""

    def __init__(self, plan):
        self.plan, self.epoch, self.history, self.snapshots = plan, 0, [], []

    stage = property(lambda self: self.plan[self.epoch][0])
    active = property(lambda self: self.plan[self.epoch][1])

    def due(self, epoch):
        return False

    def epoch_end(self, epoch, features, labels, encoders):
        self.snapshots.append([copy.deepcopy(branch.state_dict()) for branch in encoders])
        self.epoch += 1
        decision = Decision(epoch, *self.plan[min(self.epoch, len(self.plan) - 1)], "scripted")
        self.history.append(decision)
        return decision


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[key], after[key]) for key in before)


def test_stage_one_trains_only_the_active_modalities(data):
    torch.manual_seed(0)
    net = mlp_net([4, 5], N_CLASSES, hidden=16, feature_dim=8)
    start = [copy.deepcopy(branch.state_dict()) for branch in net.branches()]
    fusion = copy.deepcopy(net.fusion.state_dict())
    plan = [("unimodal", (True, True)), ("unimodal", (True, False)), ("unimodal", (False, True))]
    schedule = Scripted(plan)
    train(schedule, net, data.train, data.test, epochs=3, batch_size=64, progress=False)
    after = [start, *schedule.snapshots]
    for epoch, (_, active) in enumerate(plan):
        for m in range(2):  # encoder m and head m move exactly when m is active
            assert changed(after[epoch][m], after[epoch + 1][m]) == active[m], (epoch, m)
    assert not changed(fusion, net.fusion.state_dict()), "stage 1 must leave the fusion head alone"


class ProbingScripted(Scripted):
    """``Scripted`` with a probe due after every epoch; keeps the features it is given."""

    def due(self, epoch):
        return self.stage == "unimodal"

    def epoch_end(self, epoch, features, labels, encoders):
        self.features = getattr(self, "features", []) + [features]
        return super().epoch_end(epoch, features, labels, encoders)


def test_a_probe_reencodes_only_the_encoders_that_trained_since_the_last_one(data):
    """Modality 1 pauses for epochs 1-2: its probe features after them are those of the probe
    after epoch 0, by identity (not recomputed), and equal to what its unchanged encoder gives;
    modality 0, trained throughout, is encoded at every probe."""
    torch.manual_seed(0)
    net = mlp_net([4, 5], N_CLASSES, hidden=16, feature_dim=8)
    plan = [("unimodal", (True, True)), ("unimodal", (True, False)), ("unimodal", (True, False))]
    schedule = ProbingScripted(plan + [("unimodal", (True, True))])
    train(schedule, net, data.train, data.test, epochs=3, batch_size=64, progress=False)
    first, second, third = schedule.features
    assert second[1] is first[1] and third[1] is first[1]
    assert second[0] is not first[0] and third[0] is not second[0]
    with torch.no_grad():
        net.eval()
        probe = torch.randperm(200, generator=torch.Generator().manual_seed(0))[:1280]
        assert torch.equal(net.encoders[1](data.train.views[1][probe]), third[1])


@pytest.mark.parametrize("head_weight", [0.0, 0.6])
def test_stage_two_loss_is_fused_plus_weighted_head_losses(data, head_weight):
    torch.manual_seed(0)
    net = mlp_net([4, 5], N_CLASSES, hidden=16, feature_dim=8)
    initial = copy.deepcopy(net)
    record = train(
        FixedSchedule(2, 0),
        net,
        data.train,
        data.test,
        epochs=1,
        batch_size=1000,
        head_weight=head_weight,
        progress=False,
    )
    (views, labels), rows = data.train, torch.arange(200)
    with torch.no_grad():
        features = [encoder(view) for encoder, view in zip(initial.encoders, views)]
        fused = torch.cat(features, 1) @ initial.fusion.weight.T + initial.fusion.bias
        heads = [f @ head.weight.T + head.bias for head, f in zip(initial.heads, features)]

        def cross_entropy(logits):  # −mean_i log softmax(z_i)[y_i]
            return -(logits[rows, labels] - logits.exp().sum(1).log()).mean()

        expected = cross_entropy(fused) + head_weight * sum(cross_entropy(z) for z in heads)
    assert record.epochs[0]["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_fusion_contributions_add_up_to_the_fused_logits():
    net = mlp_net([4, 5, 3], N_CLASSES, hidden=8, feature_dim=6)
    views = [torch.randn(7, d) for d in (4, 5, 3)]
    fused, _, features = net(views)
    torch.testing.assert_close(sum(net.fusion_contributions(features)), fused)


def test_ogm_ge_coefficients_on_a_hand_made_batch():
    labels = torch.tensor([0, 1])
    strong = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p(y): 0.75 and 0.5, s = 1.25
    flat = torch.zeros(2, 2)  # p(y) = 0.5 twice, s = 1
    ogm = OGMGE(alpha=0.1)
    expected = torch.tensor([1 - math.tanh(0.1 * 1.25), 1.0])
    torch.testing.assert_close(ogm.coefficients([strong, flat], labels), expected)
    torch.testing.assert_close(ogm.coefficients([flat, strong], labels), expected.flip(0))
    torch.testing.assert_close(ogm.coefficients([flat, flat], labels), torch.ones(2))
    # three modalities: the reference is the mean of the others' scores, ρ_0 = 1.25 / 1
    three = OGMGE(alpha=0.5).coefficients([strong, flat, flat], labels)
    torch.testing.assert_close(three, torch.tensor([1 - math.tanh(0.5 * 1.25), 1.0, 1.0]))


def test_ogm_ge_scales_the_dominant_encoder_and_adds_noise_of_the_gradient_scale():
    torch.manual_seed(0)
    net = mlp_net([4, 5], N_CLASSES, hidden=64, feature_dim=64)
    views, labels = split(64, 3)
    fused, _, features = net(views)
    nn.functional.cross_entropy(fused, labels).backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    k = OGMGE().coefficients(net.fusion_contributions(features), labels)
    assert k.min() < 1 and k.max() == 1

    OGMGE(noise=False)(net, features, labels, epoch=0)
    for name, p in net.named_parameters():
        if name.startswith("heads"):  # no gradient from CE(z, y)
            continue
        m = int(name.split(".")[1]) if name.startswith("encoders") else None
        scale = k[m] if m is not None and p.dim() == 2 else 1.0  # weights of encoders only
        torch.testing.assert_close(p.grad, grads[name] * scale)

    for name, p in net.named_parameters():
        p.grad = grads[name].clone() if name in grads else None
    OGMGE()(net, features, labels, epoch=0)
    first = net.encoders[0][0].weight  # 64 × 4 entries
    noise = first.grad - k[0] * grads["encoders.0.0.weight"]
    assert noise.std() == pytest.approx(float(grads["encoders.0.0.weight"].std()), rel=0.15)

    for name, p in net.named_parameters():
        p.grad = grads[name].clone() if name in grads else None
    OGMGE(modulation_epochs=(0, 2))(net, features, labels, epoch=3)  # outside: untouched
    assert all(torch.equal(net.get_parameter(name).grad, grad) for name, grad in grads.items())


def test_min_norm_weight_is_the_pareto_point_of_two_gradients():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-0.5, 1.0])  # conflicting: a·b < 0
    w = min_norm_weight(a, b)
    d = w * a + (1 - w) * b
    assert abs(float(d @ (a - b))) < 1e-6  # the min-norm point of the segment: d ⟂ (a − b)
    assert float(d @ a) > 0 and float(d @ b) > 0  # no objective opposes it
    assert min_norm_weight(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])) == 0.999


def test_mmpareto_gives_each_encoder_a_direction_no_objective_opposes():
    """On a batch where an encoder's multimodal and unimodal gradients conflict, the
    integrated gradient has a positive inner product with both; heads keep their own."""
    torch.manual_seed(3)
    net = mlp_net([4, 3], 3, hidden=8, feature_dim=4)
    views, labels = [torch.randn(32, 4), torch.randn(32, 3)], torch.randint(3, (32,))
    fused, unimodal, _ = net(views)
    multimodal = nn.functional.cross_entropy(fused, labels)
    own = [nn.functional.cross_entropy(z, labels) for z in unimodal]
    grads = []
    for loss in (multimodal, *own):
        grads.append(
            [
                torch.autograd.grad(loss, list(e.parameters()), retain_graph=True, allow_unused=True)
                for e in net.encoders
            ]
        )
    head = torch.autograd.grad(own[0], list(net.heads[0].parameters()), retain_graph=True)
    net.zero_grad()
    MMPareto()(net, fused, unimodal, labels)
    for m, encoder in enumerate(net.encoders):
        g = torch.cat([x.flatten() for x in grads[0][m]])
        u = torch.cat([x.flatten() for x in grads[1 + m][m]])
        d = torch.cat([p.grad.flatten() for p in encoder.parameters()])
        if float(g @ u) <= 0:
            assert float(d @ g) > 0 and float(d @ u) > 0
        else:  # equal weights: the sum, rescaled by gamma
            torch.testing.assert_close(d, 1.5 * (g + u))
    torch.testing.assert_close(net.heads[0].weight.grad, head[0])


@pytest.mark.parametrize("name", ["controller", "ogm-ge", "mmpareto"])
def test_runs_repeat_under_a_seed(data, name):
    def outcome(seed):
        record = run_method(name, data, seed=seed, **config(name)).to_dict()
        return {key: value for key, value in record.items() if not key.endswith(("seconds", "share"))}

    first = outcome(5)
    assert outcome(5) == first
    assert outcome(6)["epochs"] != first["epochs"]


def test_linear_probe_is_high_on_a_separable_view_and_chance_on_noise(data):
    identity = MultimodalNet(
        nn.ModuleList([nn.Identity(), nn.Identity()]),
        nn.ModuleList([nn.Linear(4, N_CLASSES), nn.Linear(5, N_CLASSES)]),
        nn.Linear(9, N_CLASSES),
    )
    clear, noise = linear_probe_accuracy(identity, data.train, data.test)
    assert clear > 0.95
    assert abs(noise - 1 / N_CLASSES) < 0.12


def test_clear_errors(data):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        run_method("nope", data, seed=0)
    net = mlp_net([4, 5], N_CLASSES)
    with pytest.raises(ValueError, match="train_split has 1 views, the net has 2 encoders"):
        train(FixedSchedule(2, 0), net, ([data.train[0][0]], data.train[1]), data.test, epochs=1)
    with pytest.raises(ValueError, match=r"test_split view 1 must be a float tensor \(N, d\) with N = 200"):
        train(FixedSchedule(2, 0), net, data.train, ([data.test[0][0], data.test[0][1][:5]], data.test[1]), epochs=1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        train(FixedSchedule(2, 0), net, data.train, data.test, epochs=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="at least 2 encoders"):
        MultimodalNet(nn.ModuleList([nn.Identity()]), nn.ModuleList([nn.Identity()]), nn.Linear(1, 2))
