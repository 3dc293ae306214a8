"""Supervised baseline on the same backbone (the SL arm of Liu et al., ICLR 2022 §3)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.method_card import MethodCard


class Supervised(SSLMethod):
    """Cross-entropy on the labels of the (long-tailed) pre-training set.

    It reads ``target``, which SSL methods must not; the probe then evaluates its backbone exactly
    as an SSL backbone, so the balanced-vs-long-tailed gap of SSL and SL can be compared
    (rwSAM's relative gap, docs/protocols.md §9).
    """

    card = MethodCard(
        name="Supervised",
        paper="Liu et al., Self-supervised Learning is More Robust to Dataset Imbalance, ICLR 2022",
        defaults_from="§3: the supervised pre-training baseline on the same data and backbone",
    )

    def __init__(self, num_classes: int | None = None, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        """
        Args:
            num_classes: classes of the pre-training set; ``None`` takes the datamodule's
                ``num_classes`` when the fit starts (and records it for checkpoints).
            label_smoothing: cross-entropy label smoothing (0: plain CE, our choice).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 2):
            raise ValueError(
                f"num_classes={num_classes} must be >= 2, or unset to take the datamodule's; pass e.g. "
                "--model.num_classes 10"
            )
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"label_smoothing={label_smoothing} must be in [0, 1); pass e.g. --model.label_smoothing 0.1"
            )
        self.classifier = nn.Linear(self.feature_dim, num_classes) if num_classes else None

    def setup(self, stage: str) -> None:
        if self.classifier is not None:
            return
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None or not getattr(dm, "num_classes", 0):
            raise ValueError("Supervised needs num_classes: pass --model.num_classes N or a datamodule that has it")
        self.hparams.num_classes = int(dm.num_classes)  # saved with the checkpoint
        self.classifier = nn.Linear(self.feature_dim, int(dm.num_classes)).to(self.device)

    def compute_losses(self, batch: Batch) -> LossOutput:
        views, target, _ = batch
        if (target < 0).any():
            raise ValueError("Supervised needs labels, but the batch has target -1 (unlabeled data)")
        num_classes = self.classifier.out_features
        if (target >= num_classes).any():
            raise ValueError(
                f"Supervised has {num_classes} classes but the batch has label {int(target.max())}: "
                f"set --model.num_classes to the datamodule's num_classes"
            )
        x = views[0]
        feats = self(x)
        logits = self.classifier(feats)
        losses = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.hparams.label_smoothing)
        acc = (logits.detach().argmax(1) == target).float().mean()
        return LossOutput(losses, feats.detach(), logs={"acc": acc})
