"""Evaluation during pre-training: an online linear probe and a kNN monitor (Lightning callbacks).

Both read the datamodule's ``num_classes``, ``class_groups`` and ``group_rule`` (counts of the
pre-training set), log :func:`~lightning_ssl.eval.metrics.group_report` metrics, and keep the
per-class accuracy vectors in ``last_per_class`` (a logger cannot log a vector as a scalar; the
W&B hook charts them from there).

They work with any ``LightningModule`` whose ``forward(images)`` returns ``B×D`` features: a module
without a ``validation_step`` gets one that returns ``{"features": self(images), "target": ...}``
(:func:`add_feature_validation`), and a ``training_step`` that returns no ``features`` has them
computed by the probe from the first view (one extra forward pass in eval mode).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import nn

from lightning_ssl import distributed
from lightning_ssl.eval.features import extract_features
from lightning_ssl.eval.knn import knn_predict
from lightning_ssl.eval.metrics import group_report, per_class_accuracy


def _eval_spec(trainer: pl.Trainer) -> tuple[int, Mapping[str, Any], str]:
    """``(num_classes, class_groups, group_rule)`` of the trainer's datamodule, or a clear error."""
    dm = getattr(trainer, "datamodule", None)
    missing = [a for a in ("num_classes", "class_groups", "group_rule") if not hasattr(dm, a)]
    if missing:
        raise ValueError(
            f"evaluation callbacks need trainer.datamodule with num_classes, class_groups and "
            f"group_rule; {type(dm).__name__} lacks {missing} (pass datamodule= to trainer.fit)"
        )
    return int(dm.num_classes), dm.class_groups, str(dm.group_rule)


