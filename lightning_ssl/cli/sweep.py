"""``lssl sweep SPEC``: expand a sweep specification and run it (locally, on SLURM, or as a W&B sweep).

Every run is validated before the first one starts. Results go to ``<results>/<sweep>/<run_id>.json``;
a finished run is skipped, an interrupted one resumes from its ``last.ckpt``, and several runners
on the same spec share the work through per-run lock files.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser as ConfigParser

from lightning_ssl.cli import quiet
from lightning_ssl.cli.parsers import sweep_parser
from lightning_ssl.cli.progress import SweepProgress, checking
from lightning_ssl.config.errors import condense
from lightning_ssl.eval.linear import DEFAULT_PROBE_RECIPE
from lightning_ssl.eval.offline import check_probe_options
from lightning_ssl.sweep import launchers
from lightning_ssl.sweep.record import RunStatus
from lightning_ssl.sweep.resolve import instantiate_data
from lightning_ssl.sweep.runner import SweepPaths, run_status
from lightning_ssl.sweep.spec import Run, expand, load_spec


def describe(run: Run) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in run.axes.items() if k not in ("method", "dataset"))
    return f"{run.method:<14} {run.dataset:<16} {extra}"


def print_dry_run(runs: list[Run], paths: SweepPaths) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        status = run_status(paths, run.run_id, run)
        counts[status] = counts.get(status, 0) + 1
        print(f"{run.run_id}  {status:<11} {describe(run)}")
    print(f"{len(runs)} runs in {paths.results}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return counts


def slurm_options(spec_defaults: dict, args: argparse.Namespace) -> launchers.SlurmOptions:
    values = dict(spec_defaults)
    for key, arg in (
        ("partition", "partition"),
        ("time_min", "time_min"),
        ("gpus_per_node", "gpus_per_job"),
        ("nodes", "nodes"),
        ("cpus_per_task", "cpus_per_task"),
        ("array_parallelism", "array_parallelism"),
        ("cluster", "slurm_cluster"),
    ):
        if getattr(args, arg) is not None:
            values[key] = getattr(args, arg)
    unknown = sorted(set(values) - set(launchers.SlurmOptions.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"unknown launcher.slurm key(s) {unknown}; valid: {', '.join(launchers.SlurmOptions.__dataclass_fields__)}"
        )
    return launchers.SlurmOptions(**values)


def run(argv: list[str]) -> int:
    """Entry point of ``lssl sweep``; returns the exit code (1 when a run failed)."""
    args = sweep_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    quiet.configure(args.verbose)
    try:
        spec = load_spec(args.spec)
        with checking(spec.name):
            runs = expand(spec)
            check_objects(spec.name, runs)
    except (ValueError, FileNotFoundError) as err:
        print(f"lssl sweep: {err}", file=sys.stderr)
        return 2
    if args.run_ids:
        known = {r.run_id for r in runs}
        missing = sorted(set(args.run_ids) - known)
        if missing:
            print(f"lssl sweep: run id(s) {missing} are not in sweep {spec.name!r}", file=sys.stderr)
            return 2
        runs = [r for r in runs if r.run_id in set(args.run_ids)]
    if args.select is not None:
        try:
            runs = select(runs, args.select)
        except ValueError as err:
            print(f"lssl sweep: {err}", file=sys.stderr)
            return 2
    paths = SweepPaths.of(spec, args.results, args.work)
    if args.dry_run:
        print_dry_run(runs, paths)
        return 0
    statuses = {r.run_id: run_status(paths, r.run_id, r) for r in runs}
    stale = [r for r in runs if statuses[r.run_id] == RunStatus.STALE]
    if stale and not args.rerun_stale:
        print(
            f"lssl sweep: {len(stale)} stale result(s) kept (computed by other code or settings; "
            "--rerun-stale recomputes them): "
            + ", ".join(f"{r.run_id} {r.method}" for r in stale[:5])
            + (" ..." if len(stale) > 5 else ""),
            file=sys.stderr,
        )
    pending = [
        r
        for r in runs
        if statuses[r.run_id] not in (RunStatus.FINISHED, RunStatus.STALE)
        or (args.rerun_stale and statuses[r.run_id] == RunStatus.STALE)
    ]
    overrides = {"accelerator": args.accelerator} if args.accelerator else {}
    if not args.verbose:  # one line per run: no model summary or progress bar of each run's fit
        overrides.update(enable_progress_bar=False, enable_model_summary=False)
    if args.launcher == "wandb":
        path, commands = launchers.write_wandb_sweep(
            args.spec, spec, pending, args.results, args.work, args.project, args.entity
        )
        print(f"W&B sweep config written to {path} ({len(pending)} runs). Start it with:\n{commands}")
        return 0
    if args.launcher == "slurm":
        try:
            options = slurm_options(spec.launcher.get("slurm") or {}, args)
        except ValueError as err:
            print(f"lssl sweep: {err}", file=sys.stderr)
            return 2
        ids = [r.run_id for r in pending][: args.max_runs]
        try:
            jobs = launchers.submit_slurm(args.spec, spec, ids, args.results, args.work, options)
        except (ValueError, ImportError) as err:
            print(f"lssl sweep: {err}", file=sys.stderr)
            return 2
        print(
            f"submitted {len(jobs)} job(s) for sweep {spec.name!r}: "
            + ", ".join(str(j.job_id) for j in jobs[:5])
            + (" ..." if len(jobs) > 5 else "")
        )
        return 0
    if args.gpus > 1:
        extra = ["--max-runs", str(args.max_runs)] if args.max_runs else []
        extra += ["--wandb", args.wandb] if args.wandb else []
        extra += ["--verbose"] if args.verbose else []
        try:
            return launchers.run_local_gpus(args.spec, args.results, args.work, args.gpus, extra)
        except ValueError as err:
            print(f"lssl sweep: {err}", file=sys.stderr)
            return 2
    metric = (spec.report or {}).get("metric", "linear_full/acc_top1")
    try:
        with SweepProgress(pending, paths.results, metric) as progress:
            outcome = launchers.run_local(
                spec,
                pending,
                paths,
                args.max_runs,
                overrides,
                args.wandb,
                args.fail_fast,
                progress=progress,
                rerun_stale=args.rerun_stale,
            )
    except KeyboardInterrupt:
        print("lssl sweep: interrupted; finished results are kept, re-run to resume", file=sys.stderr)
        return 130
    summary = summary_line(spec.name, outcome, len(runs) - len(pending), paths)
    if outcome.signal is not None:  # preempted: not finished, whatever ran before
        print(summary)
        return 128 + outcome.signal
    if outcome[RunStatus.FAILED]:
        print(f"{summary}; next: read <run id>.failed.json there, fix, and run the same command again")
        return 1
    print(
        f"{summary}; next: lssl report {args.spec}" if outcome[RunStatus.DONE] or len(runs) > len(pending) else summary
    )
    return 0


def check_objects(name: str, runs: list[Run]) -> None:
    """Build each distinct datamodule and model of the sweep once, before the first run trains:
    their ``__init__`` checks every option's range (parsing checks only the types), so a value
    such as ``imbalance_ratio: 0`` is refused here, naming the run, not after the runs before it."""
    seen: set[str] = set()
    for run in runs:
        try:
            check_protocols(run)
        except ValueError as err:
            raise ValueError(f"sweep {name!r}, run {run.axes}: {err}") from None
        for kind in ("data", "model"):
            config = run.config.get(kind)
            key = kind + json.dumps(config, sort_keys=True, default=str)
            if not config or key in seen:
                continue
            seen.add(key)
            try:
                if kind == "data":
                    instantiate_data(config)
                else:
                    _build_model(config)
            except (ValueError, TypeError, argparse.ArgumentError) as err:
                raise ValueError(f"sweep {name!r}, run {run.axes}: {condense(str(err))}") from None


def _build_model(config: dict) -> None:
    """Build a model to run its ``__init__`` checks, on PyTorch's ``meta`` device (no memory, no weight
    initialisation: a ResNet-50 method in 0.4 s instead of 1.2 s). Any failure there is confirmed by
    building it on the CPU, which raises the real error (or none, for an ``__init__`` that needs real
    tensors)."""
    parser = ConfigParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningModule, "model")
    try:
        with torch.device("meta"):
            parser.instantiate_classes(parser.parse_object({"model": config}))
    except Exception:  # noqa: BLE001 - see the docstring
        parser.instantiate_classes(parser.parse_object({"model": config}))


def check_protocols(run: Run) -> None:
    """The run's evaluation options (kNN, probe recipe), with the checks
    :func:`~lightning_ssl.eval.offline.evaluate_frozen` makes (its probe sets wait for the data; a
    pipeline's options were checked when the spec was loaded)."""
    ev = dict(run.evaluation or {})
    check_probe_options(
        [],
        [],
        ev.get("linear_recipe", DEFAULT_PROBE_RECIPE),
        dict(ev.get("linear_options") or {}),
        ev.get("knn_k", 200),
        ev.get("knn_temperature", 0.1),
        ev.get("knn_bank", "full"),
    )


def select(runs: list[Run], selection: list[str]) -> list[Run]:
    """``--select axis=value ...``: the matching runs; a selection that matches none (or is empty)
    is an error naming the values each axis has, never a sweep that runs nothing and exits 0."""
    if not selection:
        raise ValueError("--select takes axis=value pairs, e.g. --select method=SimCLR seed=0")
    chosen = launchers.select_runs(runs, selection)
    if not chosen:
        axes = sorted({k for run in runs for k in run.axes})
        values = "; ".join(f"{k}: {', '.join(sorted({str(r.axes[k]) for r in runs if k in r.axes}))}" for k in axes)
        raise ValueError(
            f"--select {' '.join(selection)} matches none of the {len(runs)} runs; the axes' values: {values}"
        )
    return chosen


def summary_line(name: str, outcome: launchers.Outcome, finished_before: int, paths: SweepPaths) -> str:
    """``sweep 'default': 3 done, 17 finished, 1 interrupted (results/default)``: the non-zero counts."""
    counts = {str(k): len(v) for k, v in outcome.items()}
    counts["finished"] = counts.get("finished", 0) + finished_before
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    if outcome.signal is not None:
        by = "Ctrl-C" if outcome.signal == signal.SIGINT else f"signal {outcome.signal}"
        parts.append(f"stopped by {by}: re-run the same command to resume")
    return f"sweep {name!r}: " + (", ".join(parts) or "nothing to run") + f" ({paths.results})"


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
