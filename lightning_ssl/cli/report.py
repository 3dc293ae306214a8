"""``lssl report SPEC|DIR``: tables (Markdown + CSV) and plots (PNG) of a sweep's results."""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import replace
from pathlib import Path

from lightning_ssl.cli.parsers import report_parser
from lightning_ssl.loggers import wandb_credentials_present
from lightning_ssl.optional import require
from lightning_ssl.sweep.identity import stale_reason
from lightning_ssl.sweep.publish import planned_seeds, write_report
from lightning_ssl.sweep.published import parse_published
from lightning_ssl.sweep.readme import readme_region, update_readme
from lightning_ssl.sweep.record import RunRecord
from lightning_ssl.sweep.report import DEFAULT_METRIC
from lightning_ssl.sweep.runner import load_results
from lightning_ssl.sweep.spec import expand, load_spec


def resolve_source(source: str, results_root: str) -> tuple[Path, str, str | None]:
    """(results folder, title, the spec's report metric) of a spec file or a folder."""
    path = Path(source)
    if path.is_dir():
        return path, path.name, None
    if path.suffix in (".yaml", ".yml"):
        spec = load_spec(path)
        return Path(results_root) / spec.name, spec.name, spec.report.get("metric")
    raise ValueError(f"{source} is neither a results folder nor a sweep spec (.yaml)")


def published_of(source: str) -> list | None:
    """A spec's ``report.published`` numbers (docs/methods.md §16), checked; ``None`` for a folder."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") or path.is_dir():
        return None
    block = load_spec(path).report.get("published")
    parse_published(block)  # a malformed entry is named before any table is written
    return block


def select(records: list[RunRecord], source: str, sweep: str | None, skipped: list[str]) -> list[RunRecord]:
    """The records of one sweep: a spec's own runs (a stored result the current code would not
    reproduce is kept and marked stale), or, for a folder, those of one sweep name."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and not path.is_dir():
        runs = {run.run_id: run for run in expand(load_spec(path))}
        kept = []
        for r in records:
            run = runs.get(r.run_id)
            if run is None:
                skipped.append(f"{r.run_id} ({r.method}): not a run of {path.name} as it is now")
                continue
            reason = stale_reason(dict(r.raw), run)
            kept.append(replace(r, stale=reason) if reason else r)
        return kept
    names = sorted({str(r.sweep) for r in records})
    if sweep is None and len(names) > 1:
        raise ValueError(
            f"{source} holds results of several sweeps ({', '.join(names)}); pick one with --sweep NAME "
            "or report a spec"
        )
    want = sweep or (names[0] if names else None)
    kept = [r for r in records if str(r.sweep) == want]
    skipped += [f"{r.run_id}: of sweep {r.sweep!r}, not {want!r}" for r in records if r not in kept]
    return kept


def log_to_wandb(project: str, title: str, written: dict[str, Path]) -> None:
    """Tables and PNGs to a W&B run (offline when no credentials are configured)."""
    wandb = require("wandb", "wandb", "lssl report --wandb")

    if not wandb_credentials_present():
        os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=project, name=f"report-{title}", job_type="report")
    for name, path in written.items():
        if name.endswith(".png"):
            run.log({path.stem: wandb.Image(str(path))})
        elif name.endswith(".csv"):
            rows = list(csv.reader(path.read_text().splitlines()))
            if rows:
                run.log({path.stem: wandb.Table(columns=rows[0], data=rows[1:])})
    run.finish()


def expected_of(source: str) -> dict[tuple, int] | None:
    """Seeds a spec plans per run group (``None`` for a folder): unfinished rows say ``n/N``."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") or path.is_dir():
        return None
    return planned_seeds(expand(load_spec(path), validate=False))


def run(argv: list[str]) -> int:
    """Entry point of ``lssl report``; prints the Markdown report."""
    args = report_parser().parse_args(argv)
    try:
        folder, title, metric = resolve_source(args.source, args.results)
        if args.readme:
            readme_region(Path(args.readme).read_text(), title)  # a missing marker is named before any work
        skipped: list[str] = []
        loaded = [RunRecord.from_json(r) for r in load_results(folder, skipped)]
        records = select(loaded, args.source, args.sweep, skipped)
        written = write_report(
            records,
            args.out or folder,
            title,
            args.metric or metric or DEFAULT_METRIC,
            plots=not args.no_plots,
            skipped=skipped,
            published=published_of(args.source),
            expected=expected_of(args.source),
        )
        if args.readme and update_readme(Path(args.readme), written["report.md"].read_text(), title):
            print(f"lssl report: {args.readme} now shows the headline of {written['report.md']}", file=sys.stderr)
        if skipped:
            print(f"lssl report: skipped {len(skipped)} result(s) (listed in {written['report.md']})", file=sys.stderr)
    except (ValueError, FileNotFoundError) as err:
        print(f"lssl report: {err}", file=sys.stderr)
        return 2
    print(written["report.md"].read_text())
    if args.wandb:
        log_to_wandb(args.wandb, title, written)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
