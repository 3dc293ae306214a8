"""Collapse diagnostics: why an encoder did not learn (docs/protocols.md §11).

* **RankMe** (Garrido et al., ICML 2023, eq. 1): the exponential of the entropy of the normalised
  singular values of the uncentred embedding matrix ``Z`` (``N×D``),
  ``p_k = s_k / Σ s + 1e-5``, ``RankMe = exp(-Σ p_k log p_k)``; at most ``min(N, D)``. A collapsed
  embedding (all rows equal) gives 1, a rank-k one about k, an isotropic Gaussian nearly ``D``.
* **Alignment and uniformity** (Wang & Isola, ICML 2020, §4.1, eqs. 2-3) of the l2-normalised
  embedding: ``align = E ||f(x) - f(y)||²`` over positive pairs (two views of one image; alpha 2)
  and ``uniform = log E exp(-2 ||f(x) - f(y)||²)`` over all pairs (t 2). Collapse gives 0 and 0;
  a spread-out embedding a uniformity near its minimum (about -4 on a large sphere).
* **Per-dimension std of the normalised embedding** (Chen & He, SimSiam, CVPR 2021, §4.1): 0 when
  collapsed, ``1/sqrt(D)`` for an isotropic embedding; recorded times ``sqrt(D)`` so 1 is healthy.

:class:`CollapseMonitor` logs them during training, every ``log_every_n_steps`` steps, on the
training batch (``diag/...``), and keeps the loss curve's trend (:func:`loss_trend`);
:func:`offline_diagnostics` computes them for a result record on a fixed set of training views.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

RANKME_EPS = 1e-5  # added after normalising the singular values (RankMe as stable-pretraining computes it)


def rankme(z: Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of ``z`` (``N×D``, uncentred, unnormalised): ``exp(entropy(s / Σ s + eps))``."""
    s = torch.linalg.svdvals(z.detach().double())
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def alignment(z1: Tensor, z2: Tensor) -> float:
    """Wang & Isola's alignment (alpha 2): mean squared distance of the normalised positive pairs."""
    a, b = F.normalize(z1.detach().double(), dim=1), F.normalize(z2.detach().double(), dim=1)
    return float((a - b).pow(2).sum(1).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """Wang & Isola's uniformity: ``log mean exp(-t ||x_i - x_j||²)`` over pairs ``i < j``."""
    x = F.normalize(z.detach().double(), dim=1)
    if x.shape[0] < 2:
        return float("nan")
    d2 = torch.pdist(x).pow(2)
    return float(torch.logsumexp(-t * d2, dim=0) - math.log(d2.numel()))


def normalised_std(z: Tensor) -> float:
    """SimSiam's collapse measure: the mean over dimensions of the std of the l2-normalised rows,
    times ``sqrt(D)`` (1 for an isotropic embedding, 0 for a collapsed one)."""
    x = F.normalize(z.detach().double(), dim=1)
    if x.shape[0] < 2:
        return float("nan")
    return float(x.std(0).mean() * math.sqrt(x.shape[1]))


def describe(z: Tensor, positive: Tensor | None = None) -> dict[str, float]:
    """The four measures of one embedding (alignment only when the positives are given)."""
    out = {"rankme": rankme(z), "dim": int(z.shape[1]), "uniformity": uniformity(z), "std": normalised_std(z)}
    if positive is not None:
        out["alignment"] = alignment(z, positive)
    return out


def embed(model: nn.Module, x: Tensor) -> Tensor | None:
    """The method's embedding of images ``x`` (``model.embed``), or ``None`` when it has none."""
    fn = getattr(model, "embed", None)
    return fn(x) if callable(fn) else None


def loss_trend(losses: list[float]) -> dict[str, float] | None:
    """How the training loss ended: the mean of its first and last 10 % of steps, and the
    relative fall over the last quarter of the run (mean of the last 10 % against the 10 % that
    ended at three quarters). ``still_falling`` when that fall exceeds 2 % (our choice)."""
    n = len(losses)
    if n < 8:
        return None
    tenth = max(1, n // 10)
    values = np.asarray(losses, dtype=float)
    first, last = values[:tenth].mean(), values[-tenth:].mean()
    mark = int(0.75 * n)
    before = values[max(0, mark - tenth) : mark].mean()
    fall = float((before - last) / abs(before)) if before else 0.0
    return {
        "first": float(first),
        "last": float(last),
        "fall_last_quarter": fall,
        "still_falling": bool(fall > STILL_FALLING),
    }


STILL_FALLING = 0.02


@torch.no_grad()
def offline_diagnostics(
    model: nn.Module, batches: Iterable[Any], device: torch.device | str, max_rows: int = 2048
) -> dict[str, Any]:
    """The measures for a result record, on up to ``max_rows`` training images seen as two views
    (the training views, the method in eval mode): backbone features (``model(x)``) and, where
    the method has one, its embedding (``model.embed(x)``). Returns ``{"features": {...},
    "embedding": {...} | None, "rows": N}``."""
    was_training = model.training
    model.eval()
    f1, f2, z1, z2 = [], [], [], []
    rows = 0
    try:
        for batch in batches:
            views = batch[0]
            if not isinstance(views, (list, tuple)):
                views = [views]
            a = views[0].to(device)
            b = views[1].to(device) if len(views) > 1 else None
            f1.append(model(a).flatten(1).float().cpu())
            if b is not None:
                f2.append(model(b).flatten(1).float().cpu())
            za = embed(model, a)
            if za is not None:
                z1.append(za.flatten(1).float().cpu())
                if b is not None:
                    z2.append(embed(model, b).flatten(1).float().cpu())
            rows += a.shape[0]
            if rows >= max_rows:
                break
    finally:
        model.train(was_training)
    if not f1:
        return {"features": None, "embedding": None, "rows": 0}

    def cat(parts: list[Tensor]) -> Tensor | None:
        return torch.cat(parts)[:max_rows] if parts else None

    feats, feats2, emb, emb2 = cat(f1), cat(f2), cat(z1), cat(z2)
    return {
        "features": describe(feats, feats2),
        "embedding": None if emb is None else describe(emb, emb2),
        "rows": int(feats.shape[0]),
    }


def training_view_batches(datamodule: Any, rows: int = 2048, batch_size: int = 256, seed: int = 0) -> Iterable[Any]:
    """Batches ``(views, target, index)`` of ``rows`` pre-training images drawn at random (seeded;
    a long-tailed set in index order would give head classes only), seen through the datamodule's
    training views; datasets that decode to float tensors give their eval view twice (no
    alignment then: ``views`` holds one tensor)."""
    dataset = datamodule.splits.pretrain
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:rows].sort().values.tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, chosen), batch_size=batch_size)
    for i, (images, target, index) in enumerate(loader):
        if isinstance(images, Tensor) and images.dtype == torch.uint8:
            yield datamodule.view_transform(images, seed=seed * 100_003 + i), target, index
        else:
            yield [images], target, index


