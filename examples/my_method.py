"""A complete user method in its own file: alignment + uniformity (Wang & Isola, ICML 2020).

Run it with:  lssl fit --model my_method.MyMethod --data DigitsLT --trainer.max_epochs 5
"""

import torch
import torch.nn.functional as F

from lightning_ssl.heads import mlp
from lightning_ssl.methods import LossOutput, SSLMethod


class MyMethod(SSLMethod):
    """Pull the two views together, spread all embeddings over the sphere."""

    def __init__(self, proj_dim: int = 128, t: float = 2.0, **kwargs):
        """
        Args:
            proj_dim: projector output width.
            t: uniformity temperature (Wang & Isola 2020, Eq. 4: t = 2).
        """
        super().__init__(**kwargs)
        self.projector = mlp([self.feature_dim, 512, proj_dim])

    def compute_losses(self, batch):
        views, _, _ = batch  # (views, target, index); an SSL method never reads target
        feats = self(torch.cat(views[:2]))
        z1, z2 = F.normalize(self.projector(feats), dim=1).chunk(2)
        align = (z1 - z2).pow(2).sum(1)  # one loss per sample
        uniform = torch.logsumexp(-self.hparams.t * torch.cdist(z1, z1).pow(2), dim=1)
        return LossOutput(align + uniform, features=feats[: len(z1)].detach())
