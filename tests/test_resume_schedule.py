"""The per-step learning-rate and momentum schedules continue exactly across a resume."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from datamodules.digits import DigitsLT
from lightning_ssl.methods import MoCoV2


class RecordSchedule(pl.Callback):
    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.lrs: list[float] = []
        self.momenta: list[float] = []
        self.stop_after_epoch = stop_after_epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.momenta.append(pl_module.schedule_value(pl_module.momentum_values))

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if self.stop_after_epoch is not None and trainer.current_epoch + 1 == self.stop_after_epoch:
            trainer.should_stop = True


def make(tmp: Path, callback: pl.Callback) -> tuple[pl.Trainer, MoCoV2, DigitsLT]:
    pl.seed_everything(0)
    model = MoCoV2(
        backbone="resnet_tiny",
        image_size=16,
        proj_hidden_dim=16,
        proj_output_dim=8,
        queue_size=32,
        lr=0.1,
        warmup_epochs=1,
        base_momentum=0.99,
        final_momentum=1.0,
    )
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
        callbacks=[callback, pl.callbacks.ModelCheckpoint(dirpath=tmp, save_last=True)],
    )
    return trainer, model, DigitsLT(batch_size=16)


def test_schedules_first_last_and_resume_continuity(tmp_path: Path) -> None:
    full = RecordSchedule()
    trainer, model, dm = make(tmp_path / "full", full)
    trainer.fit(model, dm)
    assert len(full.lrs) == 9
    assert full.lrs[0] == 0.0 and max(full.lrs) == 0.1 and full.lrs[3] == 0.1  # warm-up = 1 epoch = 3 steps
    assert full.momenta[0] == 0.99 and full.momenta[-1] == 1.0 and full.momenta == sorted(full.momenta)

    first = RecordSchedule(stop_after_epoch=1)
    trainer, model, dm = make(tmp_path / "part", first)
    trainer.fit(model, dm)
    second = RecordSchedule()
    trainer, model, dm = make(tmp_path / "part", second)
    trainer.fit(model, dm, ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert first.lrs + second.lrs == full.lrs
    assert first.momenta + second.momenta == full.momenta
