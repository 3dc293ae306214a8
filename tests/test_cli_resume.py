"""`lssl fit` started again with the same config resumes from its last checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_ssl.cli.main import main


class StopAfterEpoch(pl.Callback):
    """Stands in for a kill: the run stops after its first epoch (its checkpoint is saved)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


BASE = ["fit", "--model", "SimCLR", "--model.backbone", "resnet_tiny", "--model.proj_hidden_dim", "16",
        "--model.proj_output_dim", "8", "--data", "DigitsLT", "--data.batch_size", "64", "--trainer.max_epochs", "2",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.logger", "false", "--trainer.limit_val_batches", "0"]
CALLBACKS = ["--trainer.callbacks+=lightning_ssl.checkpoints.AtomicModelCheckpoint"]


def test_same_command_resumes_where_the_run_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
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
    main([*BASE[:-2], "--trainer.limit_val_batches", "0", "--model.temperature", "0.3", "--trainer.callbacks", "[]",
          *CALLBACKS])
    assert "resuming" not in capsys.readouterr().out
    assert len(list((tmp_path / "runs").iterdir())) == 2
