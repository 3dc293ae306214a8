"""SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from lightning_ssl.heads import mlp
from lightning_ssl.losses import negative_cosine
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.declared_views import Views
from lightning_ssl.methods.method_card import MethodCard


class SimSiam(SSLMethod):
    """Siamese network with a predictor and a stop-gradient; no negatives, no momentum encoder.

    The loss is the symmetrised negative cosine ``1/2 D(p1, sg(z2)) + 1/2 D(p2, sg(z1))`` (Eq. 2),
    returned per view (``2 x B``: row ``v`` is the term whose prediction comes from view ``v``), so
    that view weights (UOTA) and sample weights (rwSAM, whose CIFAR base this is) apply per term.
    """

    card = MethodCard(
        name="SimSiam",
        paper="Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021",
        defaults_from="App. D (CIFAR) and rwSAM's CIFAR code (docs/methods.md §9.5): projector d-2048-2048 "
        "(last BN without affine), predictor 2048-512-2048",
        notes="Paper CIFAR optimisation: SGD lr 0.03 x batch/256, wd 5e-4, momentum 0.9, cosine, "
        "no warm-up, 800 epochs (rwSAM: lr 0.06, batch 512); pass them as --model.lr/weight_decay/"
        "warmup_epochs 0.",
    )

    def __init__(
        self,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 2048,
        pred_hidden_dim: int = 512,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            proj_hidden_dim: projector hidden width (2048, §3 "Projection MLP").
            proj_output_dim: projector and predictor output width (2048). The projector has three
                layers on ImageNet (§3) and two on CIFAR (App. D; rwSAM's code, which this
                follows); it ends in a BN without affine.
            pred_hidden_dim: predictor bottleneck width (512, §3 "Prediction MLP": the paper
                finds the bottleneck makes training more robust).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        for name, value in (
            ("proj_hidden_dim", proj_hidden_dim),
            ("proj_output_dim", proj_output_dim),
            ("pred_hidden_dim", pred_hidden_dim),
        ):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        self.projector = mlp([self.feature_dim, proj_hidden_dim, proj_output_dim], last_bn=True, last_bn_affine=False)
        self.predictor = mlp([proj_output_dim, pred_hidden_dim, proj_output_dim])

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """Two large crops (Chen & He 2021 §3)."""
        return Views(num_large_views=2)

    def compute_losses(self, batch: Batch) -> LossOutput:
        views = batch[0]
        v1, v2 = views[0], views[1]
        feats = self(torch.cat([v1, v2]))
        z = self.projector(feats)
        p = self.predictor(z)
        z1, z2 = z.chunk(2)
        p1, p2 = p.chunk(2)
        losses = torch.stack([negative_cosine(p1, z2), negative_cosine(p2, z1)])
        embeddings = F.normalize(torch.stack([z1, z2]).detach(), dim=-1)
        return LossOutput(losses, feats[: v1.shape[0]].detach(), embeddings=embeddings)
