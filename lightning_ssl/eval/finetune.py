"""Full fine-tuning on a probe set: the transfer protocol of rwSAM (Liu et al. ICLR 2022 §3;
``ft_moco.py``: SGD with Nesterov momentum, lr 0.1 for the head and 0.1x for the backbone,
weight decay 5e-4, lr x0.1 at 25/50/75% of training)."""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_ssl.eval.features import extract_features


class FineTuner(pl.LightningModule):
    """A copy of the backbone plus a linear head, trained end to end with cross-entropy."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, lr: float = 0.1,
                 backbone_lr_scale: float = 0.1, weight_decay: float = 5e-4, epochs: int = 20) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.head = nn.Linear(feature_dim, num_classes)
        self.lr, self.backbone_lr_scale, self.weight_decay, self.epochs = lr, backbone_lr_scale, weight_decay, epochs

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x).flatten(1)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _ = batch
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(self.head(self(x)), y)
        self.log("finetune/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(
            [{"params": self.backbone.parameters(), "lr": self.lr * self.backbone_lr_scale},
             {"params": self.head.parameters(), "lr": self.lr}],
            momentum=0.9, nesterov=True, weight_decay=self.weight_decay)
        milestones = [max(1, int(self.epochs * f)) for f in (0.25, 0.5, 0.75)]
        return [opt], [torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)]


def finetune_and_predict(model: nn.Module, feature_dim: int, datamodule: Any, epochs: int = 20,
                         lr: float = 0.1, probe_set: str = "full", accelerator: str = "auto",
                         seed: int = 0) -> tuple[Tensor, Tensor]:
    """Fine-tune on ``probe_set`` and return ``(test predictions, test labels)``."""
    pl.seed_everything(seed, workers=True)
    loader = datamodule.probe_dataloader(probe_set)
    train = DataLoader(loader.dataset, batch_size=min(256, len(loader.dataset)), shuffle=True, drop_last=False)
    tuner = FineTuner(model.backbone if hasattr(model, "backbone") else model, feature_dim,
                      int(datamodule.num_classes), lr=lr, epochs=epochs)
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, logger=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(tuner, train)
    network = nn.Sequential(tuner.backbone, nn.Flatten(1), tuner.head)
    logits, labels, _ = extract_features(network, datamodule.test_dataloader(), device=tuner.device)
    return logits.argmax(1), labels
