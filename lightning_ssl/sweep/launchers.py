"""Where the runs of a sweep execute: ``local`` (sequential, or one worker per GPU), ``slurm``
(submitit job arrays, requeued on preemption) and ``wandb`` (a W&B sweep whose agents call
``lssl sweep SPEC --run-id ID``). Every launcher goes through :func:`runner.run_one`, so finished
runs are skipped, interrupted ones resume and the lock keeps two workers off the same run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_ssl.optional import require
from lightning_ssl.sweep.runner import SweepPaths, run_one
from lightning_ssl.sweep.spec import Run, SweepSpec, expand, load_spec

log = logging.getLogger(__name__)


def run_local(spec: SweepSpec, runs: list[Run], paths: SweepPaths, max_runs: int | None = None,
              trainer_overrides: dict[str, Any] | None = None, wandb: str | None = None,
              fail_fast: bool = False) -> dict[str, list[str]]:
    """Run the runs one after the other in this process. Returns run ids by outcome: ``done``,
    ``finished`` (skipped), ``locked`` (another runner has it), ``failed``. ``max_runs`` counts
    the runs actually executed here."""
    outcome: dict[str, list[str]] = {"done": [], "finished": [], "locked": [], "failed": []}
    for run in runs:
        if max_runs is not None and len(outcome["done"]) + len(outcome["failed"]) >= max_runs:
            break
        try:
            status = run_one(run, spec, paths, trainer_overrides, wandb)
        except Exception as err:  # recorded in <run_id>.failed.json by run_one
            log.error("run %s %s failed: %s", run.run_id, run.axes, err)
            outcome["failed"].append(run.run_id)
            if fail_fast:
                raise
            continue
        outcome[status].append(run.run_id)
    return outcome


def worker_command(spec_path: str | Path, paths_results_root: str | Path, work_root: str | Path,
                   extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "lightning_ssl.cli.sweep", str(spec_path), "--results", str(paths_results_root),
            "--work", str(work_root), *(extra or [])]


def run_local_gpus(spec_path: str | Path, results_root: str | Path, work_root: str | Path, gpus: int,
                   extra: list[str] | None = None) -> int:
    """``gpus`` worker processes, worker i seeing only GPU i (``CUDA_VISIBLE_DEVICES``); the run
    locks spread the runs over them. Returns the largest exit code."""
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
        return {"accelerator": "gpu", "devices": self.gpus_per_node, "num_nodes": self.nodes,
                "strategy": "ddp" if distributed else "auto"}


def _global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", 0)))


class SweepJob:
    """One array task: run ``run_id`` of the spec. A ``submitit.helpers.Checkpointable``: on
    preemption or time-out submitit calls :meth:`checkpoint`, which requeues the same call; the
    run then resumes from its ``last.ckpt`` (and its lock, owned by the same array task, is
    taken over)."""

    def __init__(self, spec_path: str | Path, results_root: str | Path, work_root: str | Path,
                 trainer_overrides: dict[str, Any] | None = None) -> None:
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
            from lightning_ssl.sweep.runner import execute

            execute(runs[run_id], spec, paths, self.trainer_overrides)
            return "follower"
        return run_one(runs[run_id], spec, paths, self.trainer_overrides)

    def checkpoint(self, run_id: str) -> Any:
        submitit = require("submitit", "slurm", "the SLURM launcher")

        return submitit.helpers.DelayedSubmission(SweepJob(self.spec_path, self.results_root, self.work_root,
                                                           self.trainer_overrides), run_id)


def _checkpointable() -> type:
    submitit = require("submitit", "slurm", "the SLURM launcher")

    class CheckpointableSweepJob(SweepJob, submitit.helpers.Checkpointable):
        pass

    return CheckpointableSweepJob


def slurm_executor(options: SlurmOptions, folder: str | Path) -> Any:
    submitit = require("submitit", "slurm", "the SLURM launcher (--launcher slurm)")

    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
    params: dict[str, Any] = {"timeout_min": options.time_min, "nodes": options.nodes,
                              "tasks_per_node": max(1, options.gpus_per_node), "cpus_per_task": options.cpus_per_task,
                              "gpus_per_node": options.gpus_per_node}
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    if executor.cluster == "slurm":
        params["slurm_array_parallelism"] = options.array_parallelism
        if options.partition:
            params["slurm_partition"] = options.partition
        params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in options.additional.items()})
    executor.update_parameters(**params)
    return executor


def submit_slurm(spec_path: str | Path, spec: SweepSpec, run_ids: list[str], results_root: str | Path,
                 work_root: str | Path, options: SlurmOptions) -> list[Any]:
    """Submit one array job of the given runs; returns the submitit jobs."""
    if not run_ids:
        return []
    folder = options.folder or Path(results_root) / spec.name / "slurm"
    executor = slurm_executor(options, folder)
    job = _checkpointable()(spec_path, results_root, work_root, options.trainer_overrides())
    if executor.cluster == "debug":  # the debug executor has no arrays: submit one by one
        return [executor.submit(job, run_id) for run_id in run_ids]
    return executor.map_array(job, run_ids)


# -- W&B -----------------------------------------------------------------------------------------

def wandb_sweep_config(spec_path: str | Path, spec: SweepSpec, run_ids: list[str], results_root: str | Path,
                       work_root: str | Path) -> dict[str, Any]:
    """A W&B grid sweep over the run ids; each agent call runs one of them through ``lssl sweep``."""
    return {
        "name": spec.name,
        "description": spec.description,
        "method": "grid",
        "parameters": {"run-id": {"values": list(run_ids)}},
        "command": ["${env}", "${interpreter}", "-m", "lightning_ssl.cli.sweep", str(Path(spec_path).resolve()),
                    "--results", str(Path(results_root).resolve()), "--work", str(Path(work_root).resolve()),
                    "--wandb", spec.name, "${args}"],
    }


def write_wandb_sweep(spec_path: str | Path, spec: SweepSpec, run_ids: list[str], results_root: str | Path,
                      work_root: str | Path, project: str | None = None, entity: str | None = None) -> tuple[Path, str]:
    """Write ``<results>/<sweep>/wandb_sweep.yaml``; returns it and the commands to start the sweep."""
    from lightning_ssl.io import atomic_write_text

    config = wandb_sweep_config(spec_path, spec, run_ids, results_root, work_root)
    path = atomic_write_text(Path(results_root) / spec.name / "wandb_sweep.yaml", yaml.safe_dump(config, sort_keys=False))
    where = f"{entity + '/' if entity else ''}{project or spec.name}"
    commands = (f"wandb sweep --project {project or spec.name}{' --entity ' + entity if entity else ''} {path}\n"
                f"wandb agent {where}/SWEEP_ID   # SWEEP_ID is printed by `wandb sweep`; start one agent per GPU")
    return path, commands
