"""Callbacks ``lssl fit`` adds to every run, whatever the module: what a checkpoint needs to be
probed without a config (:class:`RunInfo`), and loss / learning rate / throughput curves at a
cadence that suits the dataset (:class:`StepLogging`)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl

# Lightning's default logging period (``Trainer(log_every_n_steps=50)``); lowered for short epochs
LIGHTNING_LOG_EVERY = 50


def log_interval(batches_per_epoch: float, cap: int = LIGHTNING_LOG_EVERY) -> int:
    """Steps between two logged points: about four per epoch, at least every ``cap`` steps and at
    most every step (a 2-step epoch logs each step; ImageNet-LT's 450 steps log every 50)."""
    if not batches_per_epoch or batches_per_epoch == float("inf"):
        return cap
    return int(max(1, min(cap, int(batches_per_epoch) // 4)))


class RunInfo(pl.Callback):
    """Writes into every checkpoint the class paths of the module and the datamodule and the
    module's config (``model_config``: ``{class_path, init_args}``), so ``lssl probe CKPT`` can rebuild
    any ``LightningModule``, including one that never calls ``save_hyperparameters``.

    Args:
        model_config: the module's ``{class_path, init_args}`` as ``lssl fit`` parsed it.
    """

    def __init__(self, model_config: dict[str, Any] | None = None) -> None:
        self.model_config = model_config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["method_class"] = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
        if self.model_config is not None:
            checkpoint["model_config"] = self.model_config
        dm = trainer.datamodule
        if dm is not None:
            checkpoint["datamodule_class"] = f"{type(dm).__module__}.{type(dm).__qualname__}"


class StepLogging(pl.Callback):
    """Logs ``lr`` (of the first parameter group) and ``train/images_per_s`` every logged step, for
    any module, and, with ``auto_interval``, lowers ``trainer.log_every_n_steps`` to
    :func:`log_interval` of the epoch length when the training loop starts (Lightning's 50 would
    log nothing on an epoch of 2 steps). No host synchronisation: both values are host floats.

    Args:
        auto_interval: choose the logging period from the loader length (``lssl fit`` sets it
            when ``--trainer.log_every_n_steps`` is not given).
    """

    def __init__(self, auto_interval: bool = True) -> None:
        self.auto_interval = auto_interval
        self._last: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.auto_interval:
            trainer.log_every_n_steps = log_interval(trainer.num_training_batches)
        self._last = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()  # validation time is not training throughput

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.optimizers:
            pl_module.log(
                "lr", float(trainer.optimizers[0].param_groups[0]["lr"]), on_step=True, on_epoch=False, batch_size=1
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Images of this step over the time since the previous step ended (loading included)."""
        now = time.perf_counter()
        if self._last is not None:
            images = _batch_size(batch) * trainer.world_size
            pl_module.log(
                "train/images_per_s", images / max(now - self._last, 1e-9), on_step=True, on_epoch=False, batch_size=1
            )
        self._last = now


def _batch_size(batch: Any) -> int:
    """Images in a ``(views, target, index)`` batch (the length of ``target``)."""
    try:
        return int(len(batch[1]))
    except (TypeError, IndexError):
        return 0
