"""Launchers and locks: two runners never take the same run, a failing run loses no finished
result, SLURM jobs are built with submitit (debug executor, no cluster), W&B sweep config."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lightning_ssl.sweep import launchers, runner
from lightning_ssl.sweep.identity import COMPUTE_VERSION
from lightning_ssl.sweep.lock import RunLock, is_stale
from lightning_ssl.sweep.runner import SweepPaths, run_status
from lightning_ssl.sweep.spec import expand, load_spec, spec_from_dict

SPEC = {
    "name": "stub",
    "base": {
        "model": {"class_path": "SimCLR", "init_args": {"backbone": "resnet_tiny"}},
        "data": {"class_path": "DigitsLT"},
    },
    "grid": {"seed": [0, 1, 2, 3, 4, 5]},
    "floors": [],
}


def stub_execute(log: Path, fail: int | None = None, sleep: float = 0.0):
    """An ``execute`` that records who ran which run instead of training."""

    def execute(run, spec, paths, trainer_overrides=None, wandb=None):
        with open(log, "a") as f:
            f.write(f"{run.run_id} {os.getpid()}\n")
        time.sleep(sleep)
        if run.seed == fail:
            raise RuntimeError(f"run with seed {fail} breaks")
        return {
            "run_id": run.run_id,
            "metrics": {},
            "seed": run.seed,
            "config": run.config,
            "compute_version": COMPUTE_VERSION,
            "evaluation_protocol": run.evaluation,
            "transfer_protocol": run.transfer,
        }

    return execute


def test_lock_excludes_and_stale_locks_are_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "r.lock"
    first = RunLock(path)
    assert first.acquire()
    assert not RunLock(path).acquire()  # held by a live process
    first.release()
    assert not path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "token": "old"}))
    assert is_stale(path)  # its owner (a killed runner) is gone
    second = RunLock(path)
    assert second.acquire() and json.loads(path.read_text())["pid"] == os.getpid()
    second.release()
    path.write_text(json.dumps({"pid": 1, "host": "another-host", "token": "x"}))
    assert not is_stale(path)  # another host, fresh heartbeat
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert is_stale(path)  # its heartbeat stopped an hour ago


def _worker(spec_dict: dict, results: str, log: str) -> None:
    spec = spec_from_dict(spec_dict)
    runner.execute = stub_execute(Path(log), sleep=0.3)
    paths = SweepPaths.of(spec, results, results + "_work")
    launchers.run_local(spec, expand(spec, validate=False), paths)


def test_two_runners_never_run_the_same_run(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(SPEC, str(tmp_path / "res"), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = log.read_text().split()
    ids, pids = lines[::2], lines[1::2]
    assert len(ids) == len(set(ids)) == 6  # every run exactly once
    assert len(set(pids)) == 2  # and both runners worked
    assert len(list((tmp_path / "res" / "stub").glob("*.json"))) == 6
    assert not list((tmp_path / "res" / "stub").glob("*.lock"))


def test_failing_run_keeps_finished_results_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_from_dict(SPEC)
    runs = expand(spec, validate=False)
    paths = SweepPaths.of(spec, tmp_path / "res", tmp_path / "work")
    log = tmp_path / "log.txt"
    monkeypatch.setattr(runner, "execute", stub_execute(log, fail=2))
    outcome = launchers.run_local(spec, runs, paths)
    assert len(outcome["done"]) == 5 and outcome["failed"] == [runs[2].run_id]
    assert [run_status(paths, r.run_id) for r in runs].count("finished") == 5
    assert run_status(paths, runs[2].run_id) == "failed"
    assert not [p for p in paths.results.iterdir() if p.name.startswith(".") or p.suffix == ".lock"]
    monkeypatch.setattr(runner, "execute", stub_execute(log))
    outcome = launchers.run_local(spec, runs, paths, max_runs=3)
    assert outcome["done"] == [runs[2].run_id] and len(outcome["finished"]) == 5  # only the failed one reran
    assert log.read_text().split()[::2].count(runs[0].run_id) == 1


def write_spec(tmp_path: Path) -> Path:
    path = tmp_path / "stub.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "grid": {"seed": [0, 1]}}))
    return path


def test_slurm_jobs_with_submitit_debug_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    path = write_spec(tmp_path)
    spec = load_spec(path)
    ids = [r.run_id for r in expand(spec)]
    monkeypatch.setattr(runner, "execute", stub_execute(tmp_path / "log.txt"))
    options = launchers.SlurmOptions(cluster="debug", gpus_per_node=0, time_min=5)
    jobs = launchers.submit_slurm(path, spec, ids, tmp_path / "res", tmp_path / "work", options)
    assert [job.result() for job in jobs] == ["done", "done"]
    assert sorted(p.stem for p in (tmp_path / "res" / "stub").glob("*.json")) == sorted(ids)
    # preemption: submitit calls checkpoint(), which requeues the same run of the same sweep
    job = launchers._checkpointable()(path, tmp_path / "res", tmp_path / "work", {})
    delayed = job.checkpoint(ids[0])
    assert delayed.args == (ids[0],) and delayed.function.spec_path == str(path)
    # the SLURM parameters of a real submission (the executor is built, nothing is submitted)
    import submitit.slurm.slurm as slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # pretend srun exists
    executor = launchers.slurm_executor(
        launchers.SlurmOptions(cluster="slurm", partition="gpu", gpus_per_node=4, nodes=2, time_min=90),
        tmp_path / "logs",
    )
    params = executor._executor.parameters
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 4 and params["nodes"] == 2
    assert params["ntasks_per_node"] == 4 and params["time"] == 90
    assert launchers.SlurmOptions(gpus_per_node=4, nodes=2).trainer_overrides() == {
        "accelerator": "gpu",
        "devices": 4,
        "num_nodes": 2,
        "strategy": "ddp",
    }


def test_wandb_sweep_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lightning_ssl.cli.sweep import run as sweep_cli

    path = write_spec(tmp_path)
    assert sweep_cli([str(path), "--launcher", "wandb", "--results", str(tmp_path / "res"), "--project", "p"]) == 0
    config = yaml.safe_load((tmp_path / "res" / "stub" / "wandb_sweep.yaml").read_text())
    runs = expand(load_spec(path))
    # the parameters are the spec's axes, so W&B's panels show them
    assert config["method"] == "grid" and config["parameters"]["seed"]["values"] == [0, 1]
    assert config["parameters"]["method"]["values"] == ["SimCLR"]
    assert "lightning_ssl.cli.sweep" in config["command"] and config["command"][-2:] == [
        "--select",
        "${args_no_hyphens}",
    ]
    assert "wandb agent" in capsys.readouterr().out
    # what an agent passes selects exactly the run of those axis values
    (chosen,) = launchers.select_runs(runs, ["method=SimCLR", "seed=1"])
    assert chosen.seed == 1
    with pytest.raises(ValueError, match="the sweep has no axis 'lr'; its axes: dataset, method, seed"):
        launchers.select_runs(runs, ["lr=0.1"])


def test_select_takes_a_boolean_as_the_progress_lines_print_it() -> None:
    from lightning_ssl.sweep.spec import spec_from_dict

    raw = {
        "name": "x",
        "base": {"model": {"init_args": {"backbone": "resnet_tiny"}}, "data": {"class_path": "DigitsLT"}},
        "grid": {"method": ["SimCLR"], "balanced_twin": [False, True]},
        "floors": [],
    }
    runs = expand(spec_from_dict(raw), validate=False)
    for text in ("false", "False"):
        (chosen,) = launchers.select_runs(runs, ["method=SimCLR", f"balanced_twin={text}"])
        assert chosen.axes["balanced_twin"] is False
    assert launchers.select_runs(runs, ["method=simclr"]) == []  # names stay exact
