"""Supervised baseline on the same backbone (the SL arm of Liu et al., ICLR 2022 §3)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.card import MethodCard


class Supervised(SSLMethod):
    """Cross-entropy on the labels of the (long-tailed) pre-training set.

    It reads ``target``, which SSL methods must not; the probe then evaluates its backbone exactly
    as an SSL backbone, so the balanced-vs-long-tailed gap of SSL and SL can be compared
    (rwSAM's relative gap, METHODS.md §0.2).
    """

    card = MethodCard(
        name="Supervised",
        paper="Liu et al., Self-supervised Learning is More Robust to Dataset Imbalance, ICLR 2022",
        defaults_from="§3: the supervised pre-training baseline on the same data and backbone",
    )

    def __init__(self, num_classes: int = 10, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        """
        Args:
            num_classes: classes of the pre-training set (the datamodule's ``num_classes``).
            label_smoothing: cross-entropy label smoothing (0: plain CE, our choice).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def compute_losses(self, batch: Batch) -> LossOutput:
        views, target, _ = batch
        if (target < 0).any():
            raise ValueError("Supervised needs labels, but the batch has target -1 (unlabeled data)")
        x = views[0]
        feats = self(x)
        logits = self.classifier(feats)
        losses = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.hparams.label_smoothing)
        acc = (logits.detach().argmax(1) == target).float().mean()
        return LossOutput(losses, feats.detach(), logs={"acc": acc})
