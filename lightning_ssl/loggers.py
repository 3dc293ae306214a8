"""Loggers that survive a resume, Weights & Biases set-up and the per-class charts pushed to it.

* :class:`ResumableCSVLogger` / :class:`ResumableTensorBoardLogger`: a run started again after a
  kill or a preemption continues the same log folder (a fixed ``version``). Lightning's CSV logger
  deletes the earlier ``metrics.csv``; these keep its rows from before the resumed step and drop
  only the rows the resumed run logs again (steps ``>=`` its first step). TensorBoard gets a
  session-start event at that step, which TensorBoard reads as "purge the later events of the
  killed session" (``SummaryWriter(purge_step=...)``).
* W&B is optional (``pip install 'lightning-ssl[wandb]'``). Without credentials the run is logged
  offline (``wandb sync`` uploads it later), and one line says so; a resumed run passes the same
  ``wandb_id`` and continues the same W&B run.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from tensorboard.compat.proto.event_pb2 import Event, SessionLog

from lightning_ssl.optional import require

log = logging.getLogger(__name__)


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept: its header is
    adopted and new rows are appended (the stock writer deletes the file)."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)

    def discard_from(self, step: int) -> int:
        """Drop the rows of ``metrics.csv`` with ``step >= step`` (logged by the killed session
        after the checkpoint the run resumed from); returns how many were dropped."""
        if not os.path.isfile(self.metrics_file_path):
            return 0
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if not r.get("step") or float(r["step"]) < step]
        if len(kept) < len(rows):
            with open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
        return len(rows) - len(kept)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose metrics survive a resume: ``save_dir/name/version_<version>/metrics.csv``
    keeps the rows of the earlier session up to the step where this one starts logging.

    Args:
        save_dir: folder of the logs (a run's own folder, e.g. ``runs/<run>``).
        name: sub-folder; ``None`` or ``""`` for none.
        version: fixed (default ``0``) so that the same run started again writes the same file;
            ``None`` restores Lightning's next-free-version behaviour (a new folder per start).
        **kwargs: the other options of ``CSVLogger`` (``prefix``, ``flush_logs_every_n_steps``).
    """

    def __init__(
        self, save_dir: str | os.PathLike, name: str | None = "logs", version: int | str | None = 0, **kwargs: Any
    ) -> None:
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._resumed_at: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._resumed_at is None and step is not None:
            self._resumed_at = int(step)
            self.experiment.discard_from(int(step))
        super().log_metrics(metrics, step)


class ResumableTensorBoardLogger(TensorBoardLogger):
    """``TensorBoardLogger`` that continues the same ``version`` folder (default ``0``) when the run
    is started again, and marks the first step it logs as a session start: TensorBoard then hides
    the events the killed session wrote at that step or later (they are logged again).

    Args:
        save_dir: folder of the logs.
        name: sub-folder (default ``tb``).
        version: fixed (default ``0``); ``None`` for a new folder per start.
        **kwargs: the other options of ``TensorBoardLogger``.
    """

    def __init__(
        self, save_dir: str | os.PathLike, name: str | None = "tb", version: int | str | None = 0, **kwargs: Any
    ) -> None:
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._resumed_at: int | None = None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._resumed_at is None and step is not None:
            self._resumed_at = int(step)
            if step > 0:
                writer = self.experiment._get_file_writer()
                writer.add_event(Event(step=int(step), session_log=SessionLog(status=SessionLog.START)))
        super().log_metrics(metrics, step)


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
        print(
            f"W&B: no credentials found (WANDB_API_KEY or `wandb login`): logging offline to {save_dir}/wandb; "
            f"upload later with `wandb sync {save_dir}/wandb/offline-run-*`"
        )
    # absolute: W&B's service process outlives the run and resolves a relative folder against its
    # own working directory, which is the first run's, not this one's
    init_args: dict[str, Any] = {"project": project, "save_dir": os.path.abspath(save_dir), "offline": offline}
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
        import wandb  # noqa: PLC0415 (optional: pip install 'lightning-ssl[wandb]')

        counts = np.asarray(getattr(trainer.datamodule, "class_counts", []))
        for cb in trainer.callbacks:
            for probe, acc in getattr(cb, "last_per_class", {}).items():
                rows = [[c, float(a), int(counts[c]) if c < counts.size else 0] for c, a in enumerate(acc)]
                table = wandb.Table(data=rows, columns=["class", "accuracy", "train_count"])
                charts = {
                    f"{probe}/per_class": wandb.plot.bar(
                        table, "class", "accuracy", title=f"{probe}: per-class accuracy"
                    ),
                    f"{probe}/acc_vs_frequency": wandb.plot.scatter(
                        table, "train_count", "accuracy", title=f"{probe}: accuracy vs class frequency"
                    ),
                }
                for lg in loggers:
                    lg.experiment.log({**charts, "trainer/global_step": trainer.global_step})
