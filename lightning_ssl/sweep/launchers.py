"""Where the runs of a sweep execute: ``local`` (sequential, or one worker per GPU), ``slurm``
(submitit job arrays, requeued on preemption) and ``wandb`` (a W&B sweep whose agents call
``lssl sweep SPEC --run-id ID``). Every launcher goes through :func:`runner.run_one`, so finished
runs are skipped, interrupted ones resume and the lock keeps two workers off the same run."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_ssl.checkpoints import preempted_signal, request_stop
from lightning_ssl.io import atomic_write_text
from lightning_ssl.optional import require
from lightning_ssl.sweep.record import RunStatus
from lightning_ssl.sweep.runner import SweepPaths, execute, run_one
from lightning_ssl.sweep.spec import Run, SweepSpec, expand, load_spec

log = logging.getLogger(__name__)


class _StopRequest:
    """While active, SIGTERM / SIGUSR1 (a scheduler's preemption notice) and Ctrl-C mark the sweep to
    stop before its next run. During a fit the checkpoint callback's handlers take over (the fit
    stops after the current step and saves); while a run sets up, its fit stops after its first
    step and saves (:func:`request_stop`); during evaluation the run finishes and writes its result
    first. A second Ctrl-C quits at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if signum == signal.SIGINT:
            if self.signum == signal.SIGINT:
                raise KeyboardInterrupt
            print(
                "\nCtrl-C: the sweep stops after this run's evaluation (Ctrl-C again to quit at once)",
                file=sys.stderr,
                flush=True,
            )
        self.signum = self.signum or int(signum)
        request_stop(self.signum)

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)):
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        request_stop(None)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Outcome(dict):
    """Run ids by outcome (``done``, ``finished``, ``locked``, ``failed``, ``interrupted``), plus
    ``signal``: the preemption signal that stopped the sweep, else ``None``."""

    signal: int | None = None


def run_local(
    spec: SweepSpec,
    runs: list[Run],
    paths: SweepPaths,
    max_runs: int | None = None,
    trainer_overrides: dict[str, Any] | None = None,
    wandb: str | None = None,
    fail_fast: bool = False,
    progress: Any = None,
    rerun_stale: bool = False,
) -> Outcome:
    """Run the runs one after the other in this process. Returns run ids by outcome: ``done``,
    ``finished`` (skipped), ``locked`` (another runner has it), ``failed``, ``interrupted``
    (preempted by SIGTERM / SIGUSR1: its checkpoint is saved, the sweep stops there; the signal
    is ``outcome.signal``). ``max_runs`` counts the runs actually executed here.
    ``progress`` (e.g. :class:`lightning_ssl.cli.progress.SweepProgress`) is told of each run's
    start (``start(run)``) and end (``end(run, status)``)."""
    outcome = Outcome(
        {s: [] for s in (RunStatus.DONE, RunStatus.FINISHED, RunStatus.LOCKED, RunStatus.FAILED, RunStatus.INTERRUPTED)}
    )
    with _StopRequest() as stop:
        for run in runs:
            if max_runs is not None and len(outcome[RunStatus.DONE]) + len(outcome[RunStatus.FAILED]) >= max_runs:
                break
            if stop.signum is not None:
                break
            if progress is not None:
                progress.start(run)
            try:
                status = run_one(run, spec, paths, trainer_overrides, wandb, rerun_stale=rerun_stale)
            except SIGTERMException:  # the fit saved its checkpoint and stopped: so does the sweep
                stop.signum = stop.signum or preempted_signal() or int(signal.SIGTERM)
                status = RunStatus.INTERRUPTED
            except Exception as err:  # recorded in <run_id>.failed.json by run_one
                log.error("run %s %s failed: %s", run.run_id, run.axes, err)
                outcome[RunStatus.FAILED].append(run.run_id)
                if progress is not None:
                    progress.end(run, RunStatus.FAILED, error=err)
                if fail_fast:
                    raise
                continue
            outcome.setdefault(status, []).append(run.run_id)
            if progress is not None:
                progress.end(run, status)
        outcome.signal = stop.signum
    return outcome


def worker_command(
    spec_path: str | Path, paths_results_root: str | Path, work_root: str | Path, extra: list[str] | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_ssl.cli.sweep",
        str(spec_path),
        "--results",
        str(paths_results_root),
        "--work",
        str(work_root),
        *(extra or []),
    ]


