"""The two-stage controller (controller/two_stage.py): decisions on scripted PID
trajectories, resume from a state_dict, and measurements on real features."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import random

import pytest
import torch
from conftest import DEVICES

from fastpid.controller import Decision, TwoStageController


def pair_values(u1: float, u2: float, synergy: float, redundancy: float = 0.1) -> dict[str, float]:
    """PID values (bits) of one pair, as ``measure`` returns them."""
    return {
        "redundancy": redundancy,
        "unique1": u1,
        "unique2": u2,
        "synergy": synergy,
        "mi": redundancy + u1 + u2 + synergy,
        "gap": 0.0,
    }


def two(u1: float, u2: float, synergy: float, redundancy: float = 0.1) -> dict:
    return {(0, 1): pair_values(u1, u2, synergy, redundancy)}


def linear_encoders(count: int = 2) -> list[torch.nn.Linear]:
    return [torch.nn.Linear(3, 2) for _ in range(count)]


def train(encoders, epoch: int) -> None:
    """Stand-in for an epoch of training: every weight becomes the epoch number, in place."""
    with torch.no_grad():
        for encoder in encoders:
            for parameter in encoder.parameters():
                parameter.fill_(epoch)


def weights_epoch(encoders) -> set[float]:
    """The epoch numbers the encoders' weights hold (one value after ``train``)."""
    return {
        float(v) for encoder in encoders for parameter in encoder.parameters() for v in parameter.detach().flatten()
    }


def run(controller, trajectory, encoders=None, first_epoch: int = 0) -> list[Decision]:
    """Step through one probe per entry, at epochs first_epoch + 4, + 9, … (probe_every=5)."""
    decisions = []
    for k, values in enumerate(trajectory):
        epoch = first_epoch + 5 * k + 4
        if encoders is not None:
            train(encoders, epoch)
        decisions.append(controller.step(epoch, values, encoders))
    return decisions


def test_pause_reverse_and_balance_of_two_modalities():
    controller = TwoStageController()
    trajectory = [two(1.0, 0.2, 0.1), two(0.2, 1.0, 0.2), two(0.5, 0.25, 0.3), two(0.75, 0.25, 0.4)]
    decisions = run(controller, trajectory)
    assert [d.active for d in decisions] == [(False, True), (True, False), (True, True), (True, True)]
    assert [d.stage for d in decisions] == ["unimodal"] * 4
    assert "pause 0: U0/U1 = 5 > 3" in decisions[0].reason
    assert "pause 1: U1/U0 = 5 > 3" in decisions[1].reason
    assert "balanced: largest U0/U1 = 2 ≤ 3" in decisions[2].reason
    assert "balanced: largest U0/U1 = 3 ≤ 3" in decisions[3].reason  # the threshold is strict
    assert all(d.pid is values for d, values in zip(decisions, trajectory))
    assert controller.history == decisions and controller.active == (True, True)


def test_zero_uniqueness_is_floored_not_divided_by():
    controller = TwoStageController()
    both_zero, one_zero = controller.step(4, two(0.0, 0.0, 0.1)), controller.step(9, two(0.0, 0.5, 0.2))
    assert both_zero.active == (True, True)
    assert one_zero.active == (True, False) and "U1/U0 = 5e+05" in one_zero.reason


def test_mi_criterion_uses_the_mutual_informations():
    values = two(0.4, 0.1, 0.1, redundancy=1.0)  # U0/U1 = 4, I(Y;X0)/I(Y;X1) = 1.4 / 1.1
    assert TwoStageController().step(4, values).active == (False, True)
    by_mi = TwoStageController(criterion="mi").step(4, values)
    assert by_mi.active == (True, True) and "I(Y;X0)/I(Y;X1) = 1.27" in by_mi.reason
    dominant = TwoStageController(criterion="mi").step(4, two(3.5, 0.1, 0.1, redundancy=0.5))
    assert dominant.active == (False, True)  # 4.0 / 0.6


def test_hand_over_when_synergy_drops_restores_the_peak_weights():
    controller, encoders = TwoStageController(), linear_encoders()
    decisions = run(controller, [two(1, 1, 0.2), two(1, 1, 0.5), two(1, 1, 0.41), two(1, 1, 0.39)], encoders)
    assert [d.stage for d in decisions] == ["unimodal"] * 3 + ["joint"]
    handover = decisions[-1]
    assert handover.active == (True, True) and handover.restored_epoch == 9 and handover.epoch == 19
    assert "fell below 0.8 × peak" in handover.reason and "restored the encoders of epoch 9" in handover.reason
    assert weights_epoch(encoders) == {9.0}  # trained in place to 14 and 19 since: the copy was deep
    assert controller.stage == "joint" and controller.active == (True, True)


