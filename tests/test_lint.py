"""`make lint` in the test run: one formatter (ruff format) and the lint rules of pyproject.toml.

ruff is pinned to one minor version in pyproject.toml: its formatter changes style only between minor
releases, so a new release cannot fail this test on unchanged code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["lightning_ssl", "datamodules", "tests", "benchmarks", "examples"]
RUFF = (
    str(Path(sys.executable).parent / "ruff")
    if (Path(sys.executable).parent / "ruff").exists()
    else shutil.which("ruff") or "ruff"
)


@pytest.mark.skipif(shutil.which(RUFF) is None, reason="ruff is not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "check"])
def test_the_tree_is_formatted_and_lint_clean(command: list[str]) -> None:
    out = subprocess.run([RUFF, *command, *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
