"""Divide-and-Contrast as one resumable pipeline (Tian, Hénaff, van den Oord; ICCV 2021, §3).

Four stages, each a directory of ``work_dir`` finished by a ``done.json`` marker written last and
atomically (temporary file + ``os.replace``):

1. ``base``: MoCLR on the whole pre-training set for N1 epochs -> ``base/model.ckpt``;
2. ``cluster``: a clean pass (eval transform, index order) through the base model's *projector
   hidden layer*, spherical k-means into K clusters, once -> ``cluster/assignments.npy``
   (cluster id per pre-training index), ``cluster/clusters.json`` (sizes, k-means backend,
   objective), ``cluster/centroids.npy``;
3. ``experts``: K MoCLR models trained *from scratch*, each on its own cluster only, for
   ``max(1, round(N2 * |cluster| / N))`` epochs (the N2 budget is in full-dataset epochs, split in
   proportion to cluster size) -> ``experts/expert_{k}.ckpt``;
4. ``distill``: a fresh :class:`~lightning_ssl.methods.dnc.DnC` student regressing the base and the
   image's own expert for N3 epochs -> ``distill/model.ckpt``.

Re-running resumes at the first stage without its marker (or whose recorded settings differ from
the current ones); that stage and every later one are cleared and redone. A stage that was
interrupted is redone from its start.

The driver sees the datamodule only through the batch contract and two methods,
``pretrain_eval_dataloader()`` and ``set_pretrain_subset(indices)`` (DESIGN.md), so it imports
nothing from ``datamodules``. Under DDP every rank runs the driver; only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from lightning_ssl import distributed as D
from lightning_ssl.cluster.kmeans import distributed_kmeans
from lightning_ssl.eval.features import extract_features
from lightning_ssl.methods.dnc import DEFAULT_TEACHER, DnC, import_class

log = logging.getLogger(__name__)

STAGES = ("base", "cluster", "experts", "distill")
DONE = "done.json"
# the options of the teachers that the student shares (architecture and optimisation)
SHARED_WITH_STUDENT = (
    "backbone", "image_size", "in_chans", "optimizer", "lr", "weight_decay", "momentum",
    "warmup_epochs", "final_lr", "proj_hidden_dim", "proj_output_dim",
)


def expert_epochs(sizes: list[int] | np.ndarray, total_epochs: float) -> list[int]:
    """Epochs of each expert: the budget of ``total_epochs`` full-dataset epochs split in
    proportion to cluster size (§3.3: 1500 epochs over 5 clusters is about 300 each), rounded,
    and at least 1 each (our choice, so that every expert is trained)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.size == 0 or (sizes < 1).any():
        raise ValueError(f"cluster sizes must all be >= 1, got {sizes.astype(int).tolist()}")
    if total_epochs <= 0:
        raise ValueError(f"expert_epochs={total_epochs} must be > 0 (full-dataset epochs)")
    return [max(1, int(round(total_epochs * n / sizes.sum()))) for n in sizes]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and ``os.replace``,
    so a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class HiddenLayer(nn.Module):
    """``image -> projector hidden layer`` of a method with ``projector_hidden`` (MoCLR), the
    features DnC clusters (§3.2: they cluster better than the pooled features, 51.6 vs 40.1)."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: Tensor) -> Tensor:
        return self.method.projector_hidden(x)


@dataclass
class DnCPipeline:
    """The whole of DnC, stage by stage; :meth:`run` resumes where a previous run stopped.

    Attributes:
        datamodule: a ``LongTailDataModule`` (or anything with the same loaders and
            ``set_pretrain_subset``).
        work_dir: where the stage folders go.
        num_clusters: K (§3.2 / Table 12: 5, or 10 for DnC-4500; use 2-5 on small long-tailed
            sets, whose clusters otherwise get tiny, METHODS.md §2.7).
        base_epochs: N1 (Table 12: 200 for DnC-1000, 1000 for DnC-3000/4500).
        expert_epochs: N2, the experts' total budget in full-dataset epochs (Table 12: 600,
            1500, 3000).
        distill_epochs: N3 (Table 12: 200, 500).
        teacher_kwargs: ``__init__`` options of the base and expert model (``teacher_class``).
        student_kwargs: options of :class:`DnC` beyond those it shares with the teachers
            (``SHARED_WITH_STUDENT``), which it takes from ``teacher_kwargs`` unless given here.
        trainer_kwargs: ``pl.Trainer`` options of every stage (``max_epochs`` and
            ``default_root_dir`` are set per stage).
        teacher_class: class path of the base/expert method (MoCLR, §3.1).
        kmeans_iterations / kmeans_backend / seed: of the clustering (and ``seed`` of every fit).
    """

    datamodule: pl.LightningDataModule
    work_dir: str | Path
    num_clusters: int = 5
    base_epochs: int = 200
    expert_epochs: float = 600.0
    distill_epochs: int = 200
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher_class: str = DEFAULT_TEACHER
    kmeans_iterations: int = 20
    kmeans_backend: str = "auto"
    seed: int = 0
    trainer_factory: Callable[..., pl.Trainer] = pl.Trainer

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        for name in ("num_clusters", "base_epochs", "distill_epochs", "kmeans_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.expert_epochs <= 0:
            raise ValueError(f"expert_epochs={self.expert_epochs} must be > 0 (full-dataset epochs)")

    # -- bookkeeping ------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.work_dir / stage  # type: ignore[operator]

    def num_samples(self) -> int:
        return len(self.datamodule.pretrain_eval_dataloader().dataset)

    def settings(self, stage: str) -> dict[str, Any]:
        """What a stage's result depends on (besides the stages before it); a finished stage whose
        recorded settings differ is redone. Trainer options (devices, precision) are left out."""
        teacher = {"teacher_class": self.teacher_class, "teacher_kwargs": self.teacher_kwargs,
                   "seed": self.seed}
        settings = {
            "base": {**teacher, "epochs": self.base_epochs, "num_samples": self.num_samples()},
            "cluster": {"num_clusters": self.num_clusters, "iterations": self.kmeans_iterations,
                        "seed": self.seed},
            "experts": {**teacher, "total_epochs": self.expert_epochs},
            "distill": {"student_kwargs": self.resolved_student_kwargs(), "epochs": self.distill_epochs,
                        "seed": self.seed},
        }[stage]
        return json.loads(json.dumps(settings, default=str))  # as it reads back from done.json

    def is_done(self, stage: str) -> bool:
        marker = self.stage_dir(stage) / DONE
        if not marker.is_file():
            return False
        recorded = json.loads(marker.read_text()).get("settings")
        if recorded != self.settings(stage):
            log.warning("DnC stage %r: settings changed since it finished; redoing it", stage)
            return False
        return True

    def first_unfinished(self) -> int:
        """Index in ``STAGES`` of the first stage to run (``len(STAGES)`` when all are done)."""
        for i, stage in enumerate(STAGES):
            if not self.is_done(stage):
                return i
        return len(STAGES)

    def _mark_done(self, stage: str, artifacts: dict[str, Any], started: float) -> None:
        if self._rank() == 0:
            write_json_atomic(self.stage_dir(stage) / DONE, {
                "stage": stage, "artifacts": artifacts, "settings": self.settings(stage),
                "seconds": round(time.time() - started, 3),
            })
        self._barrier()

    @staticmethod
    def _rank() -> int:
        """The global rank, also before the process group exists: Lightning's DDP launcher re-runs
        this driver in each child process, which must not write (Lightning reads RANK,
        LOCAL_RANK, SLURM_PROCID, ... for it)."""
        return D.rank() if D.is_distributed() else int(getattr(rank_zero_only, "rank", 0) or 0)

    @staticmethod
    def _barrier() -> None:
        if D.is_distributed():
            torch.distributed.barrier()

    def _trainer(self, stage_dir: Path, max_epochs: int) -> pl.Trainer:
        kwargs = {"logger": pl.loggers.CSVLogger(str(stage_dir), name="logs"), "enable_checkpointing": False,
                  "limit_val_batches": 0, "num_sanity_val_steps": 0, **self.trainer_kwargs}
        return self.trainer_factory(max_epochs=max_epochs, default_root_dir=str(stage_dir), **kwargs)

    def _fit(self, model: pl.LightningModule, stage_dir: Path, max_epochs: int, ckpt: Path) -> None:
        trainer = self._trainer(stage_dir, max_epochs)
        trainer.fit(model, datamodule=self.datamodule)
        trainer.save_checkpoint(str(ckpt))  # rank 0 writes
        self._barrier()

    def new_teacher(self) -> pl.LightningModule:
        return import_class(self.teacher_class)(**self.teacher_kwargs)

    def resolved_student_kwargs(self) -> dict[str, Any]:
        shared = {k: v for k, v in self.teacher_kwargs.items() if k in SHARED_WITH_STUDENT}
        return {**shared, **self.student_kwargs}

    def check(self) -> None:
        """Refuse impossible settings before any training."""
        if not hasattr(import_class(self.teacher_class), "projector_hidden"):
            raise ValueError(f"teacher_class={self.teacher_class!r} has no projector_hidden(x), the layer DnC "
                             "clusters (§3.2); use lightning_ssl.methods.moclr.MoCLR or add the method")
        n = self.num_samples()
        if self.num_clusters > n:
            raise ValueError(f"DnC with num_clusters={self.num_clusters} clusters for a pre-training set of "
                             f"{n} samples: K must be in [1, {n}]")

    # -- the pipeline -----------------------------------------------------------------------------
    def run(self) -> dict[str, Path]:
        """Run the stages from the first unfinished one; returns the stage folders."""
        self.check()
        start = self.first_unfinished()
        if self._rank() == 0:
            for stage in STAGES[start:]:
                shutil.rmtree(self.stage_dir(stage), ignore_errors=True)
        self._barrier()
        runners = {"base": self.run_base, "cluster": self.run_cluster, "experts": self.run_experts,
                   "distill": self.run_distill}
        for stage in STAGES[start:]:
            log.info("DnC stage %r in %s", stage, self.stage_dir(stage))
            self.stage_dir(stage).mkdir(parents=True, exist_ok=True)
            runners[stage]()
        return {stage: self.stage_dir(stage) for stage in STAGES}

    def run_base(self) -> None:
        """Stage 1: MoCLR on the full pre-training set for N1 epochs (§3.1)."""
        started, out = time.time(), self.stage_dir("base")
        pl.seed_everything(self.seed, workers=True)
        self.datamodule.set_pretrain_subset(None)
        self._fit(self.new_teacher(), out, self.base_epochs, out / "model.ckpt")
        self._mark_done("base", {"checkpoint": "model.ckpt"}, started)

    def _device(self) -> torch.device:
        accelerator = str(self.trainer_kwargs.get("accelerator", "auto"))
        if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")

    def run_cluster(self) -> None:
        """Stage 2: spherical k-means of the base's projector hidden layer, once (§3.2)."""
        started, out = time.time(), self.stage_dir("cluster")
        base = import_class(self.teacher_class).load_from_checkpoint(
            str(self.stage_dir("base") / "model.ckpt"), map_location="cpu")
        device = self._device()
        feats, _, indices = extract_features(HiddenLayer(base).to(device), self.datamodule.pretrain_eval_dataloader(),
                                             device=device)
        n = self.num_samples()
        if not torch.equal(indices.cpu(), torch.arange(n)):
            raise ValueError(f"the clean pass must cover indices 0..{n - 1} once each; got {indices.numel()} rows")
        result, _ = distributed_kmeans(feats, self.num_clusters, iterations=self.kmeans_iterations,
                                       seed=self.seed, spherical=True, backend=self.kmeans_backend)
        sizes = torch.bincount(result.assignments.cpu(), minlength=self.num_clusters).tolist()
        log.info("DnC clustering: k-means backend %s, objective %.4f, sizes %s", result.backend,
                 result.objective, sizes)
        if self._rank() == 0:
            np.save(out / "assignments.npy", result.assignments.cpu().numpy().astype(np.int64))
            np.save(out / "centroids.npy", result.centroids.cpu().numpy())
            write_json_atomic(out / "clusters.json", {
                "num_clusters": self.num_clusters, "sizes": sizes, "backend": result.backend,
                "objective": result.objective, "objective_kind": "mean cosine similarity to the centroid",
                "num_samples": n, "feature_dim": int(feats.shape[1]), "features": "projector hidden layer",
            })
        self._mark_done("cluster", {"assignments": "assignments.npy", "clusters": "clusters.json",
                                    "centroids": "centroids.npy", "backend": result.backend}, started)

    def run_experts(self) -> None:
        """Stage 3: one MoCLR per cluster, from scratch, epochs in proportion to its size (§3.3)."""
        started, out = time.time(), self.stage_dir("experts")
        assignments = np.load(self.stage_dir("cluster") / "assignments.npy")
        sizes = np.bincount(assignments, minlength=self.num_clusters)
        if (sizes < 2).any():
            raise ValueError(f"cluster sizes {sizes.tolist()}: every expert needs at least 2 images for its "
                             f"contrastive loss; lower num_clusters={self.num_clusters}")
        epochs = expert_epochs(sizes, self.expert_epochs)
        for k, n_epochs in enumerate(epochs):
            log.info("DnC expert %d: %d images, %d epochs", k, sizes[k], n_epochs)
            pl.seed_everything(self.seed + 1 + k, workers=True)
            self.datamodule.set_pretrain_subset(np.flatnonzero(assignments == k))
            try:
                self._fit(self.new_teacher(), out / f"expert_{k}", n_epochs, out / f"expert_{k}.ckpt")
            finally:
                self.datamodule.set_pretrain_subset(None)
        self._mark_done("experts", {"checkpoints": [f"expert_{k}.ckpt" for k in range(self.num_clusters)],
                                    "epochs": epochs, "sizes": sizes.tolist()}, started)

    def run_distill(self) -> None:
        """Stage 4: a fresh student regressing the base and each image's expert (§3.3)."""
        started, out = time.time(), self.stage_dir("distill")
        experts = self.stage_dir("experts")
        student = DnC(
            base_checkpoint=str((self.stage_dir("base") / "model.ckpt").resolve()),
            expert_checkpoints=[str((experts / f"expert_{k}.ckpt").resolve()) for k in range(self.num_clusters)],
            assignments=str((self.stage_dir("cluster") / "assignments.npy").resolve()),
            teacher_class=self.teacher_class,
            **self.resolved_student_kwargs(),
        )
        pl.seed_everything(self.seed, workers=True)
        self.datamodule.set_pretrain_subset(None)
        self._fit(student, out, self.distill_epochs, out / "model.ckpt")
        self._mark_done("distill", {"checkpoint": "model.ckpt"}, started)
