"""`fastpid verify`: the table, the exit status, and failing loudly on a mismatch."""

from __future__ import annotations

from fastpid import cli, verify


def test_verify_passes_against_dit(capsys):
    assert cli.main(["verify", "--random", "8", "--short"]) == 0
    out = capsys.readouterr().out
    assert "XOR" in out and "OK: fastpid agrees with dit" in out


def test_verify_fails_loudly_on_a_mismatch(monkeypatch, capsys):
    def wrong_dit(P):
        return {"redundancy": 0.5, "unique1": 0.0, "unique2": 0.0, "synergy": 0.5}

    monkeypatch.setattr(verify, "dit_pid", wrong_dit)
    assert cli.main(["verify", "--random", "0"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "FAILED" in out


def test_verification_joints_are_distinct_and_normalised():
    joints = verify.verification_joints(12)
    assert len(joints) == 8 + 12
    for name, P in joints:
        assert abs(P.sum() - 1) < 1e-12, name
