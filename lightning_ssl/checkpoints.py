"""Preemption-safe checkpoints: atomic writes, a save on SIGTERM / SIGUSR1, and a resume that
skips a corrupted or truncated file.

Lightning already turns SIGTERM into ``SIGTERMException`` after the current step, and under SLURM
with auto-requeue it saves and requeues on SIGUSR1; this module adds the atomic write (a killed
save never replaces a good ``last.ckpt`` with half a file), SIGUSR1 outside SLURM, and the
fallback to the previous checkpoint when the newest one cannot be read.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes each file to a temporary name and renames it into place,
    saves ``last.ckpt`` when the run is preempted (SIGTERM), and treats SIGUSR1 as a preemption
    notice outside SLURM (SLURM's own requeue handler is left in charge there)."""

    def __init__(self, save_last: bool = True, save_on_exception: bool = True, **kwargs: Any) -> None:
        super().__init__(save_last=save_last, save_on_exception=save_on_exception, **kwargs)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Save only on preemption: Lightning raises ``SIGTERMException`` between two steps, where
        the loop state is consistent. A crash elsewhere (say in an epoch-start hook) would save a
        state that a resumed run misreads, so the previous checkpoint is kept instead."""
        if isinstance(exception, SIGTERMException):
            super().on_exception(trainer, pl_module, exception)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        env = trainer._accelerator_connector.cluster_environment
        if isinstance(env, SLURMEnvironment) and env.auto_requeue:
            return
        connector = trainer._signal_connector

        def preempted(signum: int, frame: Any) -> None:  # noqa: ARG001
            connector.received_sigterm = True  # stop after this step; on_exception saves

        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, preempted)


def readable(path: Path) -> Exception | None:
    """``None`` when ``path`` loads as a checkpoint, else the error."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            return ValueError("no state_dict inside")
        return None
    except Exception as err:  # noqa: BLE001 - any failure to load means "do not resume from it"
        return err


def latest_valid_checkpoint(candidates: Iterable[Path]) -> Path | None:
    """The newest readable checkpoint; a corrupted or truncated newer one is skipped with a
    warning naming both files."""
    paths = sorted((Path(p) for p in candidates if Path(p).is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    skipped: list[tuple[Path, Exception]] = []
    for path in paths:
        err = readable(path)
        if err is None:
            for bad, why in skipped:
                warnings.warn(f"checkpoint {bad} is corrupted or truncated ({type(why).__name__}: {why}); "
                              f"resuming from {path} instead", stacklevel=2)
            return path
        skipped.append((path, err))
    for bad, why in skipped:
        warnings.warn(f"checkpoint {bad} is corrupted or truncated ({type(why).__name__}: {why}); "
                      f"no readable checkpoint left: starting from scratch", stacklevel=2)
    return None
