"""``bash benchmarks/gpu_check.sh --smoke``: the GPU check's code path on the CPU, without faiss or
wandb; every part reports its own JSON, and a part that fails (raising, or ending the process) is
reported while the other parts still run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datamodules.profiles import profile_counts

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = ("throughput", "kernels", "learning", "nonfinite")
RECORD_KEYS = {"part", "title", "status", "smoke", "seconds", "cap_s", "error", "traceback", "results"}
RESULT_KEYS = {
    "throughput": {"config", "runs", "goals"},
    "kernels": {"knn", "kmeans", "kmeans_backends_available", "goals"},
    "learning": {"data", "model", "floors", "calibration", "train_budget_s", "long_tailed", "balanced_twin", "goals"},
    "nonfinite": {
        "config",
        "images_per_s",
        "raise_images_per_s",
        "ignore_images_per_s",
        "ratio_ignore_over_raise",
        "check_cost_percent",
    },
}


def run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``argv`` in its own session; on a timeout the whole group goes (no orphaned Python or tee)."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv)} did not finish within {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_check(tmp_path: Path, out: Path, fail: str = "") -> subprocess.CompletedProcess:
    """The shell script as a user runs it, with faiss and wandb made unimportable."""
    blocked = tmp_path / "blocked"
    blocked.mkdir(exist_ok=True)
    for name in ("faiss", "wandb"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is blocked by tests/test_gpu_check.py')\n")
    path = os.pathsep.join(filter(None, [str(blocked), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": path, "GPU_CHECK_FAIL": fail}
    # ~35 s on 2 idle cores; the generous limit is for a machine shared with long benchmarks
    return run(["nice", "-n", "19", "bash", str(SCRIPT), "--smoke", str(out)], env, timeout=2400)


def records(out: Path) -> dict[str, dict]:
    return {name: json.loads((out / f"{name}.json").read_text()) for name in PARTS}


def test_smoke_runs_every_part_without_faiss_or_wandb(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_check(tmp_path, out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    env = json.loads((out / "environment.json").read_text())
    assert env["faiss_importable"] is False and env["wandb_importable"] is False
    assert env["kmeans_backends"] == ["torch"]
    recs = records(out)
    for name, rec in recs.items():
        assert rec["status"] == "ok", (name, rec["error"], rec["traceback"])
        assert RECORD_KEYS <= rec.keys() and RESULT_KEYS[name] <= rec["results"].keys(), name
        assert rec["smoke"] is True and rec["error"] is None

    runs = recs["throughput"]["results"]["runs"]
    assert [r["name"] for r in runs] == ["simclr", "simclr+compile", "mocov2", "swav"]
    batch = recs["throughput"]["results"]["config"]["batch_size"]
    for r in runs:
        assert r["status"] == "ok", r
        assert math.isclose(r["suite"]["images_per_s"], batch / r["suite"]["s_per_step"])
        assert math.isclose(r["speedup"], r["conventional"]["s_per_step"] / r["suite"]["s_per_step"])
        assert r["suite"]["flops_per_step"] > 0 and r["suite"]["mfu"] is None  # no peak is known for a CPU
    # SwAV's 2 small crops add FLOPs to the same two large views; compiling does not change them
    by_name = {r["name"]: r["suite"]["flops_per_step"] for r in runs}
    assert by_name["simclr+compile"] == by_name["simclr"] < by_name["swav"]

    kernels = recs["kernels"]["results"]
    assert kernels["kmeans"]["seconds"].keys() == {"torch"}
    assert [g["met"] for g in kernels["goals"]] == [g["value"] < g["target"] for g in kernels["goals"]]

    learning = recs["learning"]["results"]
    lt, twin = learning["long_tailed"], learning["balanced_twin"]
    counts = profile_counts(10, 100, "exp", 0.01)  # the smoke fixture: 100 images per class
    assert lt["class_counts"] == counts.tolist() and lt["pretrain_images"] == counts.sum() == 242
    assert twin["class_counts"] == [24] * 10  # the balanced twin: N // C per class
    epoch_s = learning["calibration"]["epoch_seconds"][-1]
    assert lt["epochs_planned"] == max(1, int(learning["train_budget_s"] // epoch_s))
    steps_per_epoch = 242 // recs["learning"]["results"]["model"]["batch_size"]
    assert lt["steps"] == lt["epochs_done"] * steps_per_epoch
    for run in (lt, twin):
        assert 0.0 <= run["linear_acc"] <= 1.0 and 0.0 <= run["knn_acc"] <= 1.0
        assert run["linear_acc"] == run["metrics"]["linear_full/acc_top1"]

    nf = recs["nonfinite"]["results"]
    assert nf["raise_images_per_s"] == np.median(nf["images_per_s"]["raise"])
    assert math.isclose(nf["ratio_ignore_over_raise"], nf["ignore_images_per_s"] / nf["raise_images_per_s"])

    summary = (out / "summary.md").read_text()
    assert summary in proc.stdout
    for name in PARTS:
        assert f"| {name} | ok |" in summary


def test_a_failing_part_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_check(tmp_path, out, fail="throughput,learning:exit")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    recs = records(out)
    assert recs["throughput"]["status"] == "error"
    assert "forced failure of part 'throughput'" in recs["throughput"]["error"]
    assert "RuntimeError" in recs["throughput"]["traceback"]
    # learning ended the whole process: the restarted one reports it and runs the rest
    assert recs["learning"]["status"] == "error" and "exit code 3" in recs["learning"]["error"]
    assert "restarting it for the remaining parts" in (out / "log.txt").read_text()
    for name in ("kernels", "nonfinite"):
        assert recs[name]["status"] == "ok", recs[name]["error"]
    summary = (out / "summary.md").read_text()
    assert "| throughput | error |" in summary and "| kernels | ok |" in summary
    assert "**learning**: the process died during this part (exit code 3)" in summary


@pytest.mark.parametrize(
    ("args", "fail", "message"),
    [
        ([], "", "OUT_DIR missing"),
        (["--bogus", "x"], "", "unknown option --bogus"),
        (["{out}"], "kernel", "'kernel' is not PART[:raise|exit] with PART one of throughput, kernels"),
    ],
)
def test_usage_errors_name_the_problem(tmp_path: Path, args: list[str], fail: str, message: str) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_FAIL": fail}
    argv = [a.format(out=tmp_path / "out") for a in args]
    proc = run(["nice", "-n", "19", "bash", str(SCRIPT), *argv], env, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stdout + proc.stderr
    assert "restarting" not in proc.stdout + proc.stderr