def run_local_gpus(
    spec_path: str | Path, results_root: str | Path, work_root: str | Path, gpus: int, extra: list[str] | None = None
) -> int:
    """``gpus`` worker processes, worker i seeing only GPU i (``CUDA_VISIBLE_DEVICES``); the run
    locks spread the runs over them. Returns the largest exit code.

    Raises:
        ValueError: the machine has fewer than ``gpus`` CUDA GPUs (the workers would otherwise all
            train on the CPU, each thinking it has a GPU of its own).
    """
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus:
        raise ValueError(
            f"--gpus {gpus} asks for {gpus} GPU workers but this machine has {found} CUDA GPU(s); "
            f"pass --gpus {max(found, 1)}" + (" (one process, on the CPU)" if found == 0 else "")
        )
    procs = []
    for i in range(gpus):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(i)}
        procs.append(subprocess.Popen(worker_command(spec_path, results_root, work_root, extra), env=env))
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise


# -- SLURM ---------------------------------------------------------------------------------------


@dataclass
class SlurmOptions:
    """Resources of each job of the array (one run per job).

    Args:
        partition: SLURM partition.
        time_min: time limit per job in minutes; a preempted or timed-out job is requeued and
            resumes from its ``last.ckpt``.
        gpus_per_node: GPUs per node (one DDP process each).
        nodes: nodes per job (multi-node DDP).
        cpus_per_task: CPU cores per process.
        array_parallelism: jobs of the array running at once.
        mem_gb: memory per node.
        folder: submitit's log folder (default ``<results>/slurm``).
        cluster: submitit cluster: ``None`` (auto), ``slurm``, ``local`` or ``debug`` (in-process,
            for tests).
        additional: extra ``slurm_*`` parameters of submitit.
    """

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_node: int = 1
    nodes: int = 1
    cpus_per_task: int = 8
    array_parallelism: int = 64
    mem_gb: int | None = None
    folder: str | None = None
    cluster: str | None = None
    additional: dict[str, Any] = field(default_factory=dict)

    def trainer_overrides(self) -> dict[str, Any]:
        if self.gpus_per_node < 1:
            return {"accelerator": "cpu", "devices": 1, "num_nodes": self.nodes}
        distributed = self.gpus_per_node * self.nodes > 1
        return {
            "accelerator": "gpu",
            "devices": self.gpus_per_node,
            "num_nodes": self.nodes,
            "strategy": "ddp" if distributed else "auto",
        }


def _global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", 0)))


class SweepJob:
    """One array task: run ``run_id`` of the spec. A ``submitit.helpers.Checkpointable``: on
    preemption or time-out submitit calls :meth:`checkpoint`, which requeues the same call; the
    run then resumes from its ``last.ckpt`` (and its lock, owned by the same array task, is
    taken over)."""

    def __init__(
        self,
        spec_path: str | Path,
        results_root: str | Path,
        work_root: str | Path,
        trainer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.spec_path = str(spec_path)
        self.results_root = str(results_root)
        self.work_root = str(work_root)
        self.trainer_overrides = dict(trainer_overrides or {})

    def __call__(self, run_id: str) -> str:
        spec = load_spec(self.spec_path)
        runs = {r.run_id: r for r in expand(spec)}
        if run_id not in runs:
            raise ValueError(f"run {run_id!r} is not in sweep {spec.name!r} any more (its spec changed)")
        paths = SweepPaths.of(spec, self.results_root, self.work_root)
        if _global_rank() != 0:  # DDP followers train alongside rank 0, which holds the lock and writes
            execute(runs[run_id], spec, paths, self.trainer_overrides)
            return "follower"
        return run_one(runs[run_id], spec, paths, self.trainer_overrides)

    def checkpoint(self, run_id: str) -> Any:
        submitit = require("submitit", "slurm", "the SLURM launcher")

        return submitit.helpers.DelayedSubmission(
            SweepJob(self.spec_path, self.results_root, self.work_root, self.trainer_overrides), run_id
        )


def _checkpointable() -> type:
    submitit = require("submitit", "slurm", "the SLURM launcher")

    class CheckpointableSweepJob(SweepJob, submitit.helpers.Checkpointable):
        pass

    return CheckpointableSweepJob


def check_slurm_available(options: SlurmOptions) -> None:
    """A real SLURM submission needs ``sbatch`` on ``PATH``; without it submitit's automatic choice
    would quietly start the jobs as local processes instead.

    Raises:
        ValueError: ``sbatch`` is not found and the cluster is SLURM (or automatic).
    """
    if options.cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise ValueError(
            "--launcher slurm needs SLURM's `sbatch` on PATH, which is not found (this is not a SLURM "
            "login node): submit from the cluster, or use --launcher local "
            "(--slurm-cluster local tries the submitit jobs as local processes)"
        )


def slurm_executor(options: SlurmOptions, folder: str | Path) -> Any:
    submitit = require("submitit", "slurm", "the SLURM launcher (--launcher slurm)")

    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
    params: dict[str, Any] = {
        "timeout_min": options.time_min,
        "nodes": options.nodes,
        "tasks_per_node": max(1, options.gpus_per_node),
        "cpus_per_task": options.cpus_per_task,
        "gpus_per_node": options.gpus_per_node,
    }
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    if executor.cluster == "slurm":
        params["slurm_array_parallelism"] = options.array_parallelism
        if options.partition:
            params["slurm_partition"] = options.partition
        params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in options.additional.items()})
    executor.update_parameters(**params)
    return executor


