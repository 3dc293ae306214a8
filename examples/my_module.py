"""Any LightningModule plugs in: BYOL (Grill et al., NeurIPS 2020) as a plain ``pl.LightningModule``,
not an ``SSLMethod``. The suite trains it, probes it online and offline, and sweeps it; it only reads
the batch contract ``(views, target, index)`` and returns ``B x D`` features from ``forward``.

Run it from this folder (the README's "Plug in any LightningModule"):

    lssl fit --model my_module.MyBYOL --data DigitsLT --trainer.max_epochs 5
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_ssl.backbones import build_backbone
from lightning_ssl.heads import mlp


class MyBYOL(pl.LightningModule):
    """An online encoder (backbone, projector, predictor) regressing an EMA target encoder's
    projection of the other view (BYOL, Grill et al. 2020, Eq. 2), symmetrised."""

    def __init__(
        self, backbone: str = "resnet18", image_size: int = 16, lr: float = 0.05, target_momentum: float = 0.99
    ) -> None:
        """
        Args:
            backbone: a backbone name of :func:`lightning_ssl.backbones.build_backbone`.
            image_size: input side (16 for the embedded digits).
            lr: SGD learning rate (our choice for a few hundred steps; BYOL uses LARS).
            target_momentum: EMA momentum of the target encoder (BYOL: 0.996 over long runs).
        """
        super().__init__()
        if not 0 < lr < 10 or not 0 <= target_momentum < 1:
            raise ValueError(
                f"need 0 < lr < 10 and 0 <= target_momentum < 1, got lr={lr}, target_momentum={target_momentum}"
            )
        self.save_hyperparameters()
        self.backbone, dim = build_backbone(backbone, image_size, 3)
        self.projector = mlp([dim, 512, 128])
        self.predictor = mlp([128, 512, 128])
        self.target = copy.deepcopy(nn.ModuleList([self.backbone, self.projector])).requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).flatten(1)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        (v1, v2, *_), _, _ = batch  # the labels are never read
        loss = self._regress(v1, v2) + self._regress(v2, v1)
        self.log("train/loss", loss)
        return loss

    def _regress(self, online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = F.normalize(self.predictor(self.projector(self(online))), dim=1)
        with torch.no_grad():
            z = F.normalize(self.target[1](self.target[0](target).flatten(1)), dim=1)
        return 2 - 2 * (p * z).sum(1).mean()

    def on_train_batch_end(self, outputs: object, batch: tuple, batch_idx: int) -> None:
        m = self.hparams.target_momentum
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        with torch.no_grad():
            for t, o in zip(self.target.parameters(), online):
                t.mul_(m).add_(o, alpha=1 - m)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
