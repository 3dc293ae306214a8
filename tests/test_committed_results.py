"""The committed results are what the current code computes, and reproduce their reports.

* Every committed result of a shipped spec is a run of that spec as it is now, and not stale: its
  recorded config and code version are what the current code would run (otherwise a README table
  could drift from the code). Recompute with ``lssl sweep SPEC --rerun-stale``.
* ``lssl report SPEC`` rebuilds the committed ``report.md`` table from the JSONs, and the README
  shows that table (a number in the README comes from a run, through this code).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.cli.main import main
from lightning_ssl.sweep.identity import stale_reason
from lightning_ssl.sweep.readme import readme_region
from lightning_ssl.sweep.runner import load_results
from lightning_ssl.sweep.spec import expand, load_spec

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = (
    sorted(p for p in (ROOT / "results").iterdir() if (ROOT / "benchmarks" / f"{p.name}.yaml").is_file())
    if (ROOT / "results").is_dir()
    else []
)


def section(report: str, name: str) -> str:
    return report.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0].strip()


def table(report: str) -> str:
    return section(report, "Results")


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_results_are_not_stale(folder: Path) -> None:
    skipped: list[str] = []
    records = load_results(folder, skipped)
    assert not skipped, skipped
    if not records:
        pytest.skip(f"no committed results in {folder}")
    runs = {run.run_id: run for run in expand(load_spec(ROOT / "benchmarks" / f"{folder.name}.yaml"))}
    for record in records:
        run = runs.get(record["run_id"])
        assert run is not None, (
            f"{record['run_id']} ({record['method']}) is not a run of {folder.name}.yaml as it is now"
        )
        assert stale_reason(record, run) is None, f"{record['run_id']}: {stale_reason(record, run)}"


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_report_of_committed_results(folder: Path, tmp_path: Path) -> None:
    if not any(folder.glob("*.json")):
        pytest.skip(f"no committed results in {folder}")
    spec = ROOT / "benchmarks" / f"{folder.name}.yaml"
    assert main(["report", str(spec), "--results", str(folder.parent), "--out", str(tmp_path), "--no-plots"]) == 0
    rebuilt = (tmp_path / "report.md").read_text()
    committed = (folder / "report.md").read_text()
    assert table(rebuilt) == table(committed)
    assert section(rebuilt, "Headline") == section(committed, "Headline")
    shown = readme_region((ROOT / "README.md").read_text(), folder.name)
    assert shown == section(committed, "Headline"), (
        f"the README's {folder.name} headline is not the report's; "
        f"run: lssl report {spec.relative_to(ROOT)} --readme README.md"
    )