def test_hand_over_without_encoders_restores_nothing():
    decision = run(TwoStageController(synergy_drop=0.5), [two(1, 1, 0.4), two(1, 1, 0.19)])[-1]
    assert decision.stage == "joint" and decision.restored_epoch is None


def test_peak_without_weights_cannot_be_restored():
    controller = TwoStageController()
    controller.step(4, two(1, 1, 0.5))  # peak taken without encoders
    with pytest.raises(ValueError, match="no encoder weights were saved at the synergy peak"):
        controller.step(9, two(1, 1, 0.1), linear_encoders())


def test_maximum_switches_hands_over_instead_of_switching():
    controller, encoders = TwoStageController(max_switches=2), linear_encoders()
    trajectory = [two(1, 1, 0.1), two(1, 0.1, 0.2), two(0.1, 1, 0.3), two(0.2, 0.1, 0.25)]
    decisions = run(controller, trajectory, encoders)
    # unchanged (no switch), pause 0 (switch 1), pause 1 (switch 2); both again would be switch 3
    assert [d.active for d in decisions[:3]] == [(True, True), (False, True), (True, False)]
    assert decisions[3].stage == "joint" and "would be switch 3 > max_switches=2" in decisions[3].reason
    assert decisions[3].restored_epoch == 14 and weights_epoch(encoders) == {14.0}
    with pytest.raises(RuntimeError, match="handed over to joint training at epoch 19"):
        controller.step(24, trajectory[0])


def test_repeated_active_set_is_not_a_switch():
    controller = TwoStageController(max_switches=1)
    decisions = run(controller, [two(1, 0.1, 0.1), two(1, 0.2, 0.2), two(2, 0.1, 0.3), two(0.1, 1, 0.4)])
    assert [d.stage for d in decisions] == ["unimodal"] * 3 + ["joint"]
    assert "would be switch 2 > max_switches=1" in decisions[-1].reason


def test_epoch_end_probes_when_due_and_spends_the_budget_between_probes():
    controller, encoders = TwoStageController(max_unimodal_epochs=7), linear_encoders()
    start = controller.epoch_end(0)
    assert start.epoch == -1 and start.active == (True, True) and controller.history == []
    assert [controller.due(epoch) for epoch in range(10)] == [False] * 4 + [True] + [False] * 4 + [True]
    with pytest.raises(ValueError, match="a probe is due at the end of epoch 4: pass features and labels"):
        controller.epoch_end(4)
    train(encoders, 4)
    controller.step(4, two(1, 0.1, 0.3), encoders)
    train(encoders, 5)
    assert controller.epoch_end(5, encoders=encoders).active == (False, True)
    train(encoders, 6)
    handover = controller.epoch_end(6, encoders=encoders)
    assert handover.stage == "joint" and handover.pid is None and handover.restored_epoch == 4
    assert "the unimodal budget of 7 epochs is spent" in handover.reason and weights_epoch(encoders) == {4.0}
    assert not controller.due(9) and controller.epoch_end(9) is handover and len(controller.history) == 2


def test_budget_at_a_probe():
    decisions = run(TwoStageController(max_unimodal_epochs=10), [two(1, 1, 0.1), two(1, 1, 0.2)])
    assert decisions[1].stage == "joint" and "budget of 10 epochs" in decisions[1].reason


def test_three_modalities_pause_the_dominant_and_keep_the_weakest():
    controller = TwoStageController(3)
    # U0/U1 = 10 pauses 0; U0/U2 = 5 finds 0 paused; U1/U2 = 4 pauses 1 (2 is still active)
    values = {
        (0, 1): pair_values(1.0, 0.1, 0.3),
        (0, 2): pair_values(1.0, 0.2, 0.1),
        (1, 2): pair_values(0.8, 0.2, 0.2),
    }
    decision = controller.step(4, values)
    assert decision.active == (False, False, True)
    assert "pause 0: U0/U1 = 10 > 3, pause 1: U1/U2 = 4 > 3" in decision.reason
    assert "mean synergy 0.2 bits" in decision.reason
    # a cycle of dominance (0 > 1 > 2 > 0): the largest ratios pause first
    cycle = {(0, 1): pair_values(1.0, 0.1, 0.3), (0, 2): pair_values(0.1, 0.6, 0.3), (1, 2): pair_values(0.8, 0.1, 0.3)}
    assert controller.step(9, cycle).active == (False, False, True)
    balanced = {pair: pair_values(0.5, 0.4, 0.3) for pair in controller.pairs}
    assert controller.step(14, balanced).active == (True, True, True)


