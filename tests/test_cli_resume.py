"""`lssl fit` started again with the same config resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_ssl.cli.main import main
from tests.fixtures import tiny_simclr_fit


class StopAfterEpoch(pl.Callback):
    """Stands in for a kill: the run stops after its first epoch (its checkpoint is saved)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


BASE = tiny_simclr_fit(
    2,
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.logger",
    "false",
    "--trainer.limit_val_batches",
    "0",
)
CALLBACKS = ["--trainer.callbacks+=lightning_ssl.checkpoints.AtomicModelCheckpoint"]


def test_same_command_resumes_where_the_run_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    main([*BASE, "--trainer.callbacks", "[]", *CALLBACKS, "--trainer.callbacks+=tests.test_cli_resume.StopAfterEpoch"])
    (run,) = (tmp_path / "runs").iterdir()  # runs/simclr-digitslt-<hash>/checkpoints/
    assert run.name.startswith("simclr-digitslt-")
    folder = run / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 0
    capsys.readouterr()
    main([*BASE, "--trainer.callbacks", "[]", *CALLBACKS])
    out = capsys.readouterr().out
    assert f"lssl fit: resuming from {Path('runs', run.name, 'checkpoints', 'last.ckpt')}" in out
    final = torch.load(folder / "last.ckpt", weights_only=False)
    assert final["epoch"] == 1 and final["global_step"] == 14  # 7 steps per epoch, two epochs in all
    # another config is another run: it does not pick these checkpoints up
    main(
        [
            *BASE[:-2],
            "--trainer.limit_val_batches",
            "0",
            "--model.temperature",
            "0.3",
            "--trainer.callbacks",
            "[]",
            *CALLBACKS,
        ]
    )
    assert "resuming" not in capsys.readouterr().out
    assert len(list((tmp_path / "runs").iterdir())) == 2


# -- a real kill: SIGKILL after some epochs, the same command resumes from the epoch checkpoint ---


class KillAtEpoch(pl.Callback):
    """SIGKILLs this process at the start of the epoch named in ``$LSSL_TEST_KILL_EPOCH`` (an
    out-of-memory kill or a lost node: no handler runs, nothing is saved at the kill)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if str(trainer.current_epoch) == os.environ.get("LSSL_TEST_KILL_EPOCH"):
            os.kill(os.getpid(), signal.SIGKILL)


def _lssl(args: list[str], cwd: Path, kill_epoch: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("LSSL_TEST_KILL_EPOCH", None)
    if kill_epoch is not None:
        env["LSSL_TEST_KILL_EPOCH"] = str(kill_epoch)
    return subprocess.run(
        [sys.executable, "-m", "lightning_ssl.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_sigkill_after_epochs_resumes_from_the_epoch_checkpoint(tmp_path: Path) -> None:
    """The default callbacks of `lssl fit` write last.ckpt after every epoch: SIGKILL at the start of
    the third of four epochs leaves the checkpoint of epoch 2 on disk; the same command resumes
    from it, trains only the last two epochs, keeps the logged rows of the killed session, and
    ends with the weights of an uninterrupted run."""
    args = tiny_simclr_fit(
        4,
        "--trainer.limit_val_batches",
        "0",
        "--trainer.check_val_every_n_epoch",
        "4",  # validation at the end only (the sweeps' setting)
        "--trainer.deterministic",
        "true",
        "--trainer.log_every_n_steps",
        "1",
        "--seed_everything",
        "3",
        "--trainer.callbacks+=tests.test_cli_resume.KillAtEpoch",
    )
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir(), cut.mkdir()
    assert _lssl(args, full).returncode == 0
    killed = _lssl(args, cut, kill_epoch=2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    (run,) = (cut / "runs").iterdir()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 14  # epochs 0 and 1 done, 7 steps each
    resumed = _lssl(args, cut)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "last.ckpt" in resumed.stdout
    a = torch.load(next((full / "runs").iterdir()) / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 28
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    steps = [line.split(",") for line in (run / "csv" / "metrics.csv").read_text().splitlines()[1:]]
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    logged = sorted({int(float(row[header.index("step")])) for row in steps if row[header.index("step")]})
    assert logged[0] == 0 and logged[-1] >= 27  # rows from both sessions, the first kept


def test_a_checkpoint_of_other_settings_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Lightning would let the checkpoint's hyper-parameters replace the command's model; a
    mismatch is a one-line error naming it, and ``--ckpt_config true`` uses the checkpoint's."""
    monkeypatch.chdir(tmp_path)
    assert main([*BASE, "--trainer.max_epochs", "1"]) == 0
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    capsys.readouterr()
    moco = ["fit", "--model", "MoCoV2", "--model.backbone", "resnet_tiny", *BASE[7:], "--ckpt_path", str(ckpt)]
    assert main(moco) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained with other settings" in err
    assert (
        "model: lightning_ssl.methods.mocov2.MoCoV2 here, lightning_ssl.methods.simclr.SimCLR in the checkpoint" in err
    )
    other_backbone = [*BASE[:3], "--model.backbone", "resnet18", *BASE[5:], "--ckpt_path", str(ckpt)]
    assert main(other_backbone) == 2
    assert "model.backbone: resnet18 here, resnet_tiny in the checkpoint" in capsys.readouterr().err
    other_data = [*BASE, "--data.imbalance_ratio", "0.5", "--ckpt_path", str(ckpt)]
    assert main(other_data) == 2
    assert "data.imbalance_ratio: 0.5 here" in capsys.readouterr().err
    # asked for explicitly: the checkpoint's model config is trained, and the command says so
    assert main([*other_backbone, "--ckpt_config", "true", "--trainer.max_epochs", "2"]) == 0
    assert (
        "--ckpt_config: training the checkpoint's model config (model.backbone: resnet18 here"
        in capsys.readouterr().out
    )
    assert main([*BASE, "--ckpt_path", str(tmp_path / "nope.ckpt")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
