"""End-to-end fits under Lightning's ddp_spawn on 2 CPU processes (never strategy="ddp" in pytest)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from datamodules.digits import DigitsLT
from lightning_ssl.eval.callbacks import KNNMonitor, OnlineLinearProbe
from lightning_ssl.methods import MoCoV2


class SaveQueue(pl.Callback):
    """Writes each rank's MoCo queue and pointer after training."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(
            {"queue": pl_module.queue.cpu(), "ptr": int(pl_module.queue_ptr)},
            self.out / f"queue_rank{trainer.global_rank}.pt",
        )


def test_ddp_spawn_fit_moco_queue_identical_on_ranks(tmp_path: Path) -> None:
    model = MoCoV2(
        backbone="resnet_tiny", image_size=16, proj_hidden_dim=32, proj_output_dim=16, queue_size=64, lr=0.05
    )
    dm = DigitsLT(batch_size=16, eval_batch_size=128)
    trainer = pl.Trainer(
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveQueue(tmp_path), OnlineLinearProbe(), KNNMonitor(k=20)],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    q0 = torch.load(tmp_path / "queue_rank0.pt")
    q1 = torch.load(tmp_path / "queue_rank1.pt")
    # 3 steps x 2 ranks x 16 keys = 96 keys written into a queue of 64: it wrapped around
    assert q0["ptr"] == q1["ptr"] == 96 % 64
    assert torch.equal(q0["queue"], q1["queue"])
    # the keys of rank 1 differ from rank 0's: gathered, not just local
    assert not torch.equal(q0["queue"][:16], q0["queue"][16:32])
