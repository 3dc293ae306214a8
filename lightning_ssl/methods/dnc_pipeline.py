"""Divide-and-Contrast as one resumable pipeline (Tian, Hénaff, van den Oord; ICCV 2021, §3;
docs/methods.md §6).

Four stages, each a directory of ``work_dir`` finished by a ``done.json`` marker written last and
atomically (temporary file + ``os.replace``):

1. ``base``: MoCLR on the whole pre-training set for N1 epochs -> ``base/model.ckpt``;
2. ``cluster``: a clean pass (eval transform, index order) through the base model's *projector
   hidden layer*, spherical k-means into K clusters, once (best of ``kmeans_n_init`` starts) ->
   ``cluster/assignments.npy`` (cluster id per pre-training index), ``cluster/clusters.json``
   (sizes, k-means backend, objective), ``cluster/centroids.npy``;
3. ``experts``: K MoCLR models trained *from scratch*, each on its own cluster only. The budget
   is N2 epochs "measured on the full dataset", split in proportion to cluster size (§3.3): N2 x N
   image passes in all, of which expert k gets its share n_k / N, i.e. N2 x n_k passes (N2 epochs
   of its own cluster). Each expert runs it as optimiser steps, ``round(N2 n_k / b_k)`` steps of
   ``b_k = min(global batch, n_k)`` images (:func:`expert_steps`), so that the passes match the
   budget within half a batch per expert also for clusters smaller than a batch or not a
   multiple of it -> ``experts/expert_{k}.ckpt``;
4. ``distill``: a fresh :class:`~lightning_ssl.methods.dnc.DnC` student regressing the base and the
   image's own expert for N3 epochs -> ``distill/model.ckpt``.

**Resume.** Re-running starts at the first stage without its marker. Every fit of a stage writes
``<stage>/checkpoints/last.ckpt`` (or ``experts/expert_{k}/checkpoints/``) after each epoch, and
an interrupted stage whose ``started.json`` fingerprint matches the current one continues from
those checkpoints (finished experts are not retrained); a stage started with other settings, and
every later stage, is cleared and redone. Each marker records
the stage's fingerprint (:mod:`lightning_ssl.methods.dnc_fingerprint`: the data's identity, the
method, stage and trainer options that change the result, the checksums of the earlier stages'
outputs); a finished stage whose fingerprint differs from the current one is an error
(:class:`StageMismatchError`) naming the differing keys and the work dir, never a silent reuse.
Every random stream of a stage is derived from the stage, not from the process's history: each fit
seeds torch/numpy/random (``seed`` for base and distill, ``seed + 1 + k`` for expert k) before its
model is built, restores the datamodule's ``state_dict`` (the view-batch counter) to what it was
when the pipeline was made, and sets its ``view_seed`` per stream (the datamodule's own for base,
a hash of it and ``expert_k`` / ``distill`` otherwise), so that a pipeline resumed in a new
process computes the uninterrupted run's weights bit for bit (on the CPU).

**Warm-up.** Each stage warms up for ``warmup_epochs`` of its own epochs (§3.4: 10, following
BYOL), as ``warmup_fraction = min(warmup_epochs / stage epochs, 0.5)`` (the 0.5 cap is our choice,
for stages shorter than the warm-up), where the stage epochs are N1, N2 (own-cluster epochs of an
expert) and N3; an explicit ``warmup_fraction`` in the options is kept.

**Preemption.** SIGTERM stops the running fit after its current step (Lightning's
``SIGTERMException``, re-raised here): the stages finished before it are kept, the interrupted one
is not marked done; ``lssl dnc`` exits with status 143.

The driver sees the datamodule only through the batch contract and ``pretrain_eval_dataloader()``,
``set_pretrain_subset(indices)``, ``batch_size``, ``state_dict``/``load_state_dict`` and
``view_seed`` (docs/design.md), so it imports nothing from ``datamodules``. Under DDP every rank
runs the driver; only rank 0 writes files.

**Options.** DnC's options are declared once, as the fields of :class:`DnCOptions` (and the
stages' trainer options as those of :class:`StageTrainerOptions`): ``lssl dnc`` makes its flags
from them, and a sweep spec's ``dnc:`` section is checked against them. In a sweep, DnC is a
:class:`~lightning_ssl.sweep.pipelines.Pipeline` (:meth:`DnCPipeline.train`): the run's ``model``
config is the teachers' and its stages go to ``<run folder>/dnc``.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from lightning_ssl import distributed
from lightning_ssl.checkpoints import AtomicModelCheckpoint, latest_valid_checkpoint
from lightning_ssl.class_path import import_class
from lightning_ssl.cluster.kmeans import BACKENDS, available_backends, distributed_kmeans
from lightning_ssl.eval.diagnostics import CollapseMonitor
from lightning_ssl.eval.features import extract_features
from lightning_ssl.io import atomic_write_json
from lightning_ssl.loggers import ResumableCSVLogger
from lightning_ssl.methods.dnc import DEFAULT_TEACHER, DnC
from lightning_ssl.methods.dnc_fingerprint import (
    array_sha1,
    checkpoint_sha1,
    data_identity,
    differing_keys,
    jsonable,
)
from lightning_ssl.sweep.pipelines import Pipeline, Throughput, Trained
from lightning_ssl.sweep.resolve import instantiate

if TYPE_CHECKING:
    from lightning_ssl.sweep.spec import Run

log = logging.getLogger(__name__)

STAGES = ("base", "cluster", "experts", "distill")
DONE = "done.json"
STARTED = "started.json"  # the fingerprint an unfinished stage was started with
# the options of the teachers that the student shares (architecture and optimisation)
SHARED_WITH_STUDENT = (
    "backbone",
    "image_size",
    "in_chans",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "warmup_epochs",
    "warmup_fraction",
    "final_lr",
    "proj_hidden_dim",
    "proj_output_dim",
)
# the options of DnC's __init__ that the pipeline sets itself (where the teachers are)
TEACHER_WIRING = ("base_checkpoint", "expert_checkpoints", "assignments", "teacher_class")
MAX_WARMUP_FRACTION = 0.5  # our choice: a stage shorter than its warm-up still decays half its run


class StageMismatchError(ValueError):
    """A finished stage of the work dir was computed with other settings than the current ones."""


def expert_steps(sizes: list[int] | np.ndarray, total_epochs: float, batch_size: int) -> list[int]:
    """Optimiser steps of each expert (§3.3: N2 epochs measured on the full dataset, split in
    proportion to cluster size; docs/methods.md §6.3).

    The budget is ``total_epochs x N`` image passes; expert k's share ``n_k / N`` of it is
    ``total_epochs x n_k`` passes. A step of expert k sees ``b_k = min(batch_size, n_k)`` images
    (a cluster smaller than a batch is one batch), so it runs ``round(total_epochs n_k / b_k)``
    steps, at least 1 (our choice, so that every expert is trained); its passes ``steps x b_k``
    differ from its share by at most ``b_k / 2`` (or the one step of a tiny share).

    Args:
        sizes: images per cluster, n_k >= 1.
        total_epochs: N2, in full-dataset epochs (> 0).
        batch_size: images per optimiser step over all ranks (the global batch).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size == 0 or (sizes < 1).any():
        raise ValueError(f"cluster sizes must all be >= 1, got {sizes.tolist()}")
    if total_epochs <= 0:
        raise ValueError(f"expert_epochs={total_epochs} must be > 0 (full-dataset epochs)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    return [max(1, int(round(total_epochs * int(n) / min(batch_size, int(n))))) for n in sizes]


def check_backend(backend: str) -> None:
    """A k-means backend that exists and runs here, before any stage trains (not at clustering,
    after the base model's training)."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(
            f"kmeans_backend={backend!r} is not one of auto, {', '.join(BACKENDS)}; pass e.g. --kmeans_backend auto"
        )
    if backend != "auto" and backend not in available_backends():
        raise ValueError(
            f"kmeans_backend={backend!r} is not available here (available: "
            f"{', '.join(available_backends())}); pass --kmeans_backend auto"
        )


def init_options(cls: type) -> list[str]:
    """The named ``__init__`` options of ``cls`` along its MRO (``**kwargs`` followed to the parents)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            named = param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
            if named and name != "self" and name not in names:
                names.append(name)
    return names


def student_options() -> list[str]:
    """The :class:`DnC` options a user may give the student (``distill``)."""
    return [name for name in init_options(DnC) if name not in TEACHER_WIRING]


def _default_of(cls: type, name: str, fallback: Any) -> Any:
    """The default of ``__init__`` option ``name`` along ``cls``'s MRO (the most derived wins)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            param = inspect.signature(init).parameters.get(name)
            if param is not None and param.default is not inspect.Parameter.empty:
                return param.default
    return fallback


def with_stage_warmup(kwargs: dict[str, Any], cls: type, stage_epochs: float) -> dict[str, Any]:
    """``kwargs`` with the stage's warm-up as a fraction of its run (module docstring, "Warm-up")."""
    if kwargs.get("warmup_fraction") is not None:
        return dict(kwargs)
    warmup = float(kwargs.get("warmup_epochs", _default_of(cls, "warmup_epochs", 10.0)))
    return {**kwargs, "warmup_fraction": min(warmup / float(stage_epochs), MAX_WARMUP_FRACTION)}


class HiddenLayer(nn.Module):
    """``image -> projector hidden layer`` of a method with ``projector_hidden`` (MoCLR), the
    features DnC clusters (§3.2: they cluster better than the pooled features, 51.6 vs 40.1)."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: Tensor) -> Tensor:
        return self.method.projector_hidden(x)


@dataclass(kw_only=True)
class DnCOptions:
    """DnC's options (Tian et al., ICCV 2021, §3; docs/methods.md §6).

    They are the flags of ``lssl dnc`` and the keys of a sweep spec's ``dnc:`` section.

    Attributes:
        num_clusters: K (§3.2 / Table 12: 5, or 10 for DnC-4500; use 2-5 on small long-tailed
            sets, whose clusters otherwise get tiny, docs/methods.md §6.2).
        base_epochs: N1, the base model's epochs (Table 12: 200 for DnC-1000, 1000 for DnC-3000/4500).
        expert_epochs: N2, the experts' total budget in full-dataset epochs (N2 x N image passes),
            split in proportion to cluster size and run as optimiser steps (§3.3, :func:`expert_steps`;
            Table 12: 600, 1500, 3000).
        distill_epochs: N3, the distillation's epochs (Table 12: 200, 500).
        kmeans_iterations: Lloyd iterations of the clustering (our choice).
        kmeans_backend: ``auto``, ``faiss-gpu``, ``faiss-cpu`` or ``torch``.
        kmeans_n_init: k-means starts, the best objective kept (the paper is silent; 3 is our
            choice: the clustering runs once and is cheap next to training).
        distill: :class:`DnC` options of the student beyond those it shares with the teachers
            (``SHARED_WITH_STUDENT``, which it takes from the teachers' unless given here), e.g.
            ``head_hidden_dim``, ``num_large_views``, ``lr`` (§3.4: a distillation shorter than
            500 epochs needs a larger one).
    """

    num_clusters: int = 5
    base_epochs: int = 200
    expert_epochs: float = 600.0
    distill_epochs: int = 200
    kmeans_iterations: int = 20
    kmeans_backend: str = "auto"
    kmeans_n_init: int = 3
    distill: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("num_clusters", "base_epochs", "distill_epochs", "kmeans_iterations", "kmeans_n_init"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.expert_epochs < float("inf"):
            raise ValueError(f"expert_epochs={self.expert_epochs} must be > 0 (full-dataset epochs)")
        check_backend(self.kmeans_backend)
        unknown = sorted(set(self.distill) - set(student_options()))
        if unknown:
            raise ValueError(
                f"distill: {unknown} are not options of the DnC student; valid: {', '.join(student_options())}"
            )


@dataclass
class StageTrainerOptions:
    """The Trainer options every DnC stage shares.

    ``lssl dnc --trainer.*``, and in a sweep the run's own trainer values of these keys;
    ``max_epochs`` / ``max_steps`` are set per stage.

    Args:
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: devices per node (``auto``, a count, or a list of ids).
        num_nodes: nodes for multi-node DDP.
        strategy: ``auto``, ``ddp``, ...
        precision: ``32-true``, ``bf16-mixed``, ``16-mixed``.
        log_every_n_steps: logging interval.
        limit_train_batches: cap on batches per epoch (a smoke test): a share in (0, 1] (1.0 =
            all) or a number of batches >= 1.
        enable_progress_bar: show each fit's progress bar (default: with ``--verbose`` only).
        enable_model_summary: print each fit's model summary (default: with ``--verbose`` only).
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    log_every_n_steps: int = 50
    limit_train_batches: int | float = 1.0
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ValueError(f"trainer.num_nodes={self.num_nodes} must be >= 1; pass e.g. --trainer.num_nodes 1")
        if self.log_every_n_steps < 1:
            raise ValueError(
                f"trainer.log_every_n_steps={self.log_every_n_steps} must be >= 1; pass e.g. "
                "--trainer.log_every_n_steps 50"
            )
        limit = self.limit_train_batches
        if isinstance(limit, float) and not 0 < limit <= 1 or isinstance(limit, int) and limit < 1:
            raise ValueError(
                f"trainer.limit_train_batches={limit} trains nothing or is not a share: pass a share in "
                "(0, 1] (1.0 = every batch) or a number of batches >= 1"
            )

    @classmethod
    def of_config(cls, trainer: dict[str, Any]) -> StageTrainerOptions:
        """These options as an ``lssl fit`` trainer config sets them (the unset ones at their defaults)."""
        return cls(**{f.name: trainer[f.name] for f in fields(cls) if trainer.get(f.name) is not None})

    def resolved(self, verbose: bool) -> dict[str, Any]:
        """The ``pl.Trainer`` options, with the progress bar and model summary following ``verbose``
        where they are not given."""
        out = asdict(self)
        for key in ("enable_progress_bar", "enable_model_summary"):
            if out[key] is None:
                out[key] = verbose
        return out


@dataclass
class DnCPipeline(DnCOptions, Pipeline):
    """The whole of DnC, stage by stage; :meth:`run` resumes where a previous run stopped.

    Attributes:
        datamodule: a ``LongTailDataModule`` (or anything with the same loaders,
            ``set_pretrain_subset``, ``batch_size`` and ``view_seed``).
        work_dir: where the stage folders go.
        teacher_class: class path of the base/expert method (MoCLR, §3.1).
        teacher_kwargs: ``__init__`` options of the base and expert model (``teacher_class``).
        trainer_kwargs: ``pl.Trainer`` options of every stage (``max_epochs``/``max_steps`` and
            ``default_root_dir`` are set per stage).
        seed: of every fit and of the clustering.
        trainer_factory: builds each stage's trainer (a test's stand-in).
        and the options of :class:`DnCOptions` (keywords).
    """

    section: ClassVar[str] = "dnc"  # a sweep spec's section of DnC's options

    datamodule: pl.LightningDataModule
    work_dir: str | Path
    teacher_class: str = DEFAULT_TEACHER
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    trainer_factory: Callable[..., pl.Trainer] = pl.Trainer

    def __post_init__(self) -> None:
        super().__post_init__()
        self.work_dir = Path(self.work_dir)
        state_dict = getattr(self.datamodule, "state_dict", None)
        self._initial_data_state = copy.deepcopy(state_dict()) if callable(state_dict) else None
        self._view_seed = getattr(self.datamodule, "view_seed", None)
        self._world_size: int | None = None
        self._checksums: dict[tuple[str, int], str] = {}

    # -- bookkeeping ------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.work_dir / stage  # type: ignore[operator]

    def num_samples(self) -> int:
        return len(self.datamodule.pretrain_eval_dataloader().dataset)

    def world_size(self) -> int:
        """Processes that train each stage (from a throwaway trainer of the stages' options)."""
        if self._world_size is None:
            options = {
                k: v for k, v in self.trainer_kwargs.items() if k not in ("callbacks", "logger", "enable_checkpointing")
            }
            probe = self.trainer_factory(logger=False, enable_checkpointing=False, **options)
            self._world_size = int(probe.world_size)
        return self._world_size

    def global_batch(self) -> int:
        return int(self.datamodule.batch_size) * self.world_size()

    def _checksum(self, path: Path, kind: str = "checkpoint") -> str:
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        if key not in self._checksums:
            self._checksums[key] = checkpoint_sha1(path) if kind == "checkpoint" else array_sha1(np.load(path))
        return self._checksums[key]

    def stage_teacher_kwargs(self, stage: str) -> dict[str, Any]:
        epochs = self.base_epochs if stage == "base" else self.expert_epochs
        return with_stage_warmup(self.teacher_kwargs, import_class(self.teacher_class), epochs)

    def resolved_student_kwargs(self) -> dict[str, Any]:
        shared = {k: v for k, v in self.teacher_kwargs.items() if k in SHARED_WITH_STUDENT}
        return with_stage_warmup({**shared, **self.distill}, DnC, self.distill_epochs)

    def fingerprint(self, stage: str) -> dict[str, Any]:
        """Everything that determines ``stage``'s output (module docstring, "Resume"); trainer
        options that do not change the result (accelerator, progress bar, logging) are left out."""
        common = {"data": data_identity(self.datamodule, self.num_samples()), "seed": self.seed}
        kw = self.trainer_kwargs
        trainer = {
            "world_size": self.world_size(),
            "precision": str(kw.get("precision", "32-true")),
            "limit_train_batches": kw.get("limit_train_batches", 1.0),
            "accumulate_grad_batches": kw.get("accumulate_grad_batches", 1),
        }
        teacher = {"teacher_class": self.teacher_class, "trainer": trainer}
        base_ckpt = self.stage_dir("base") / "model.ckpt"
        assignments = self.stage_dir("cluster") / "assignments.npy"
        if stage == "base":
            out = {**teacher, "teacher_kwargs": self.stage_teacher_kwargs("base"), "epochs": self.base_epochs}
        elif stage == "cluster":
            out = {
                "teacher_class": self.teacher_class,
                "base": self._checksum(base_ckpt),
                "num_clusters": self.num_clusters,
                "iterations": self.kmeans_iterations,
                "n_init": self.kmeans_n_init,
                "backend": self.kmeans_backend,
            }
        elif stage == "experts":
            out = {
                **teacher,
                "teacher_kwargs": self.stage_teacher_kwargs("experts"),
                "total_epochs": self.expert_epochs,
                "budget": "expert_steps",
                "assignments": self._checksum(assignments, "array"),
            }
        elif stage == "distill":
            experts = [self._checksum(self.stage_dir("experts") / f"expert_{k}.ckpt") for k in range(self.num_clusters)]
            out = {
                "trainer": trainer,
                "student_kwargs": self.resolved_student_kwargs(),
                "epochs": self.distill_epochs,
                "base": self._checksum(base_ckpt),
                "experts": experts,
                "assignments": self._checksum(assignments, "array"),
            }
        else:
            raise ValueError(f"unknown DnC stage {stage!r}; valid: {', '.join(STAGES)}")
        return jsonable({**common, **out})

    def is_done(self, stage: str) -> bool:
        """Whether ``stage`` finished; raises :class:`StageMismatchError` when it finished with a
        fingerprint that differs from the current one."""
        marker = self.stage_dir(stage) / DONE
        if not marker.is_file():
            return False
        try:
            recorded = json.loads(marker.read_text()).get("fingerprint")
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("DnC stage %r: %s does not parse; redoing the stage", stage, marker)
            return False
        differ = differing_keys(recorded, self.fingerprint(stage))
        if differ:
            shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
            raise StageMismatchError(
                f"DnC work dir {self.work_dir}: stage {stage!r} finished with other settings (differing: {shown}); "
                f"rerun with the same settings, pass another --work_dir, or delete {self.stage_dir(stage)} "
                "and the later stage folders to redo them"
            )
        return True

    def first_unfinished(self) -> int:
        """Index in ``STAGES`` of the first stage to run (``len(STAGES)`` when all are done)."""
        for i, stage in enumerate(STAGES):
            if not self.is_done(stage):
                return i
        return len(STAGES)

    def _started_with_these_settings(self, stage: str) -> bool:
        """Whether the unfinished ``stage`` was started with the current fingerprint, so that its
        per-epoch checkpoints may be resumed."""
        marker = self.stage_dir(stage) / STARTED
        try:
            recorded = json.loads(marker.read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return False
        return not differing_keys(recorded, self.fingerprint(stage))

    def _plan(self, stage: str) -> str:
        """What ``stage`` is about to do, in a few words (for the ``lssl dnc`` lines)."""
        teacher = self.teacher_class.rsplit(".", 1)[-1]
        return {
            "base": f"{teacher} for {self.base_epochs} epochs on {self.num_samples()} images",
            "cluster": f"spherical k-means of the base's projector hidden layer into {self.num_clusters} clusters",
            "experts": f"{self.num_clusters} {teacher} experts, {self.expert_epochs:g} full-data epochs in all",
            "distill": f"the student for {self.distill_epochs} epochs from the base and the experts",
        }[stage]

    def _mark_done(self, stage: str, artifacts: dict[str, Any], started: float) -> None:
        log.info("%s: done in %.0f s", stage, time.time() - started)
        if self._rank() == 0:
            atomic_write_json(
                self.stage_dir(stage) / DONE,
                {
                    "stage": stage,
                    "artifacts": artifacts,
                    "fingerprint": self.fingerprint(stage),
                    "seconds": round(time.time() - started, 3),
                },
            )
        distributed.barrier()

    @staticmethod
    def _rank() -> int:
        """The global rank, also before the process group exists: Lightning's DDP launcher re-runs
        this driver in each child process, which must not write (Lightning reads RANK,
        LOCAL_RANK, SLURM_PROCID, ... for it)."""
        return distributed.rank() if distributed.is_distributed() else int(getattr(rank_zero_only, "rank", 0) or 0)

    def _begin_fit(self, stream: str, seed: int) -> None:
        """Derive every random stream of a fit from its stage (module docstring, "Resume")."""
        pl.seed_everything(seed, workers=True, verbose=False)
        if self._initial_data_state is not None:
            self.datamodule.load_state_dict(copy.deepcopy(self._initial_data_state))
        if self._view_seed is not None:
            view_seed = self._view_seed if stream == "base" else zlib.crc32(f"{self._view_seed}:{stream}".encode())
            self.datamodule.view_seed = view_seed  # type: ignore[attr-defined]

    def _fit(self, model: pl.LightningModule, stage_dir: Path, ckpt: Path, **limits: int) -> None:
        """One fit of a stage, with ``last.ckpt`` in ``stage_dir/checkpoints`` after every epoch;
        a fit interrupted earlier (same stage fingerprint, see :meth:`run`) continues from it."""
        checkpoints = stage_dir / "checkpoints"
        callbacks = [
            *(self.trainer_kwargs.get("callbacks") or []),
            CollapseMonitor(),  # each stage's own diagnostics and loss curve, kept in its checkpoint
            AtomicModelCheckpoint(dirpath=str(checkpoints)),
        ]
        kwargs = {
            "logger": ResumableCSVLogger(str(stage_dir), name="logs"),
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            **self.trainer_kwargs,
            "callbacks": callbacks,
            "enable_checkpointing": True,
            **limits,
        }
        trainer = self.trainer_factory(default_root_dir=str(stage_dir), **kwargs)
        last = latest_valid_checkpoint(checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else None
        if last is not None:
            log.info("%s: continues from %s", stage_dir.name, last)
        # a SIGTERMException (or Ctrl-C) propagates after the checkpoint is saved: not done
        trainer.fit(model, datamodule=self.datamodule, ckpt_path=str(last) if last else None)
        if trainer.state.status != TrainerStatus.FINISHED:
            raise RuntimeError(
                f"DnC fit in {stage_dir} ended as {trainer.state.status}; the stage is not "
                "marked done, run again to redo it"
            )
        trainer.save_checkpoint(str(ckpt))  # rank 0 writes
        distributed.barrier()

    def check(self) -> None:
        """Refuse impossible settings before any training."""
        if not hasattr(import_class(self.teacher_class), "projector_hidden"):
            raise ValueError(
                f"teacher_class={self.teacher_class!r} has no projector_hidden(x), the layer DnC "
                "clusters (§3.2); use lightning_ssl.methods.moclr.MoCLR or add the method"
            )
        import_class(self.teacher_class)(**self.stage_teacher_kwargs("base"))  # every option checked by its __init__
        try:  # the student alone (no teachers yet), checked the same way
            DnC(**self.resolved_student_kwargs())
        except ValueError as err:  # the student's options are --distill.* (a sweep's dnc.distill)
            message = str(err).replace("--model.", "--distill.")
            raise ValueError(f"the DnC student (distill options {self.distill}): {message}") from None
        n = self.num_samples()
        if self.num_clusters > n:
            raise ValueError(
                f"DnC with num_clusters={self.num_clusters} clusters for a pre-training set of "
                f"{n} samples: K must be in [1, {n}]"
            )

    # -- the pipeline -----------------------------------------------------------------------------
    def run(self, until: str | None = None) -> dict[str, Path]:
        """Run the stages from the first unfinished one, up to and including ``until`` (default:
        all); returns the stage folders."""
        if until is not None and until not in STAGES:
            raise ValueError(f"until={until!r} is not a DnC stage; valid: {', '.join(STAGES)}")
        self.check()
        start = self.first_unfinished()
        stop = STAGES.index(until) + 1 if until is not None else len(STAGES)
        resumable = start < len(STAGES) and self._started_with_these_settings(STAGES[start])
        for stage in STAGES[: min(start, stop)]:
            log.info("%s: finished before with these settings, kept (%s)", stage, self.stage_dir(stage))
        if self._rank() == 0:
            for stage in STAGES[start + int(resumable) :]:
                shutil.rmtree(self.stage_dir(stage), ignore_errors=True)
        distributed.barrier()
        runners = {
            "base": self.run_base,
            "cluster": self.run_cluster,
            "experts": self.run_experts,
            "distill": self.run_distill,
        }
        try:
            for stage in STAGES[start:stop]:
                log.info("%s: %s (in %s)", stage, self._plan(stage), self.stage_dir(stage))
                self.stage_dir(stage).mkdir(parents=True, exist_ok=True)
                if self._rank() == 0:
                    atomic_write_json(self.stage_dir(stage) / STARTED, {"fingerprint": self.fingerprint(stage)})
                distributed.barrier()
                runners[stage]()
        finally:
            self.datamodule.set_pretrain_subset(None)
            if self._view_seed is not None:
                self.datamodule.view_seed = self._view_seed  # type: ignore[attr-defined]
        return {stage: self.stage_dir(stage) for stage in STAGES}

    def run_base(self) -> None:
        """Stage 1: MoCLR on the full pre-training set for N1 epochs (§3.1)."""
        started, out = time.time(), self.stage_dir("base")
        self._begin_fit("base", self.seed)
        self.datamodule.set_pretrain_subset(None)
        model = import_class(self.teacher_class)(**self.stage_teacher_kwargs("base"))
        self._fit(model, out, out / "model.ckpt", max_epochs=self.base_epochs)
        self._mark_done("base", {"checkpoint": "model.ckpt"}, started)

    def _device(self) -> torch.device:
        accelerator = str(self.trainer_kwargs.get("accelerator", "auto"))
        if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")

    def run_cluster(self) -> None:
        """Stage 2: spherical k-means of the base's projector hidden layer, once (§3.2).

        Under DDP the clean pass is sharded over the ranks and gathered, so every rank holds all
        N rows; rank 0 clusters them and broadcasts the result (``replicated=True``)."""
        started, out = time.time(), self.stage_dir("cluster")
        base = import_class(self.teacher_class).load_from_checkpoint(
            str(self.stage_dir("base") / "model.ckpt"), map_location="cpu"
        )
        device = self._device()
        feats, _, indices = extract_features(
            HiddenLayer(base).to(device), self.datamodule.pretrain_eval_dataloader(), device=device
        )
        n = self.num_samples()
        if not torch.equal(indices.cpu(), torch.arange(n)):
            raise ValueError(f"the clean pass must cover indices 0..{n - 1} once each; got {indices.numel()} rows")
        result, _ = distributed_kmeans(
            feats,
            self.num_clusters,
            replicated=True,
            iterations=self.kmeans_iterations,
            seed=self.seed,
            spherical=True,
            backend=self.kmeans_backend,
            n_init=self.kmeans_n_init,
        )
        sizes = torch.bincount(result.assignments.cpu(), minlength=self.num_clusters).tolist()
        log.info(
            "cluster: %d clusters of %s images (k-means %s, objective %.4f)",
            self.num_clusters,
            ", ".join(str(n) for n in sizes),
            result.backend,
            result.objective,
        )
        if self._rank() == 0:
            np.save(out / "assignments.npy", result.assignments.cpu().numpy().astype(np.int64))
            np.save(out / "centroids.npy", result.centroids.cpu().numpy())
            atomic_write_json(
                out / "clusters.json",
                {
                    "num_clusters": self.num_clusters,
                    "sizes": sizes,
                    "backend": result.backend,
                    "objective": result.objective,
                    "objective_kind": "mean cosine similarity to the centroid",
                    "num_samples": n,
                    "feature_dim": int(feats.shape[1]),
                    "features": "projector hidden layer",
                    "n_init": self.kmeans_n_init,
                },
            )
        self._mark_done(
            "cluster",
            {
                "assignments": "assignments.npy",
                "clusters": "clusters.json",
                "centroids": "centroids.npy",
                "backend": result.backend,
            },
            started,
        )

    def run_experts(self) -> None:
        """Stage 3: one MoCLR per cluster, from scratch, with its share of the N2 budget (§3.3)."""
        started, out = time.time(), self.stage_dir("experts")
        assignments = np.load(self.stage_dir("cluster") / "assignments.npy")
        sizes = np.bincount(assignments, minlength=self.num_clusters)
        if (sizes < 2).any():
            raise ValueError(
                f"cluster sizes {sizes.tolist()}: every expert needs at least 2 images for its "
                f"contrastive loss; lower num_clusters={self.num_clusters}"
            )
        world, batch = self.world_size(), self.global_batch()
        if world > 1 and (sizes < batch).any():
            raise ValueError(
                f"cluster sizes {sizes.tolist()}: under DDP every cluster needs at least one global "
                f"batch ({batch} = batch_size x {world} ranks) so that each rank gets a full batch; "
                f"lower --data.batch_size or num_clusters={self.num_clusters}"
            )
        steps = expert_steps(sizes, self.expert_epochs, batch)
        per_step = [min(batch, int(n)) for n in sizes]
        kwargs = self.stage_teacher_kwargs("experts")
        for k, n_steps in enumerate(steps):
            log.info(
                "experts: expert %d of %d on its %d images, %d steps of %d",
                k + 1,
                len(steps),
                sizes[k],
                n_steps,
                per_step[k],
            )
            self._begin_fit(f"expert_{k}", self.seed + 1 + k)
            self.datamodule.set_pretrain_subset(np.flatnonzero(assignments == k))
            try:
                model = import_class(self.teacher_class)(**kwargs)
                self._fit(model, out / f"expert_{k}", out / f"expert_{k}.ckpt", max_epochs=-1, max_steps=n_steps)
            finally:
                self.datamodule.set_pretrain_subset(None)
        self._mark_done(
            "experts",
            {
                "checkpoints": [f"expert_{k}.ckpt" for k in range(self.num_clusters)],
                "sizes": sizes.tolist(),
                "steps": steps,
                "images_per_step": per_step,
                "image_passes": [s * b for s, b in zip(steps, per_step)],
                "budget_image_passes": float(self.expert_epochs * int(sizes.sum())),
            },
            started,
        )

    def run_distill(self) -> None:
        """Stage 4: a fresh student regressing the base and each image's expert (§3.3)."""
        started, out = time.time(), self.stage_dir("distill")
        experts = self.stage_dir("experts")
        self._begin_fit("distill", self.seed)
        student = DnC(
            base_checkpoint=str((self.stage_dir("base") / "model.ckpt").resolve()),
            expert_checkpoints=[str((experts / f"expert_{k}.ckpt").resolve()) for k in range(self.num_clusters)],
            assignments=str((self.stage_dir("cluster") / "assignments.npy").resolve()),
            teacher_class=self.teacher_class,
            **self.resolved_student_kwargs(),
        )
        self.datamodule.set_pretrain_subset(None)
        self._fit(student, out, out / "model.ckpt", max_epochs=self.distill_epochs)
        self._mark_done("distill", {"checkpoint": "model.ckpt"}, started)

    # -- a sweep run ------------------------------------------------------------------------------
    @classmethod
    def model_class(cls, method_class: str) -> str:
        """A DnC run's ``model`` config is its teachers' (MoCLR, §3.1); the student shares their
        architecture and optimiser options (``SHARED_WITH_STUDENT``)."""
        return DEFAULT_TEACHER

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """The keys are :class:`DnCOptions`'s fields, each in its range."""
        valid = [f.name for f in fields(DnCOptions)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
        if not isinstance(options.get("distill") or {}, dict):
            raise ValueError(f"distill must map student options to values, got {options['distill']!r}")
        DnCOptions(**options)

    @classmethod
    def train(cls, run: Run, config: dict[str, Any], run_dir: Path) -> Trained:
        """A sweep run: the run's data, its ``model`` config as the teachers', ``run.options`` (the
        spec's ``dnc`` section) and its trainer's :class:`StageTrainerOptions`; the stages go to
        ``run_dir/dnc`` and resume there. The distilled student is what gets evaluated."""
        cli = instantiate(config)
        meter = Throughput()
        trainer = StageTrainerOptions.of_config(config.get("trainer") or {}).resolved(verbose=False)
        pipeline = cls(
            datamodule=cli.datamodule,
            work_dir=run_dir / "dnc",
            teacher_class=config["model"]["class_path"],
            teacher_kwargs=dict(config["model"].get("init_args") or {}),
            trainer_kwargs={**trainer, "callbacks": [meter]},
            seed=int(config.get("seed_everything") or 0),
            **dict(run.options or {}),
        )
        started = time.perf_counter()
        stages = pipeline.run()
        seconds = time.perf_counter() - started
        model = DnC.load_from_checkpoint(str(stages["distill"] / "model.ckpt"), map_location="cpu")
        train = {
            "epochs": None,
            **meter.record(),
            "train_seconds": seconds,
            "global_batch": pipeline.global_batch(),
            "devices": pipeline.world_size(),
            "dnc_stages": {k: str(Path(v).resolve().relative_to(Path(run_dir).resolve())) for k, v in stages.items()},
        }
        trained = Trained.of(model, cli.datamodule, cli.trainer, train)
        trained.losses = stage_losses(stages["distill"] / "model.ckpt")  # the student's curve
        return trained


def stage_losses(checkpoint: Path) -> list[float] | None:
    """The training losses a stage's :class:`CollapseMonitor` kept in its checkpoint (``None`` for a
    stage trained without one), so that a stage finished by an earlier process still has its curve."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False).get("callbacks") or {}
    kept = state.get(CollapseMonitor().state_key)
    return list(kept["losses"]) if kept else None