def submit_slurm(
    spec_path: str | Path,
    spec: SweepSpec,
    run_ids: list[str],
    results_root: str | Path,
    work_root: str | Path,
    options: SlurmOptions,
) -> list[Any]:
    """Submit one array job of the given runs; returns the submitit jobs."""
    if not run_ids:
        return []
    check_slurm_available(options)
    folder = options.folder or Path(results_root) / spec.name / "slurm"
    executor = slurm_executor(options, folder)
    job = _checkpointable()(spec_path, results_root, work_root, options.trainer_overrides())
    if executor.cluster == "debug":  # the debug executor has no arrays: submit one by one
        return [executor.submit(job, run_id) for run_id in run_ids]
    return executor.map_array(job, run_ids)


# -- W&B -----------------------------------------------------------------------------------------


def wandb_sweep_config(
    spec_path: str | Path, spec: SweepSpec, runs: list[Run], results_root: str | Path, work_root: str | Path
) -> dict[str, Any]:
    """A W&B grid sweep whose parameters are the spec's axes (method, balanced_twin, seed, ...), so
    W&B's parallel-coordinates and importance panels show them; each agent call runs the run of its
    axis values through ``lssl sweep SPEC --select axis=value ...`` (a floor ignores the axes it has
    not got: RawPixels has no seed, so every seed's call finds the same run, finished after the
    first)."""
    axes: dict[str, list[Any]] = {}
    for run in runs:
        for key, value in run.axes.items():
            if value not in axes.setdefault(key, []):
                axes[key].append(value)
    return {
        "name": spec.name,
        "description": spec.description,
        "method": "grid",
        "parameters": {key: {"values": values} for key, values in axes.items()},
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "lightning_ssl.cli.sweep",
            str(Path(spec_path).resolve()),
            "--results",
            str(Path(results_root).resolve()),
            "--work",
            str(Path(work_root).resolve()),
            "--wandb",
            spec.name,
            "--select",
            "${args_no_hyphens}",
        ],
    }


def select_runs(runs: list[Run], selection: list[str]) -> list[Run]:
    """The runs whose axes match every ``axis=value`` of ``selection`` that they have (values compared
    as text, as W&B passes them; a boolean in either case, as the progress lines print it:
    ``twin=false``); an unknown axis is an error naming the axes."""
    wanted: dict[str, str] = {}
    known = {k for run in runs for k in run.axes}
    for item in selection:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--select takes axis=value, got {item!r}")
        if key not in known:
            raise ValueError(f"--select: the sweep has no axis {key!r}; its axes: {', '.join(sorted(known))}")
        wanted[key] = value

    def matches(value: Any, text: str) -> bool:
        return str(value).lower() == text.lower() if isinstance(value, bool) else str(value) == text

    return [run for run in runs if all(matches(run.axes[k], v) for k, v in wanted.items() if k in run.axes)]


def write_wandb_sweep(
    spec_path: str | Path,
    spec: SweepSpec,
    runs: list[Run],
    results_root: str | Path,
    work_root: str | Path,
    project: str | None = None,
    entity: str | None = None,
) -> tuple[Path, str]:
    """Write ``<results>/<sweep>/wandb_sweep.yaml``; returns it and the commands to start the sweep."""
    config = wandb_sweep_config(spec_path, spec, runs, results_root, work_root)
    path = atomic_write_text(
        Path(results_root) / spec.name / "wandb_sweep.yaml", yaml.safe_dump(config, sort_keys=False)
    )
    where = f"{entity + '/' if entity else ''}{project or spec.name}"
    commands = (
        f"wandb sweep --project {project or spec.name}{' --entity ' + entity if entity else ''} {path}\n"
        f"wandb agent {where}/SWEEP_ID   # SWEEP_ID is printed by `wandb sweep`; start one agent per GPU"
    )
    return path, commands
