"""The argument parsers of ``lssl sweep``, ``lssl report`` and ``lssl bench``, kept apart from the
commands so that their ``--help`` loads neither torch nor Lightning (0.5 s instead of 5-10 s)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_ssl.cli.args import ArgumentParser, positive_int
from lightning_ssl.sweep.record import DEFAULT_METRIC

SWEEP = "``lssl sweep SPEC``: expand a sweep specification and run it (locally, on SLURM, or as a W&B sweep)."
REPORT = "``lssl report SPEC|DIR``: tables (Markdown + CSV) and plots (PNG) of a sweep's results."
BENCH = "``lssl bench`` (``make bench``): the ``default`` sweep on the embedded Digits-LT, then its report."
DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "benchmarks" / "default.yaml"


def sweep_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lssl sweep", description=SWEEP)
    p.add_argument("spec", help="sweep specification (YAML), e.g. benchmarks/default.yaml")
    p.add_argument("--launcher", choices=("local", "slurm", "wandb"), default="local")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their status; run nothing")
    p.add_argument(
        "--results", default="results", help="results root; JSONs go to <results>/<sweep>/ (default: results)"
    )
    p.add_argument("--work", default="runs/sweeps", help="run folders (logs, checkpoints) root (default: runs/sweeps)")
    p.add_argument("--max-runs", type=positive_int, default=None, help="execute at most N runs in this call")
    p.add_argument(
        "--run-id",
        "--run_id",
        dest="run_ids",
        action="append",
        default=None,
        help="run only this run id (repeatable); W&B agents pass it",
    )
    p.add_argument("--gpus", type=positive_int, default=1, help="local: N > 1 runs N workers, one per GPU")
    p.add_argument("--accelerator", default=None, help="override trainer.accelerator (cpu, gpu, auto)")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log every run to this W&B project")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing run")
    p.add_argument(
        "--select",
        nargs="*",
        default=None,
        metavar="AXIS=VALUE",
        help="run only the runs with these axis values (what a W&B sweep agent passes)",
    )
    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="recompute stale results (computed by other code or settings) and replace them",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show Lightning's and faiss's per-run messages and hints (silenced by default)",
    )
    slurm = p.add_argument_group("slurm (submitit)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time-min", type=int, default=None, help="time limit per job (minutes)")
    slurm.add_argument("--gpus-per-job", type=int, default=None, help="GPUs per node of each job")
    slurm.add_argument("--nodes", type=int, default=None, help="nodes per job (multi-node DDP)")
    slurm.add_argument("--cpus-per-task", type=int, default=None)
    slurm.add_argument("--array-parallelism", type=int, default=None)
    slurm.add_argument("--slurm-cluster", default=None, help="submitit cluster: slurm (default auto), local, debug")
    wb = p.add_argument_group("wandb sweep")
    wb.add_argument("--project", default=None, help="W&B project of the sweep (default: the sweep's name)")
    wb.add_argument("--entity", default=None)
    return p


def report_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lssl report", description=REPORT)
    p.add_argument("source", help="a sweep spec (YAML) or a folder of result JSONs")
    p.add_argument("--results", default="results", help="results root of a spec (default: results)")
    p.add_argument("--out", default=None, help="where report.md / CSV / PNG go (default: the results folder)")
    p.add_argument("--metric", default=None, help=f"accuracy of the robustness table (default {DEFAULT_METRIC})")
    p.add_argument("--sweep", default=None, help="with a folder: report only the results of this sweep name")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log the tables and plots to W&B")
    p.add_argument("--readme", default=None, metavar="PATH", help="also rewrite the report's headline in this README")
    return p


def bench_parser() -> argparse.ArgumentParser:
    """Options of ``lssl bench``; every other option goes on to ``lssl sweep``."""
    p = ArgumentParser(prog="lssl bench", description=BENCH)
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="sweep spec (default: benchmarks/default.yaml)")
    p.add_argument("--results", default="results")
    p.add_argument("--work", default="runs/sweeps")
    return p


HELP_PARSERS = {"sweep": sweep_parser, "report": report_parser, "bench": bench_parser}
