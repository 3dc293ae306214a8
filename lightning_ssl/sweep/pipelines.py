"""How one run of a sweep trains: the :class:`Pipeline` interface and its two plain implementations.

The runner (:mod:`lightning_ssl.sweep.runner`) does the same for every run: it asks the run's
pipeline for a trained model (:meth:`Pipeline.train`, which resumes what an earlier, interrupted
call left in the run folder), evaluates what it gets back (offline probes, kNN, transfer sets,
diagnostics) and writes the result record. What differs between methods is only the training:

* :class:`Fit`: one Lightning fit of the run's ``lssl fit`` config (every method unless it says
  otherwise);
* :class:`Floor`: no training at all, for the reference floors RawPixels and RandomInit;
* a multi-stage method's own pipeline, defined next to the method.

A method class chooses its pipeline with a class attribute: ``pipeline = MyPipeline``, or the
pipeline's class path as a string when the pipeline's module imports the method. A pipeline with
options of its own (stage lengths, ...) reads them from the sweep spec's top-level section that
``section`` names; they are checked by :meth:`Pipeline.check_options` when the spec is loaded and
are part of the run id. A pipeline whose runs configure another class than the one the spec names
(a distillation configured by its teachers' options) says which in :meth:`Pipeline.model_class`.

A method class may also say which class its options build (:func:`concrete_class`): a method
that picks its implementation from an option (``base: simclr``) defines the classmethod
``concrete_class(options)``, and the sweep then configures the class it returns.

Adding a pipeline (docs/design.md §8): subclass :class:`Pipeline`, implement :meth:`train`
(build the run's modules with :func:`~lightning_ssl.sweep.resolve.instantiate`, train each stage
in a folder below ``run_dir`` and skip a stage whose output is already there, and return a
:class:`Trained`), set ``section`` and :meth:`check_options` if it has options, and set
``pipeline`` on the method class. ``tests/test_custom_pipeline.py`` does it in a test file.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_ssl.checkpoints import latest_valid_checkpoint
from lightning_ssl.class_path import import_class
from lightning_ssl.eval.diagnostics import CollapseMonitor
from lightning_ssl.eval.floors import RawPixels
from lightning_ssl.sweep.resolve import instantiate

if TYPE_CHECKING:
    from lightning_ssl.sweep.spec import Run

NOT_ONLINE_METRICS = ("lr", "train/images_per_s")  # logged every step, not a result


@dataclass
class Trained:
    """What a pipeline hands the runner to evaluate and record.

    Attributes:
        model: the module whose ``forward(images)`` gives the features the probes read.
        datamodule: the run's datamodule (probe sets, test set, class counts and groups).
        train: the record's ``train`` entry: epochs, images, seconds, resumed checkpoint, ...
        online: the online metrics at the end of training (``trainer.callback_metrics``).
        device: where the evaluation runs (``cuda`` or ``cpu``).
        losses: the training loss per epoch (the collapse diagnostics' trend), if recorded.
    """

    model: nn.Module
    datamodule: Any
    train: dict[str, Any]
    online: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    losses: list[float] | None = None

    @classmethod
    def of(cls, model: nn.Module, datamodule: Any, trainer: pl.Trainer, train: dict[str, Any]) -> Trained:
        """The result of training with ``trainer``: its last online metrics, its device and the
        losses its :class:`~lightning_ssl.eval.diagnostics.CollapseMonitor` kept."""
        online = {
            k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and k not in NOT_ONLINE_METRICS
        }
        on_gpu = torch.cuda.is_available() and trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        monitor = next((c for c in trainer.callbacks if isinstance(c, CollapseMonitor)), None)
        return cls(
            model,
            datamodule,
            train,
            online,
            "cuda" if on_gpu else "cpu",
            monitor.losses if monitor is not None else None,
        )


class Throughput(pl.Callback):
    """Training images and seconds of this session (a resumed run counts only what it trains).

    The clock of an epoch starts at its first batch: an epoch resumed in its middle gets no
    ``on_train_epoch_start`` from Lightning. ``time_per_epoch_s`` is the seconds per full epoch's
    images, so a partial epoch counts for its share."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self.epochs = 0
        self.epoch_images = 0  # images of one full epoch (all ranks)
        self._start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        images = int(batch[1].shape[0]) * trainer.world_size
        self.images += images
        if not self.epoch_images and isinstance(trainer.num_training_batches, int):
            self.epoch_images = images * trainer.num_training_batches

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.epochs += 1
        self._start = None

    def record(self) -> dict[str, Any]:
        """This session's part of a record's ``train`` entry."""
        full_epochs = self.images / self.epoch_images if self.epoch_images else 0
        return {
            "session_epochs": self.epochs,
            "train_images": self.images,
            "train_seconds": self.seconds,
            "images_per_s": self.images / self.seconds if self.seconds else None,
            "time_per_epoch_s": self.seconds / full_epochs if full_epochs else None,
        }


class Pipeline(ABC):
    """How a run of a method trains in a sweep (module docstring). Every hook is a classmethod:
    a pipeline keeps no state between runs, and what it needs of a run is passed in."""

    section: ClassVar[str | None] = None  # the spec's top-level key of this pipeline's options

    @classmethod
    def model_class(cls, method_class: str) -> str:
        """The class path a run's ``model`` config is parsed and built as, for a method named as
        ``method_class``: that class itself unless the pipeline configures another."""
        return method_class

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Refuse bad options of the spec's ``section`` when the spec is loaded (``ValueError``
        naming the key and the valid ones)."""
        if options:
            raise ValueError(f"{cls.__name__} takes no options, got {sorted(options)}")

    @classmethod
    @abstractmethod
    def train(cls, run: Run, config: dict[str, Any], run_dir: Path) -> Trained:
        """Train ``run`` (or finish an interrupted run from what ``run_dir`` holds) and return what
        to evaluate. ``config`` is the run's resolved ``lssl fit`` config whose logger and
        checkpoint callback write into ``run_dir``; ``run.options`` holds the spec's ``section``."""


