"""The main job (controller/experiment.py, ``fastpid demo``) end to end on tiny settings."""

from __future__ import annotations

import json

import pytest

from fastpid import cli
from fastpid.controller import experiment


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``fastpid demo`` with 2 seeds, 10 epochs (one probe before the stage-1 cap of 5), 2 random
    verification joints, 20 resamples."""
    out = tmp_path_factory.mktemp("demo")
    status = cli.main(
        ["demo", "--out", str(out), "--seeds", "2", "--epochs", "10", "--random", "2", "--resamples", "20"]
    )
    return status, out, json.loads((out / "results.json").read_text())


def test_demo_exits_zero_and_writes_its_files(demo):
    status, out, results = demo
    assert status == 0 and results["verification"]["agrees"]
    assert (out / "pid_over_epochs.png").stat().st_size > 10_000


def test_demo_runs_every_method_on_every_data_set_and_seed(demo):
    _, _, results = demo
    runs = {(run["dataset"], run["method"], run["seed"]) for run in results["runs"]}
    assert runs == {(d, m, s) for d in experiment.DATASETS for m in experiment.METHODS for s in (0, 1)}
    for row in results["summary"]:
        assert row["seeds"] == 2 and 0 <= row["fused_accuracy"][0] <= 1
        assert len(row["probe_accuracy"]) == 2
        assert (row["monitor_share"] is not None) == row["method"].startswith("controller")
    controller = next(r for r in results["runs"] if r["method"] == "controller")
    assert any(decision["pid"] for decision in controller["decisions"])


def test_view_pid_atoms_add_up_and_intervals_hold_the_estimate(demo):
    _, _, results = demo
    atoms = results["view_pid"]["atoms"]
    total = sum(atoms[name]["estimate"] for name in experiment.ATOMS)
    assert total == pytest.approx(atoms["mi"]["estimate"], abs=1e-6)
    for atom in atoms.values():
        assert atom["lower"] <= atom["corrected"] <= atom["upper"] or atom["lower"] <= atom["estimate"] <= atom["upper"]
    assert results["view_pid"]["max_gap"] < 1e-6


def test_table_has_a_row_per_method_and_data_set(demo):
    _, _, results = demo
    table = experiment.format_table(results["summary"]).splitlines()
    assert len(table) == 2 + len(experiment.DATASETS) * len(experiment.METHODS)
    assert all(line.count("|") == table[0].count("|") for line in table)