def test_some_modality_always_trains():
    generator = random.Random(0)
    for n_modalities in (2, 3, 4, 5):
        controller = TwoStageController(n_modalities, max_switches=10**6)
        for epoch in range(4, 1000, 5):
            values = {
                pair: pair_values(generator.expovariate(1), generator.expovariate(1), 0.5) for pair in controller.pairs
            }
            assert any(controller.step(epoch, values).active)


def test_synergy_is_the_mean_over_pairs():
    controller = TwoStageController(3)
    synergies = [(0.9, 0.0, 0.0), (0.0, 0.45, 0.45), (0.0, 0.35, 0.35)]  # means 0.3, 0.3, 0.233
    decisions = run(
        controller,
        [{pair: pair_values(1, 1, s) for pair, s in zip(controller.pairs, synergy)} for synergy in synergies],
    )
    assert [d.stage for d in decisions] == ["unimodal", "unimodal", "joint"]  # pair (0, 1) lost all at once
    assert "mean synergy 0.2333 bits (peak 0.3 at epoch 4) fell below 0.8 × peak" in decisions[-1].reason


def test_resume_from_a_state_dict_mid_stage():
    trajectory = [two(1, 0.1, 0.2), two(0.1, 1, 0.5), two(1, 1, 0.45), two(1, 1, 0.3)]
    original, encoders = TwoStageController(max_switches=3), linear_encoders()
    run(original, trajectory[:2], encoders)
    resumed, fresh = TwoStageController(max_switches=3), linear_encoders()
    resumed.load_state_dict(torch.load(io.BytesIO(save(original.state_dict())), weights_only=True))
    assert resumed.stage == "unimodal" and resumed.active == (True, False) and resumed.history == original.history
    assert (resumed.monitor_seconds, resumed.discretize_seconds) == (
        original.monitor_seconds,
        original.discretize_seconds,
    )
    rest = run(original, trajectory[2:], encoders, first_epoch=10)
    resumed_rest = run(resumed, trajectory[2:], fresh, first_epoch=10)
    assert rest == resumed_rest and resumed.history == original.history
    assert rest[-1].stage == "joint" and rest[-1].restored_epoch == 9
    for ours, theirs in zip(fresh, encoders):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert weights_epoch(fresh) == {9.0}


def test_resume_counts_the_switches_made_before():
    trajectory = [two(1, 0.1, 0.2), two(0.1, 1, 0.3), two(1, 0.1, 0.4)]
    original = TwoStageController(max_switches=2)
    run(original, trajectory[:2])
    resumed = TwoStageController(max_switches=2)
    resumed.load_state_dict(original.state_dict())
    assert run(resumed, trajectory[2:], first_epoch=10)[0].stage == "joint"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_modalities": 1}, "n_modalities must be an int ≥ 2"),
        ({"probe_every": 0}, "probe_every must be a positive int"),
        ({"ratio_threshold": 1.0}, "ratio_threshold must exceed 1"),
        ({"synergy_drop": 1.2}, r"synergy_drop must lie in \(0, 1\)"),
        ({"max_switches": -1}, "max_switches must be an int ≥ 0"),
        ({"max_unimodal_epochs": 0}, "max_unimodal_epochs must be a positive int or None"),
        ({"criterion": "accuracy"}, "criterion must be one of"),
        ({"rule": "bayes"}, "rule must be 'paper' or 'noise'"),
        ({"noise_resamples": 1}, "noise_resamples must be an int ≥ 2"),
        ({"noise_z": 0}, "noise_z must be positive"),
        ({"n_clusters": 0}, "n_clusters must be a positive int"),  # the discretiser's own check, at once
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwoStageController(**kwargs)


def test_bad_values_encoders_and_states_are_refused():
    controller = TwoStageController(3)
    with pytest.raises(ValueError, match=r"one entry per pair \[\(0, 1\), \(0, 2\), \(1, 2\)\]"):
        controller.step(4, two(1, 1, 1))
    values = {pair: pair_values(1, 1, 1) for pair in controller.pairs}
    del values[(1, 2)]["synergy"]
    with pytest.raises(ValueError, match=r"values\[\(1, 2\)\] lacks \['synergy'\]"):
        controller.step(4, values)
    with pytest.raises(ValueError, match=r"one module per modality \(3\), got 2"):
        controller.step(4, {pair: pair_values(1, 1, 1) for pair in controller.pairs}, linear_encoders(2))
    with pytest.raises(ValueError, match="of 2 modalities, this one has 3"):
        controller.load_state_dict(TwoStageController(2).state_dict())
    assert controller.history == []


