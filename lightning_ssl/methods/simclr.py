"""SimCLR (Chen, Kornblith, Norouzi, Hinton; ICML 2020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lightning_ssl.heads import mlp
from lightning_ssl.losses import nt_xent, nt_xent_multi
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.card import MethodCard
from lightning_ssl.methods.views import Views, init_option


class SimCLR(SSLMethod):
    """NT-Xent over the global batch: negatives are gathered from every rank, with gradients."""

    card = MethodCard(
        name="SimCLR",
        paper="Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020",
        defaults_from="App. B.9 (CIFAR-10): projector 2048->128, T=0.5, LARS, 10-epoch warm-up",
    )

    def __init__(
        self,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 128,
        temperature: float = 0.5,
        num_views: int = 2,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            proj_hidden_dim: projector hidden width (App. B.9: 2048).
            proj_output_dim: projector output width (§5.3, Fig. 8: 128; insensitive).
            temperature: NT-Xent temperature. 0.5 is the CIFAR-10 optimum of App. B.9 (Table B.9
                uses batch 512-1024); ImageNet uses 0.1 at batch 4096 (§5.1, Table 5). Lower T
                sharpens the weight of hard negatives: lower it with larger batches, and
                long-tailed studies (SDCLR, BCL) use 0.2.
            num_views: large views per image used by the loss; > 2 gives every other view of the
                same image as a positive (the "more than two views" option).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if num_views < 2:
            raise ValueError(f"num_views={num_views}: contrastive learning needs at least 2 views")
        self.projector = mlp([self.feature_dim, proj_hidden_dim, proj_output_dim])

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """The first ``num_views`` large crops (two in SimCLR, Chen et al. 2020 §2.1)."""
        return Views(num_large=int(init_option(cls, options, "num_views")))

    def compute_losses(self, batch: Batch) -> LossOutput:
        views = batch[0][: self.hparams.num_views]
        if len(views) < self.hparams.num_views:
            raise ValueError(
                f"SimCLR(num_views={self.hparams.num_views}) got {len(views)} views: set the "
                f"datamodule's num_large_views to at least {self.hparams.num_views}"
            )
        feats = self(torch.cat(views))
        z = self.projector(feats).chunk(len(views))
        T = self.hparams.temperature
        # per-view (V×B) losses, so that view weights (UOTA) apply without this method knowing
        losses = nt_xent(z[0], z[1], T, per_view=True) if len(z) == 2 else nt_xent_multi(z, T, per_view=True)
        return LossOutput(losses, feats.chunk(len(views))[0].detach(), embeddings=torch.stack(z))
