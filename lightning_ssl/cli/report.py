"""``lssl report SPEC|DIR``: tables (Markdown + CSV) and plots (PNG) of a sweep's results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning_ssl.sweep.report import DEFAULT_METRIC, write_report
from lightning_ssl.sweep.runner import load_results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lssl report", description=__doc__.split("\n")[0])
    p.add_argument("source", help="a sweep spec (YAML) or a folder of result JSONs")
    p.add_argument("--results", default="results", help="results root of a spec (default: results)")
    p.add_argument("--out", default=None, help="where report.md / CSV / PNG go (default: the results folder)")
    p.add_argument("--metric", default=None, help=f"accuracy of the robustness table (default {DEFAULT_METRIC})")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log the tables and plots to W&B")
    return p


def resolve_source(source: str, results_root: str) -> tuple[Path, str, str | None]:
    """(results folder, title, the spec's report metric) of a spec file or a folder."""
    path = Path(source)
    if path.is_dir():
        return path, path.name, None
    if path.suffix in (".yaml", ".yml"):
        from lightning_ssl.sweep.spec import load_spec

        spec = load_spec(path)
        return Path(results_root) / spec.name, spec.name, spec.report.get("metric")
    raise ValueError(f"{source} is neither a results folder nor a sweep spec (.yaml)")


def log_to_wandb(project: str, title: str, written: dict[str, Path]) -> None:
    """Tables and PNGs to a W&B run (offline when no credentials are configured)."""
    import os

    from lightning_ssl.loggers import wandb_credentials_present
    from lightning_ssl.optional import require

    wandb = require("wandb", "wandb", "lssl report --wandb")

    if not wandb_credentials_present():
        os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=project, name=f"report-{title}", job_type="report")
    for name, path in written.items():
        if name.endswith(".png"):
            run.log({path.stem: wandb.Image(str(path))})
        elif name.endswith(".csv"):
            import csv

            rows = list(csv.reader(path.read_text().splitlines()))
            if rows:
                run.log({path.stem: wandb.Table(columns=rows[0], data=rows[1:])})
    run.finish()


def run(argv: list[str]) -> int:
    """Entry point of ``lssl report``; prints the Markdown report."""
    args = build_parser().parse_args(argv)
    try:
        folder, title, metric = resolve_source(args.source, args.results)
        records = load_results(folder)
        written = write_report(records, args.out or folder, title, args.metric or metric or DEFAULT_METRIC,
                               plots=not args.no_plots)
    except (ValueError, FileNotFoundError) as err:
        print(f"lssl report: {err}", file=sys.stderr)
        return 2
    print(written["report.md"].read_text())
    if args.wandb:
        log_to_wandb(args.wandb, title, written)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