def noisy_views(symbols: list[torch.Tensor], generator: torch.Generator, noise: float = 0.05) -> list[torch.Tensor]:
    """Each modality's symbols as noisy copies of random cluster centres, (N, 8)."""
    return [
        torch.randn(int(s.max()) + 1, 8, generator=generator)[s] + noise * torch.randn(len(s), 8, generator=generator)
        for s in symbols
    ]


def test_measure_finds_the_modality_that_determines_the_label():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (1280,), generator=generator)
    features = noisy_views([labels, torch.zeros_like(labels)], generator)  # modality 1: noise alone
    controller = TwoStageController()
    values = controller.measure(features, labels)
    assert list(values) == [(0, 1)]
    atoms = values[(0, 1)]
    assert atoms["unique1"] > 1.9 and atoms["unique2"] < 0.05 and atoms["redundancy"] < 0.05  # of 2 bits
    assert abs(atoms["mi"] - sum(atoms[name] for name in ("redundancy", "unique1", "unique2", "synergy"))) < 1e-9
    assert 0 <= atoms["gap"] < 1e-6 and controller.monitor_seconds > controller.discretize_seconds > 0
    assert controller.step(4, values).active == (False, True)


def test_measure_of_three_modalities_solves_every_pair():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randint(0, 2, (2, 1280), generator=generator)
    labels = a ^ b  # modality 0 shows the label, 1 and 2 one input each: their pair is synergy alone
    features = noisy_views([labels, a, b], generator)
    values = TwoStageController(3).measure(features, labels)
    assert list(values) == [(0, 1), (0, 2), (1, 2)]
    assert values[(1, 2)]["synergy"] > 0.9 and values[(1, 2)]["unique1"] < 0.05
    assert values[(0, 1)]["unique1"] > 0.9 and values[(0, 2)]["unique1"] > 0.9
    alone = TwoStageController(2).measure(features[1:], labels)[(0, 1)]
    assert alone == values[(1, 2)]  # the same symbols and joint whatever the other pairs


def test_epoch_end_measures_and_decides():
    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (640,), generator=generator)
    features = noisy_views([torch.zeros_like(labels), labels], generator)
    controller = TwoStageController(probe_every=1)
    decision = controller.epoch_end(0, features, labels)
    assert decision.active == (True, False) and decision.pid[(0, 1)]["unique2"] > 1.9
    assert controller.history == [decision]


