"""``fastpid pid FILE``: columns of a CSV or .npz to the table of atoms, checked against the Python API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fastpid
from fastpid import cli
from fastpid.tabular import encode


@pytest.fixture
def table(tmp_path):
    """600 samples: string labels for colour and answer, a continuous weight; answer is an XOR-like gate."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], size=600)
    weight = rng.normal(size=600)
    answer = np.where((colour == "red") ^ (weight > 0), "yes", "no")
    path = tmp_path / "samples.csv"
    lines = ["colour,weight,answer"] + [f"{c},{w:.17g},{a}" for c, w, a in zip(colour, weight, answer)]
    path.write_text("\n".join(lines) + "\n")
    return path, colour, weight, answer


def run_json(capsys, *argv) -> dict:
    assert cli.main(["pid", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_csv_with_string_labels_matches_the_api(table, capsys):
    path, colour, weight, answer = table
    report = run_json(capsys, path, "--sources", "colour", "weight", "--target", "answer", "--bins", "4")
    symbols = [torch.from_numpy(encode(values, 4)[0]) for values in (colour, weight, answer)]
    expected = fastpid.pid(fastpid.joint_from_samples(*symbols))
    assert report["samples"] == 600 and report["symbols weight"] == 4 and report["symbols colour"] == 3
    for atom in ("redundancy", "unique1", "unique2", "synergy", "mi"):
        assert report[atom] == pytest.approx(float(getattr(expected, atom)), abs=1e-12)
    assert report["converged"] and report["synergy"] > 0.2


def test_intervals_p_values_and_npz(table, capsys, tmp_path):
    path, colour, weight, answer = table
    report = run_json(
        capsys,
        path,
        "--sources",
        "colour",
        "weight",
        "--target",
        "answer",
        "--bootstrap",
        "30",
        "--permutations",
        "49",
        "--seed",
        "1",
    )
    low, high = report["basic interval"]["synergy"]
    assert low <= report["synergy"] <= high and report["p_value"]["synergy"] == pytest.approx(1 / 50)
    npz = tmp_path / "samples.npz"
    np.savez(npz, colour=colour, weight=weight, answer=answer)
    from_npz = run_json(capsys, npz, "--sources", "colour", "weight", "--target", "answer")
    assert from_npz["synergy"] == pytest.approx(
        run_json(capsys, path, "--sources", "colour", "weight", "--target", "answer")["synergy"], abs=1e-12
    )
    assert cli.main(["pid", str(path), "--sources", "colour", "weight", "--target", "answer"]) == 0
    text = capsys.readouterr().out
    assert "| synergy |" in text and "600 samples" in text and "converged True" in text


def test_missing_column_is_named(table, capsys):
    path = table[0]
    assert cli.main(["pid", str(path), "--sources", "colour", "nope", "--target", "answer"]) == 2
    assert "has no columns ['nope']" in capsys.readouterr().err
