"""The committed results reproduce their report: `lssl report results/default` rebuilds the same
table from the JSONs (a number in the README comes from a run, through this code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.cli.main import main

RESULTS = Path(__file__).resolve().parents[1] / "results" / "default"


def table(report: str) -> str:
    return report.split("## Results", 1)[1].split("## Robustness", 1)[0].strip()


def test_report_of_committed_default_results(tmp_path: Path) -> None:
    if not any(RESULTS.glob("*.json")):
        pytest.skip("no committed results/default (run `make bench`)")
    assert main(["report", str(RESULTS), "--out", str(tmp_path)]) == 0
    rebuilt = (tmp_path / "report.md").read_text()
    assert table(rebuilt) == table((RESULTS / "report.md").read_text())
    assert table((RESULTS / "report.md").read_text()) in (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for png in ("per_class_DigitsLT.png", "groups_DigitsLT.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