def _feature_validation_step(self: pl.LightningModule, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
    images, target, _ = batch
    return {"features": self(images), "target": target}


def add_feature_validation(module: pl.LightningModule) -> bool:
    """Give ``module`` a ``validation_step`` returning ``{"features": module(images), "target"}``
    when it defines none (Lightning skips validation, and with it these callbacks, otherwise).
    Returns whether one was added; the module's class is not changed."""
    if is_overridden("validation_step", module, pl.LightningModule):
        return False
    module.validation_step = types.MethodType(_feature_validation_step, module)
    return True


@torch.no_grad()
def _features_of_first_view(pl_module: pl.LightningModule, batch: Any) -> torch.Tensor:
    """``pl_module(views[0])`` in eval mode (no batch-norm statistics updated), modes restored."""
    views = batch[0]
    images = views[0] if isinstance(views, (list, tuple)) else views
    modes = {m: m.training for m in pl_module.modules()}
    pl_module.eval()
    try:
        return pl_module(images).flatten(1)
    finally:
        for m, training in modes.items():
            m.train(training)


def _first_of_each_index(*tensors: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sort by sample index and drop repeats (a DistributedSampler pads ranks with repeats)."""
    order = index.argsort(stable=True)
    index = index[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return tuple(t[order][keep] for t in tensors)


class OnlineLinearProbe(pl.Callback):
    """A linear head trained on detached features alongside pre-training, tested each validation.

    Each training step's ``outputs["features"]`` (detached backbone features of the first view; when
    ``training_step`` returns none, ``pl_module(views[0])`` in eval mode) and
    ``batch[1]`` (labels; ``-1`` = unknown, skipped) are gathered from all ranks before the step:
    the head is not part of the DDP-wrapped module, so nothing would synchronise its gradients, and
    heads trained on per-rank shards would drift apart; with gathered inputs every rank takes the
    identical step (zero init, same data, same order), so the head in the checkpoint (saved by
    rank 0) is the head behind the logged metrics, and equals a single-process run on the same
    global batches. The head has its own optimizer (SGD, constant lr) and never touches the
    backbone. Its state and optimizer state go into the checkpoint, so resuming is exact.

    Validation batches (the test set) are classified from ``outputs["features"]`` of the method's
    ``validation_step`` (or ``pl_module(image)`` when it returns none); only the first validation
    dataloader is used. Metrics are logged under ``{prefix}/...`` and ``{prefix}/{rule}/...``.

    Args:
        lr: SGD learning rate of the head. Our choice (no LT-SSL paper specifies an online probe);
            0.1 is solo-learn's online-classifier default.
        momentum: SGD momentum (our choice, the usual 0.9).
        weight_decay: L2 penalty of the head (0, as in the offline probes of docs/protocols.md §5.2).
        prefix: metric-name prefix naming the probe type.
    """

    def __init__(
        self,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        prefix: str = "online_linear",
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not prefix:
            raise ValueError("prefix must be a non-empty metric-name prefix, got ''")
        self.lr, self.momentum, self.weight_decay, self.prefix = lr, momentum, weight_decay, prefix
        self.head: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last_metrics: dict[str, float] = {}
        self.last_per_class: dict[str, np.ndarray] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    # -- head ------------------------------------------------------------------------------
    def _build(self, in_features: int, num_classes: int, device: torch.device) -> None:
        head = nn.Linear(in_features, num_classes, device=device)
        nn.init.zeros_(head.weight)  # identical on every rank without a broadcast
        nn.init.zeros_(head.bias)
        self.head = head
        self.optimizer = torch.optim.SGD(
            head.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        if self._pending is not None:
            head.load_state_dict(self._pending["head"])
            self.optimizer.load_state_dict(self._pending["optimizer"])
            self._pending = None

    def _restore_pending(self, pl_module: pl.LightningModule) -> None:
        if self.head is None and self._pending is not None:
            weight = self._pending["head"]["weight"]
            self._build(weight.shape[1], weight.shape[0], pl_module.device)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        add_feature_validation(pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_pending(pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_pending(pl_module)

    # -- training --------------------------------------------------------------------------
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if isinstance(outputs, Mapping) and "features" in outputs:
            feats = outputs["features"].detach().float()
        else:
            feats = _features_of_first_view(pl_module, batch).float()
        target = torch.as_tensor(batch[1]).to(feats.device).long()
        feats, target = distributed.all_gather(feats), distributed.all_gather(target)
        if self.head is None:
            num_classes, _, _ = _eval_spec(trainer)
            self._build(feats.shape[1], num_classes, feats.device)
        known = target >= 0
        if not bool(known.any()):
            return
        assert self.head is not None and self.optimizer is not None
        with torch.enable_grad(), torch.autocast(feats.device.type, enabled=False):
            loss = F.cross_entropy(self.head(feats[known]), target[known])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        pl_module.log(
            f"{self.prefix}/train_loss",
            loss.detach(),
            on_step=True,
            on_epoch=False,
            batch_size=int(known.sum()),
        )

    # -- validation ------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or dataloader_idx != 0 or self.head is None:
            return
        if isinstance(outputs, Mapping) and "features" in outputs:
            feats = outputs["features"]
        else:
            feats = pl_module(batch[0])
        target = outputs["target"] if isinstance(outputs, Mapping) and "target" in outputs else batch[1]
        with torch.no_grad(), torch.autocast(feats.device.type, enabled=False):
            pred = self.head(feats.detach().float().to(self.head.weight.device)).argmax(dim=1)
        device = pred.device
        self._val.append(
            (
                pred,
                torch.as_tensor(target).to(device).long(),
                torch.as_tensor(batch[2]).to(device).long(),
            )
        )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.head is None:
            rank_zero_warn("OnlineLinearProbe: no training step has built the head yet; nothing logged")
            return
        device = self.head.weight.device
        if self._val:
            pred, target, index = (torch.cat(t) for t in zip(*self._val))
        else:  # this rank saw no validation batch; it still takes part in the gathers
            pred = target = index = torch.empty(0, dtype=torch.long, device=device)
        pred, target, index = (distributed.all_gather(t) for t in (pred, target, index))
        pred, target = _first_of_each_index(pred, target, index=index)
        self._val = []
        if pred.numel() == 0:
            return
        num_classes, groups, rule = _eval_spec(trainer)
        self.last_metrics = group_report(pred, target, num_classes, groups, rule, self.prefix)
        self.last_per_class[self.prefix] = per_class_accuracy(pred, target, num_classes)
        # Every rank holds the same gathered numbers, so no sync_dist reduction is needed.
        pl_module.log_dict(self.last_metrics, sync_dist=False)

    # -- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.head is None:
            return {} if self._pending is None else dict(self._pending)
        assert self.optimizer is not None
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.head, self.optimizer = None, None
        self._pending = {"head": state_dict["head"], "optimizer": state_dict["optimizer"]}


class KNNMonitor(pl.Callback):
    """Weighted cosine kNN accuracy of the backbone, from a clean pass over probe and test sets.

    At the end of every ``every_n_epochs``-th validation epoch (and of the last epoch, and of every
    ``trainer.validate``), the features of the balanced probe set (``probe_dataloader(probe_set)``,
    the memory bank) and of the test set (``test_dataloader()``, the queries) are extracted with the
    eval transform (never augmented training views: the solo-learn pitfall, docs/protocols.md §6), sharded
    over ranks, and classified by :func:`~lightning_ssl.eval.knn.knn_predict`. Metrics are logged
    under ``knn_k{k}_t{T}[_{probe_set}]/...``. Every rank computes the same predictions.

    Args:
        every_n_epochs: run period in epochs (MTTV: 10; default 1, as small runs are short).
        k: neighbours (MTTV / MoCo demo / InstDisc: 200).
        temperature: vote temperature ``T`` (MTTV / MoCo demo: 0.1).
        probe_set: name of the bank set among the datamodule's ``probe_sets`` ("full" by default).
        chunk_size: queries per matmul. bank_chunk_size: bank rows per matmul (None = all).
        progress: rich progress bars during extraction.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        k: int = 200,
        temperature: float = 0.1,
        probe_set: str = "full",
        chunk_size: int = 1024,
        bank_chunk_size: int | None = None,
        progress: bool = False,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.every_n_epochs, self.k, self.temperature = every_n_epochs, k, temperature
        self.probe_set, self.chunk_size, self.bank_chunk_size = (
            probe_set,
            chunk_size,
            bank_chunk_size,
        )
        self.progress = progress
        self.prefix = f"knn_k{k}_t{temperature:g}" + ("" if probe_set == "full" else f"_{probe_set}")
        self.last_metrics: dict[str, float] = {}
        self.last_per_class: dict[str, np.ndarray] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        add_feature_validation(pl_module)

    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != TrainerFn.FITTING:
            return True
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch == trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        num_classes, groups, rule = _eval_spec(trainer)
        dm = trainer.datamodule
        names = getattr(dm, "probe_sets", None)
        if names is not None and self.probe_set not in names:
            raise ValueError(f"probe_set {self.probe_set!r} is not one of the datamodule's {list(names)}")
        bank, bank_labels, _ = extract_features(pl_module, dm.probe_dataloader(self.probe_set), progress=self.progress)
        query, query_labels, _ = extract_features(pl_module, dm.test_dataloader(), progress=self.progress)
        pred = knn_predict(
            query,
            bank,
            bank_labels,
            num_classes,
            k=self.k,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
            bank_chunk_size=self.bank_chunk_size,
        )
        self.last_metrics = group_report(pred, query_labels, num_classes, groups, rule, self.prefix)
        self.last_per_class[self.prefix] = per_class_accuracy(pred, query_labels, num_classes)
        pl_module.log_dict(self.last_metrics, sync_dist=False)