class Fit(Pipeline):
    """One Lightning fit of the run's config, resumed from the newest readable checkpoint of
    ``run_dir/checkpoints`` (a truncated ``last.ckpt`` falls back to the previous one, warned)."""

    @classmethod
    def train(cls, run: Run, config: dict[str, Any], run_dir: Path) -> Trained:
        cli = instantiate(config)
        meter = Throughput()
        cli.trainer.callbacks.append(meter)
        folder = run_dir / "checkpoints"
        last = latest_valid_checkpoint(folder.glob("*.ckpt")) if folder.is_dir() else None
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last is not None else None)
        train = {
            "epochs": int(cli.trainer.current_epoch),
            "global_step": int(cli.trainer.global_step),
            **meter.record(),
            # relative to the run folder: a committed record names no path of the machine that ran it
            "resumed_from": str(last.resolve().relative_to(run_dir.resolve())) if last is not None else None,
            "global_batch": int(cli.datamodule.batch_size) * cli.trainer.world_size,
            "devices": cli.trainer.world_size,
        }
        return Trained.of(cli.model, cli.datamodule, cli.trainer, train)


class Floor(Pipeline):
    """A reference floor (``run.reference``): the method's model built and seeded as for training
    and never trained (RandomInit), or the raw pixels (RawPixels)."""

    @classmethod
    def train(cls, run: Run, config: dict[str, Any], run_dir: Path) -> Trained:
        cli = instantiate(config)
        model = RawPixels() if run.reference == "RawPixels" else cli.model
        return Trained.of(
            model, cli.datamodule, cli.trainer, {"reference": run.reference, "epochs": 0, "global_step": 0}
        )


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def pipeline_of(method_class: type) -> type[Pipeline]:
    """The pipeline a method class declares (its ``pipeline`` attribute), :class:`Fit` without one."""
    declared = getattr(method_class, "pipeline", None)
    if declared is None:
        return Fit
    pipeline = import_class(declared) if isinstance(declared, str) else declared
    if not (isinstance(pipeline, type) and issubclass(pipeline, Pipeline)):
        raise ValueError(
            f"{method_class.__name__}.pipeline = {declared!r} is not a subclass of "
            f"{class_path(Pipeline)}; name one (or its class path) or remove the attribute"
        )
    return pipeline


def concrete_class(method_class: type, options: dict[str, Any]) -> type:
    """The class that ``method_class(**options)`` builds: ``method_class.concrete_class(options)``
    where the method defines that classmethod, else the class itself."""
    hook = getattr(method_class, "concrete_class", None)
    return method_class if hook is None else hook(options)
