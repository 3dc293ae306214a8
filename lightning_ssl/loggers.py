"""Weights & Biases set-up and the per-class charts pushed to it.

W&B is optional (``pip install 'lightning-ssl[wandb]'``). Without credentials the run is logged
offline (``wandb sync`` uploads it later), and one line says so.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from lightning_ssl.optional import require

log = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    """An API key in the environment or in ~/.netrc (where ``wandb login`` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger_config(project: str, save_dir: str = "runs", run_id: str | None = None) -> dict[str, Any]:
    """LightningCLI logger entry for a ``WandbLogger``; offline when no credentials are configured."""
    require("wandb", "wandb", "W&B logging (--wandb)")
    offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_credentials_present()
    if offline:
        print(f"W&B: no credentials found (WANDB_API_KEY or `wandb login`): logging offline to {save_dir}/wandb; "
              f"upload later with `wandb sync {save_dir}/wandb/offline-run-*`")
    init_args: dict[str, Any] = {"project": project, "save_dir": save_dir, "offline": offline}
    if run_id:
        init_args.update({"id": run_id, "resume": "allow"})
    return {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": init_args}


class WandbPerClassCharts(pl.Callback):
    """After each validation epoch, pushes to every W&B logger, for each probe callback's latest
    per-class accuracy: a per-class bar chart and an accuracy-vs-class-frequency scatter.

    Many / medium / few accuracies are logged as scalars by the probes themselves, so W&B shows
    them as curves over training.
    """

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
        if not loggers or trainer.sanity_checking or not trainer.is_global_zero:
            return
        import wandb

        counts = np.asarray(getattr(trainer.datamodule, "class_counts", []))
        for cb in trainer.callbacks:
            for probe, acc in getattr(cb, "last_per_class", {}).items():
                rows = [[c, float(a), int(counts[c]) if c < counts.size else 0] for c, a in enumerate(acc)]
                table = wandb.Table(data=rows, columns=["class", "accuracy", "train_count"])
                charts = {
                    f"{probe}/per_class": wandb.plot.bar(table, "class", "accuracy", title=f"{probe}: per-class accuracy"),
                    f"{probe}/acc_vs_frequency": wandb.plot.scatter(
                        table, "train_count", "accuracy", title=f"{probe}: accuracy vs class frequency"),
                }
                for lg in loggers:
                    lg.experiment.log({**charts, "trainer/global_step": trainer.global_step})
