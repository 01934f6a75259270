"""The package's structure: the core imports neither the controller nor the kernels
(they plug in through entry points), and the modules keep names of their own."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import fastpid


def test_the_core_loads_neither_the_controller_nor_the_kernels():
    code = (
        "import sys, fastpid, torch; fastpid.pid(torch.tensor([[[0.25, 0.0], [0.0, 0.25]], "
        "[[0.0, 0.25], [0.25, 0.0]]])); print(sorted(m for m in sys.modules if m.startswith("
        "('fastpid.controller', 'fastpid.kernels', 'triton'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_the_triton_backend_plugs_in():
    """Under Triton's interpreter (CPU joints), fastpid.pid(..., backend="triton") loads the plug-in."""
    code = (
        "import sys, fastpid, torch; r = fastpid.pid(torch.tensor([[[0.25, 0.0], [0.0, 0.25]], "
        "[[0.0, 0.25], [0.25, 0.0]]]), backend='triton'); print(round(float(r.synergy), 9), "
        "'fastpid.kernels' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "TRITON_INTERPRET": "1"},
    ).stdout
    assert out.split() == ["1.0", "True"]


def test_functions_do_not_shadow_their_modules():
    assert callable(fastpid.pid) and callable(fastpid.bootstrap)
    assert fastpid.decomposition.__name__ == "fastpid.decomposition"
    assert fastpid.resampling.__name__ == "fastpid.resampling"
    assert sys.modules["fastpid.decomposition"].pid is fastpid.pid
