"""Offline linear probe on pre-extracted, frozen features.

Default recipe: MTTV's (docs/METHODS.md §0.3): features extracted once without augmentation,
AdamW, lr 0.005, weight decay 0, 100 epochs, cosine schedule, batch 1024. The SGD option with
lr 30 and momentum 0.9 is the rwSAM / SDCLR recipe (rwSAM: batch 256, lr ×0.1 at epochs 60 and 80;
SDCLR: 30 epochs, decay at 10 and 20; pass ``milestones``); their train-time augmentation is not
reproduced here, since features are extracted once.

The probe is a plain, BN-free ``nn.Linear`` on raw features, because the papers' learning rates were
tuned on raw features (lr 30 assumes small post-ReLU pooled activations). ``standardize=True``
trains on per-dimension standardised features instead (our option, for backbones with unusual
feature scales) and folds the statistics into the returned layer, so it still applies to raw
features. Weights start at zero (a convex problem; scikit-learn's LogisticRegression does the same),
so the seed only orders the mini-batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

OPTIMIZERS = ("adamw", "sgd")
DEFAULT_LR = {"adamw": 0.005, "sgd": 30.0}


def _check(
    feats: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    optimizer: str,
    milestones: Sequence[int] | None,
) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(
            f"train_feats must be a non-empty N×D matrix, got shape {tuple(feats.shape)}"
        )
    if labels.shape != (feats.shape[0],):
        raise ValueError(
            f"train_labels must have shape ({feats.shape[0]},), got {tuple(labels.shape)}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"train_labels hold class ids in [{lo}, {hi}], outside the valid range "
            f"[0, {num_classes - 1}] (unknown labels, -1, cannot train a probe)"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if milestones is not None and any(not 0 < m < epochs for m in milestones):
        raise ValueError(f"milestones must lie in (0, {epochs}), got {list(milestones)}")


def _lr_at(
    step: int, total: int, steps_per_epoch: int, base: float, milestones: Sequence[int] | None
) -> float:
    """Cosine from ``base`` to 0 over all steps, or ×0.1 at each epoch milestone."""
    if milestones is not None:
        return base * 0.1 ** sum(step // steps_per_epoch >= m for m in milestones)
    return 0.5 * base * (1.0 + math.cos(math.pi * step / total))


def train_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float | None = None,
    batch_size: int = 1024,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    milestones: Sequence[int] | None = None,
    standardize: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> nn.Linear:
    """Train a linear classifier on frozen features with softmax cross-entropy.

    Args:
        train_feats: ``N×D`` features of the balanced probe set (no augmentation).
        train_labels: ``N`` class ids in ``[0, num_classes)``.
        num_classes: output classes ``C``.
        epochs: passes over the features (MTTV and rwSAM: 100).
        lr: peak learning rate; ``None`` picks the recipe's: 0.005 for AdamW (MTTV), 30 for SGD
            (rwSAM, SDCLR).
        batch_size: features per step (MTTV 1024; rwSAM 256).
        weight_decay: L2 penalty (0 in MTTV, rwSAM and SDCLR).
        optimizer: ``"adamw"`` (MTTV) or ``"sgd"`` (SGD with ``momentum``, rwSAM / SDCLR).
        momentum: SGD momentum (0.9 in rwSAM); ignored by AdamW.
        milestones: epochs at which the lr is multiplied by 0.1 (rwSAM: [60, 80]); ``None`` uses a
            per-step cosine decay to 0 (MTTV).
        standardize: train on standardised features and fold the statistics into the layer.
        seed: orders the mini-batches; equal inputs and seed give an identical layer.
        device: where to train (default: the features' device).

    Returns:
        An ``nn.Linear(D, C)`` in eval mode, on ``device``, that takes raw features.
    """
    lr = DEFAULT_LR.get(optimizer, 0.0) if lr is None else lr
    device = torch.device(device) if device is not None else train_feats.device
    # Callers may run under no_grad / inference_mode (a Lightning validation hook): the probe is
    # trained with autograd regardless, on ordinary (non-inference) copies of the inputs.
    with torch.inference_mode(False), torch.enable_grad():
        feats = train_feats.detach().to(device, torch.float32).clone()
        labels = train_labels.detach().to(device).long().clone()
        _check(
            feats, labels, num_classes, epochs, lr, batch_size, weight_decay, optimizer, milestones
        )
        return _fit(
            feats,
            labels,
            num_classes,
            epochs,
            lr,
            batch_size,
            weight_decay,
            optimizer,
            momentum,
            milestones,
            standardize,
            seed,
        )


def _fit(
    feats: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    optimizer: str,
    momentum: float,
    milestones: Sequence[int] | None,
    standardize: bool,
    seed: int,
) -> nn.Linear:
    device = feats.device
    dim = feats.shape[1]
    mean = feats.mean(dim=0) if standardize else torch.zeros(dim, device=device)
    scale = (
        feats.std(dim=0, correction=0).clamp_min(1e-6)
        if standardize
        else torch.ones(dim, device=device)
    )
    x_all = (feats - mean) / scale

    layer = nn.Linear(feats.shape[1], num_classes, device=device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            layer.parameters(), lr=lr, weight_decay=weight_decay
        )
    else:
        opt = torch.optim.SGD(
            layer.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )

    generator = torch.Generator().manual_seed(seed)
    n = feats.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, steps_per_epoch, lr, milestones)
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(layer(x_all[batch]), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1

    with torch.no_grad():  # fold (x - mean) / scale into W x + b
        layer.weight.div_(scale)
        layer.bias.sub_(layer.weight @ mean)
    return layer.eval()


@torch.no_grad()
def predict(layer: nn.Module, feats: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """Arg-max class ids of ``layer`` on ``feats`` (``N``, int64, on ``feats``' device), batched."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(layer.parameters()).device
    out = [
        layer(feats[start : start + batch_size].to(device, torch.float32)).argmax(dim=1)
        for start in range(0, feats.shape[0], batch_size)
    ]
    if not out:
        return torch.empty(0, dtype=torch.long, device=feats.device)
    return torch.cat(out).to(feats.device)
