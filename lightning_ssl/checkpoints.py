"""Preemption-safe checkpoints: ``last.ckpt`` after every epoch, atomic writes, a save on SIGTERM /
SIGINT / SIGUSR1, and a resume that skips a corrupted or truncated file.

Lightning already turns SIGTERM into ``SIGTERMException`` after the current step, and under SLURM
with auto-requeue it saves and requeues on SIGUSR1; this module adds the periodic ``last.ckpt``
(a SIGKILL or an out-of-memory kill loses at most one epoch), the atomic write (a killed save never
replaces a good ``last.ckpt`` with half a file, a full disk leaves the previous file and no
``.tmp``), Ctrl-C and SIGUSR1 as stop-and-save, and the fallback to the previous checkpoint when
the newest one cannot be read.

After a preemption the process must not look finished to a scheduler: :func:`preemption_exit_code`
maps Lightning's ``SIGTERMException`` to ``128 + signal`` (143 for SIGTERM, 130 for SIGINT, 138 for
SIGUSR1, the shell's convention for a process ended by a signal), and :func:`preempted_signal` says
which signal stopped the last fit of this process (``lssl fit``, ``lssl dnc`` and ``lssl sweep`` exit with it).
Superseded ``epoch=*.ckpt`` files (e.g. the one saved at a preemption) and orphan ``*.ckpt.tmp``
files of killed writes are removed after the next successful save.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

_preempted_by: int | None = None  # the signal that stopped the last fit of this process
_saved_at_stop: str | None = None  # the checkpoint that holds the state at that stop
_stop_pending: int | None = None  # a signal that came before a fit had its handlers (see request_stop)


def request_stop(signum: int | None) -> None:
    """Ask the next fit of this process to stop after its first step and save (``None`` withdraws).

    Lightning installs its SIGTERM handler only once a fit has set up (data, model, restored
    checkpoint: seconds to minutes), and clears ``received_sigterm`` as it does; a notice that comes
    in that window would otherwise let the whole run train. ``lssl sweep``'s own handler calls this."""
    global _stop_pending
    _stop_pending = None if signum is None else int(signum)


def preempted_signal() -> int | None:
    """The signal (``signal.SIGTERM`` or ``signal.SIGUSR1``) that preempted the last fit run in this
    process with an :class:`AtomicModelCheckpoint`, else ``None``."""
    return _preempted_by


def preemption_exit_code(exception: BaseException | None = None) -> int | None:
    """``128 + signal`` when ``exception`` is Lightning's ``SIGTERMException`` (or, without an
    exception, when a fit of this process was preempted): 143 for SIGTERM, 138 for SIGUSR1, the
    status a shell reports for a process ended by that signal, so a scheduler tells a preempted
    run from a finished one. ``None`` when there was no preemption."""
    if exception is not None and not isinstance(exception, SIGTERMException):
        return None
    if exception is None and _preempted_by is None:
        return None
    return 128 + int(_preempted_by or signal.SIGTERM)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it lies below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def stop_reason(signum: int) -> str:
    """``interrupted (Ctrl-C)`` or ``preempted (signal N)``."""
    return "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"preempted (signal {signum})"


def stopped_line(command: str, code: int, kept: str | None = None) -> str:
    """The one line a command prints when a signal stopped it after saving (exit status ``code``);
    ``kept`` says what was kept (default: the checkpoint saved at the stop)."""
    kept = kept or (f"state saved in {_shown(_saved_at_stop)}" if _saved_at_stop else "state saved")
    return f"{command}: {stop_reason(code - 128)}; {kept}, run the same command to resume"


