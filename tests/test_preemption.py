"""A preempted run exits non-zero after saving (real processes, real signals); its logs and
checkpoints continue cleanly when it is started again."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.utilities.exceptions import SIGTERMException

from datamodules.digits import DigitsLT
from lightning_ssl.checkpoints import (
    AtomicModelCheckpoint,
    latest_valid_checkpoint,
    preemption_exit_code,
)
from lightning_ssl.cli.main import main
from lightning_ssl.loggers import ResumableCSVLogger, ResumableTensorBoardLogger
from lightning_ssl.methods import SimCLR
from tests.fixtures import tiny_simclr_fit

ROOT = Path(__file__).resolve().parents[1]


class SignalAtStep(pl.Callback):
    """Sends this process the signal named in ``$LSSL_TEST_SIGNAL`` (``SIGTERM:3``) once the global
    step reaches 3: a scheduler's preemption notice, delivered by the kernel like the real one."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        name, _, step = os.environ.get("LSSL_TEST_SIGNAL", "").partition(":")
        if name and step.isdigit() and trainer.global_step == int(step):
            os.kill(os.getpid(), getattr(signal, name))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """``SIGTERM:setup``: the signal comes while the run sets up, before Lightning's handlers."""
        self._at("setup")

    def on_train_end(self, trainer: pl.Trainer, *args: object) -> None:
        """``SIGTERM:end``: the signal comes after the last step, as the run's training ends."""
        self._at("end")

    @staticmethod
    def _at(moment: str) -> None:
        name, _, when = os.environ.get("LSSL_TEST_SIGNAL", "").partition(":")
        if name and when == moment:
            os.kill(os.getpid(), getattr(signal, name))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory of the commands this process runs itself (``main``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # lssl appends the cwd: undone after the test
    monkeypatch.delenv("LSSL_TEST_SIGNAL", raising=False)
    return tmp_path


def lssl(args: list[str], cwd: Path, sig: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LSSL_TEST_SIGNAL", None)
    if sig:
        env["LSSL_TEST_SIGNAL"] = sig
    return subprocess.run(
        [sys.executable, "-m", "lightning_ssl.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


FIT = tiny_simclr_fit(
    1,
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.logger",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.limit_val_batches",
    "0",
    "--trainer.callbacks",
    "[]",
    "--trainer.callbacks+=lightning_ssl.checkpoints.AtomicModelCheckpoint",
    "--trainer.callbacks+=tests.test_preemption.SignalAtStep",
)


@pytest.mark.parametrize(
    ("sig", "code", "why"),
    [
        ("SIGTERM", 143, "preempted (signal 15)"),
        ("SIGUSR1", 138, "preempted (signal 10)"),
        ("SIGINT", 130, "interrupted (Ctrl-C)"),
    ],
)
def test_fit_exits_128_plus_signal_after_saving(tmp_path: Path, sig: str, code: int, why: str, in_tmp: Path) -> None:
    proc = lssl(FIT, tmp_path, f"{sig}:3")
    assert proc.returncode == code, proc.stderr[-2000:]
    (last,) = (tmp_path / "runs").rglob("last.ckpt")  # the run's own folder
    assert proc.stderr.strip().splitlines()[-1] == (
        f"lssl fit: {why}; state saved in {last.relative_to(tmp_path)}, run the same command to resume"
    )
    assert "Traceback" not in proc.stderr
    folder = last.parent
    assert torch.load(last, weights_only=False)["global_step"] == 3
    if sig == "SIGUSR1":  # its resume (exact, step for step): tests/test_exact_resume.py
        return
    saved = (folder / "last.ckpt").read_bytes()
    assert main(FIT) == 0  # the same command, no signal (in this process: no second start-up): resumes, finishes
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 7  # 494 images / 64
    assert saved != (folder / "last.ckpt").read_bytes()


def test_exit_code_helper() -> None:
    assert preemption_exit_code(SIGTERMException()) in (143, 138)
    assert preemption_exit_code(RuntimeError("crash")) is None


def two_seed_spec(name: str, length: dict) -> dict:
    """A sweep of two tiny SimCLR runs (seeds 0 and 1) whose trainer carries :class:`SignalAtStep`."""
    return {
        "name": name,
        "base": {
            "seed_everything": 0,
            "model": {
                "class_path": "SimCLR",
                "init_args": {"backbone": "resnet_tiny", "image_size": 16, "proj_hidden_dim": 16, "proj_output_dim": 8},
            },
            "data": {"class_path": "DigitsLT", "init_args": {"batch_size": 64}},
            "trainer": {
                **length,
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "num_sanity_val_steps": 0,
                "callbacks": [{"class_path": "tests.test_preemption.SignalAtStep"}],
            },
        },
        "grid": {"seed": [0, 1]},
        "evaluation": {"knn_k": 5},
        "floors": [],
    }


@pytest.mark.parametrize(("sig", "code", "by"), [("SIGTERM", 143, "signal 15"), ("SIGINT", 130, "Ctrl-C")])
def test_sweep_prints_summary_and_exits_nonzero_when_a_run_is_preempted(
    tmp_path: Path, sig: str, code: int, by: str, in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = two_seed_spec("pre", {"max_epochs": 1})
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump(spec))
    dry_run = ["sweep", str(path), "--results", "res", "--work", "work", "--dry-run"]
    assert main(dry_run) == 0  # the listing in this process; the preempted sweep below is a real one
    first, second = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:2]]
    done = tmp_path / "res" / "pre" / f"{second}.json"  # a finished result of the other run
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"run_id": second, "metrics": {"linear_full/acc_top1": 0.5}, "seed": 1}))
    before = done.read_bytes()
    proc = lssl(["sweep", str(path), "--results", "res", "--work", "work"], tmp_path, f"{sig}:2")
    assert proc.returncode == code, proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("sweep 'pre': ") and summary.endswith(
        f"1 interrupted, stopped by {by}: re-run the same command to resume ({Path('res', 'pre')})"
    )
    assert re.search(rf"^1/\d+ interrupted {first} SimCLR seed=0  preempted", proc.stderr, re.M)  # one line per run
    assert "Traceback" not in proc.stderr
    assert done.read_bytes() == before  # nothing already computed is touched
    results = tmp_path / "res" / "pre"
    assert sorted(p.name for p in results.iterdir()) == [done.name]  # no result, lock or failure record
    ckpt = torch.load(tmp_path / "work" / "pre" / first / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert main(dry_run) == 0
    assert f"{first}  interrupted" in capsys.readouterr().out


# -- logs and checkpoints across a resume ---------------------------------------------------------


class TermAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def fit(out: Path, stop_at: int | None = None) -> None:
    pl.seed_everything(0, verbose=False)
    model = SimCLR(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=8)
    ckpt_dir = out / "checkpoints"
    callbacks: list[pl.Callback] = [AtomicModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2)]
    if stop_at is not None:
        callbacks.append(TermAt(stop_at))
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        deterministic=True,
        log_every_n_steps=1,
        callbacks=callbacks,
        logger=[ResumableCSVLogger(out), ResumableTensorBoardLogger(out)],
    )
    last = latest_valid_checkpoint(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else None
    trainer.fit(model, DigitsLT(batch_size=64), ckpt_path=str(last) if last else None)


def csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "logs" / "version_0" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def tb_steps(out: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb" / "version_0"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_logs_and_checkpoints_continue_across_a_preemption(tmp_path: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    fit(full)
    with pytest.raises(SIGTERMException):
        fit(cut, stop_at=5)
    assert [r["step"] for r in csv_rows(cut)] == ["0", "1", "2", "3", "4"]  # 494 / 64 = 7 steps per epoch
    ckpts = cut / "checkpoints"
    # last.ckpt rolled every 2 steps, then the save at the preemption (step 5) and last.ckpt with it
    assert {p.name for p in ckpts.iterdir()} == {"epoch=0-step=5.ckpt", "last.ckpt"}
    (ckpts / "epoch=0-step=5.ckpt.tmp").write_bytes(b"a write killed before its rename")
    fit(cut)
    # the resumed run's CSV holds every row, once, with the values of the uninterrupted run
    assert csv_rows(cut) == csv_rows(full)
    assert len(csv_rows(cut)) == 14
    assert tb_steps(cut, "train/loss") == tb_steps(full, "train/loss") == list(range(14))
    # the checkpoint saved at the preemption and the orphan temporary file are gone: what remains is
    # what the callback keeps (save_top_k=0: the rolling last.ckpt only)
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize(
    ("moment", "first", "results"),
    [("setup", "interrupted", 0), ("end", "done", 1)],
)
def test_a_signal_outside_the_steps_stops_the_sweep_before_its_next_run(
    tmp_path: Path, moment: str, first: str, results: int
) -> None:
    """A preemption notice while a run sets up (before Lightning has its handlers; it once let that
    whole run train) stops the fit after its first step with a checkpoint; one after the last step
    lets the run write its result. Either way no further run starts and the sweep exits 143."""
    spec = two_seed_spec("late", {"max_steps": 3})
    path = tmp_path / "late.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = lssl(["sweep", str(path), "--results", "res", "--work", "work"], tmp_path, f"SIGTERM:{moment}")
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert re.search(rf"^1/2 {first} ", proc.stderr, re.M), proc.stderr[-2000:]
    assert not re.search(r"^2/2 ", proc.stderr, re.M), proc.stderr[-2000:]
    assert (
        proc.stdout.strip()
        .splitlines()[-1]
        .endswith(f"1 {first}, stopped by signal 15: re-run the same command to resume ({Path('res', 'late')})")
    )
    assert len(list((tmp_path / "res" / "late").glob("*.json"))) == results
    if moment == "setup":
        (ckpt,) = (tmp_path / "work" / "late").glob("*/checkpoints/last.ckpt")
        assert torch.load(ckpt, weights_only=False)["global_step"] == 1