class CollapseMonitor(pl.Callback):
    """Logs RankMe, alignment, uniformity and the normalised std of the training batch's embedding
    (``diag/embedding_*``) and backbone features (``diag/features_*``) every ``every_n_steps``
    steps (default: the trainer's ``log_every_n_steps``), and keeps every logged training loss
    for :func:`loss_trend` (in the checkpoint, so a resumed run has the whole curve)."""

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"CollapseMonitor: every_n_steps={every_n_steps} must be >= 1")
        self.every_n_steps = every_n_steps
        self.losses: list[float] = []  # every step's training loss, this rank
        self._pending: list[Tensor] = []  # on the device until the next logging step (no sync per step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict):
            return
        if isinstance(outputs.get("loss"), Tensor):
            self._pending.append(outputs["loss"].detach().float().reshape(()))
        every = self.every_n_steps or max(1, int(trainer.log_every_n_steps))
        if trainer.global_step % every:
            return
        self._flush()
        logs: dict[str, float] = {}
        features = outputs.get("features")
        if isinstance(features, Tensor) and features.ndim == 2 and features.shape[0] > 1:
            d = describe(features)
            logs.update({f"diag/features_{k}": v for k, v in d.items() if k != "dim"})
        emb = outputs.get("embeddings")
        if isinstance(emb, Tensor) and emb.ndim == 3 and emb.shape[1] > 1:
            d = describe(emb[0], emb[1] if emb.shape[0] > 1 else None)
            logs.update({f"diag/embedding_{k}": v for k, v in d.items() if k != "dim"})
        if logs:
            pl_module.log_dict(logs, on_step=True, on_epoch=False, sync_dist=False)

    def _flush(self) -> None:
        if self._pending:
            self.losses.extend(torch.stack(self._pending).cpu().tolist())
            self._pending = []

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush()

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"losses": list(self.losses)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.losses = list(state_dict.get("losses", []))