def _record_preemption(signum: int) -> None:
    global _preempted_by
    _preempted_by = int(signum)


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``last.ckpt`` every ``every_n_epochs`` epochs (default 1) or
    every ``every_n_train_steps`` steps, each file to a temporary name renamed into place; saves it
    when the run is preempted (SIGTERM, SIGINT), and treats SIGUSR1 as a preemption notice outside
    SLURM (SLURM's own requeue handler is left in charge there).

    With ``save_top_k=0`` (the default: keep one rolling checkpoint) Lightning's own callback would
    write ``last.ckpt`` only beside a top-k file, i.e. never before the run ends; here the periodic
    save writes ``last.ckpt`` itself. A positive ``save_top_k`` keeps Lightning's top-k files too.
    """

    def __init__(
        self,
        save_last: bool = True,
        save_on_exception: bool = True,
        save_top_k: int = 0,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = True,
        **kwargs: Any,
    ) -> None:
        if every_n_epochs is not None and every_n_epochs < 0:
            raise ValueError(
                f"AtomicModelCheckpoint: every_n_epochs {every_n_epochs} must be >= 0 "
                "(1 saves after every epoch, 0 only on the step schedule)"
            )
        if every_n_epochs is None and not kwargs.get("every_n_train_steps") and not kwargs.get("train_time_interval"):
            every_n_epochs = 1
        # at the end of every training epoch (after that epoch's validation, if any): Lightning's
        # default (None) defers to the validation end when check_val_every_n_epoch > 1, which
        # would leave a 30-epoch run with validation at its end without a checkpoint until then
        super().__init__(
            save_last=save_last,
            save_on_exception=save_on_exception,
            save_top_k=save_top_k,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            **kwargs,
        )
        self._last_written_at: int | None = None  # global step of the newest last.ckpt

    _saving_on_exception = False

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """The periodic save: top-k files when asked for, else (``save_top_k=0``) ``last.ckpt``."""
        if self.save_top_k == 0 and self.save_last:
            self._save_last_checkpoint(trainer, monitor_candidates)
        else:
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        # Lightning asks for last.ckpt after every periodic save; once per step is enough
        if (
            self._last_written_at == trainer.global_step
            and self.last_model_path
            and os.path.isfile(self.last_model_path)
        ):
            return
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written_at = trainer.global_step

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        try:
            trainer.save_checkpoint(tmp, self.save_weights_only)
        except OSError as err:  # a full disk or a folder without write permission: keep the previous file
            Path(tmp).unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"cannot write checkpoint {filepath} ({err.strerror or err}); the previous checkpoint in "
                f"{os.path.dirname(filepath) or '.'} is kept: free disk space or pass "
                "--trainer.default_root_dir DIR on a writable disk, then run the same command to resume"
            ) from err
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)
            if not self._saving_on_exception:
                self.remove_superseded(keep=[filepath])

    def remove_superseded(self, keep: Iterable[str | Path] = ()) -> list[Path]:
        """Delete orphan ``*.ckpt.tmp`` files (writes killed before their rename) and the
        ``epoch=*.ckpt`` files of this folder that the callback no longer tracks (a checkpoint
        saved at a preemption, the previous run's last epoch): the files kept are ``keep``, the
        best / last / top-k paths of the callback's state, and every file when ``save_top_k=-1``
        (keep all). Only the default file name pattern (``filename=None``) is cleaned. Returns the
        removed paths."""
        if not self.dirpath or not os.path.isdir(self.dirpath):
            return []
        folder = Path(self.dirpath)
        removed = [p for p in folder.glob("*.ckpt.tmp") if p.is_file()]
        if self.save_top_k != -1 and self.filename is None:
            tracked = {*keep, self.best_model_path, self.last_model_path, *self.best_k_models}
            tracked_names = {Path(p).resolve() for p in tracked if p}
            removed += [p for p in folder.glob("epoch=*.ckpt") if p.resolve() not in tracked_names]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Save only on preemption: Lightning raises ``SIGTERMException`` between two steps, where
        the loop state is consistent. A crash elsewhere (say in an epoch-start hook) would save a
        state that a resumed run misreads, so the previous checkpoint is kept instead. The
        preemption is recorded for :func:`preemption_exit_code`."""
        if isinstance(exception, SIGTERMException):
            if _preempted_by is None:
                _record_preemption(signal.SIGTERM)
            self._saving_on_exception = True
            try:
                super().on_exception(trainer, pl_module, exception)
            finally:
                self._saving_on_exception = False
            global _saved_at_stop
            _saved_at_stop = self.last_model_path or None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop-and-save handlers for this fit: SIGINT (Ctrl-C) always, SIGUSR1 outside SLURM's
        auto-requeue. The first Ctrl-C stops after the current step and saves (exit 130); a second
        one quits at once, as Ctrl-C usually does."""
        global _preempted_by, _saved_at_stop
        _preempted_by = _saved_at_stop = None  # a new fit: forget an earlier preemption of this process
        self._previous_handlers: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        connector = trainer._signal_connector

        def preempted(signum: int, frame: Any) -> None:  # noqa: ARG001
            if signum == signal.SIGINT and _preempted_by is not None:
                raise KeyboardInterrupt  # the second Ctrl-C
            _record_preemption(signum)
            connector.received_sigterm = True  # stop after this step; on_exception saves
            if signum == signal.SIGINT and trainer.is_global_zero:
                print(
                    "\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)",
                    file=sys.stderr,
                    flush=True,
                )

        signals = [signal.SIGINT]
        env = trainer._accelerator_connector.cluster_environment
        if hasattr(signal, "SIGUSR1") and not (isinstance(env, SLURMEnvironment) and env.auto_requeue):
            signals.append(signal.SIGUSR1)
        for sig in signals:
            self._previous_handlers[sig] = signal.signal(sig, preempted)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A stop requested before this fit's handlers existed (:func:`request_stop`): stop after
        the first step and save, the path a signal during training takes."""
        if _stop_pending is not None:
            _record_preemption(_stop_pending)
            trainer._signal_connector.received_sigterm = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for sig, handler in getattr(self, "_previous_handlers", {}).items():
            signal.signal(sig, handler)
        self._previous_handlers = {}


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
                warnings.warn(
                    f"checkpoint {bad} is corrupted or truncated ({type(why).__name__}: {why}); "
                    f"resuming from {path} instead",
                    stacklevel=2,
                )
            return path
        skipped.append((path, err))
    for bad, why in skipped:
        warnings.warn(
            f"checkpoint {bad} is corrupted or truncated ({type(why).__name__}: {why}); "
            f"no readable checkpoint left: starting from scratch",
            stacklevel=2,
        )
    return None