def test_resume_continues_the_probes_where_they_stood():
    """Each probe's k-means starts from the last probe's centroids; the state
    carries them, so a resumed controller measures what the original does."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (640,), generator=generator)
    probes = [noisy_views([labels, labels % 2], generator, noise=0.5) for _ in range(2)]
    original = TwoStageController()
    original.measure(probes[0], labels)
    resumed, cold = TwoStageController(), TwoStageController(warm_start=False)
    resumed.load_state_dict(torch.load(io.BytesIO(save(original.state_dict())), weights_only=True))
    cold.load_state_dict(original.state_dict())
    expected = original.measure(probes[1], labels)
    assert resumed.measure(probes[1], labels) == expected
    assert cold.measure(probes[1], labels) != expected  # seeded afresh: other clusters


def save(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_bad_probe_sets_are_refused():
    controller, labels = TwoStageController(), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match=r"one tensor per modality \(2\), got 1"):
        controller.measure([torch.zeros(10, 4)], labels)
    with pytest.raises(ValueError, match=r"features\[1\] must be a tensor \(N, d\) with N = 10 labels, got \(9, 4\)"):
        controller.measure([torch.zeros(10, 4), torch.zeros(9, 4)], labels)
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor"):
        controller.measure([torch.zeros(10, 4)] * 2, labels.float())
    # another device, without needing one: the check reads devices, never values
    with pytest.raises(ValueError, match="features\\[1\\] is on meta but labels are on cpu; pass .* on one device"):
        controller.measure([torch.zeros(10, 4), torch.zeros(10, 4, device="meta")], labels)
    assert controller.monitor_seconds == 0


def noisy(values: dict, synergy_se: float) -> dict:
    return {pair: {**atoms, "synergy_se": synergy_se} for pair, atoms in values.items()}


def test_the_noise_aware_rule_hands_over_only_on_a_drop_larger_than_its_noise():
    """A scripted trajectory: the peak at 0.05 bits, then a 30 % drop.  With standard
    errors of 0.01 bits the drop (0.015) is within 2 √2 × 0.01: no hand-over under
    rule="noise" (the paper's rule hands over); with 0.002 bits it is not noise."""
    trajectory = [two(1, 1, 0.03), two(1, 1, 0.05), two(1, 1, 0.035)]
    paper = run(TwoStageController(), [noisy(v, 0.01) for v in trajectory])
    assert paper[-1].stage == "joint"
    within = run(TwoStageController(rule="noise"), [noisy(v, 0.01) for v in trajectory])
    assert [d.stage for d in within] == ["unimodal"] * 3 and "within 2 standard errors" in within[-1].reason
    beyond = run(TwoStageController(rule="noise"), [noisy(v, 0.002) for v in trajectory])
    assert beyond[-1].stage == "joint" and "by more than 2 standard errors" in beyond[-1].reason


@pytest.mark.parametrize("device", DEVICES)
def test_probes_on_the_features_device(device):
    """Features and labels on the training device: the discretisers fit there, the noise-aware
    rule's probe (the bias in the background) gives the values of the same probe on the CPU
    (the bias up to its resamples, which a CUDA generator draws differently)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (1280,), generator=generator)
    features = noisy_views([labels, labels // 2], generator)
    on_cpu = TwoStageController(rule="noise", probe_every=1)
    on_device = TwoStageController(rule="noise", probe_every=1)
    expected = on_cpu.epoch_end(0, features, labels)
    decision = on_device.epoch_end(0, [view.to(device) for view in features], labels.to(device))
    assert decision.active == expected.active
    measured = on_device.history[-1].pid[(0, 1)]
    for name, value in on_cpu.history[-1].pid[(0, 1)].items():
        close = 3 * measured["synergy_se"] if name.endswith("_bias") else 1e-9
        assert measured[name] == pytest.approx(value, abs=close), name


def _noise_probe_in_a_child(features, labels, results):
    controller = TwoStageController(rule="noise", probe_every=1)
    controller.epoch_end(0, features, labels)
    results.put(controller.history[-1].pid[(0, 1)]["synergy_bias"])


def test_a_forked_process_gets_a_bias_thread_of_its_own():
    """After a probe has started the bias thread, a forked child's probes do not wait on
    the parent's thread (a child inherits the pool, not its thread)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (640,), generator=generator)
    features = noisy_views([labels, labels // 2], generator)
    parent = TwoStageController(rule="noise", probe_every=1)
    parent.epoch_end(0, features, labels)
    expected = parent.history[-1].pid[(0, 1)]["synergy_bias"]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_noise_probe_in_a_child, args=(features, labels, results))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    assert results.get(timeout=5) == expected


def test_the_noise_aware_rule_measures_standard_errors_and_biases():
    """Within the probe (``bias_in_background=False``) or on the background thread, the same
    resamples give the same bias; in the background it joins the probe's values once the
    history is read."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (1280,), generator=generator)
    features = noisy_views([labels, labels // 2], generator)
    within = TwoStageController(rule="noise", noise_resamples=20, bias_in_background=False)
    atoms = within.measure(features, labels)[(0, 1)]
    for name in ("redundancy", "unique1", "unique2", "synergy", "mi"):
        assert atoms[f"{name}_se"] > 0 and abs(atoms[f"{name}_bias"]) < 1
    assert atoms["synergy_se"] < 0.1  # bits, on 1,280 probe samples
    assert within.bias_seconds > 0

    background = TwoStageController(rule="noise", noise_resamples=20)
    pending = background.measure(features, labels)[(0, 1)]
    assert {name: value for name, value in pending.items() if not name.endswith("_bias")} == {
        name: value for name, value in atoms.items() if not name.endswith("_bias")
    }
    assert background.history == []  # no decision taken; reading it waits for the bias
    assert pending == atoms and background.bias_seconds > 0

    checkpointed = TwoStageController(rule="noise", probe_every=1)
    checkpointed.epoch_end(0, features, labels)
    assert "synergy_bias" in checkpointed.state_dict()["history"][-1]["pid"][(0, 1)]  # the state waits too
    pickled = TwoStageController(rule="noise", probe_every=1)
    pickled.epoch_end(0, features, labels)
    copied = pickle.loads(pickle.dumps(pickled))  # so does pickling (and copy.deepcopy)
    assert copied.history[-1].pid == pickled.history[-1].pid
    assert "synergy_bias" in copied.history[-1].pid[(0, 1)]
