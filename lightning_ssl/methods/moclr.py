"""MoCLR: SimCLR with a momentum encoder and no predictor (Tian, Hénaff, van den Oord, "Divide
and Contrast", ICCV 2021; docs/methods.md §5). The base model and the experts of DnC."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.ema import ema_update, frozen_copy
from lightning_ssl.heads import mlp
from lightning_ssl.losses import info_nce_in_batch
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.declared_views import Views
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.temperature import ScheduledTemperature
from lightning_ssl.schedules import momentum_schedule


def moclr_projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """MoCLR's projector ``in -> hidden (BN, ReLU) -> out (BN)`` (DnC; docs/methods.md §5: 2048-4096-256).

    DnC's distillation student builds the same projector with this function, so that a MoCLR
    checkpoint's ``backbone.*`` and ``projector.*`` weights load into it unchanged.
    """
    return mlp([in_dim, hidden_dim, out_dim], last_bn=True)


class MoCLR(ScheduledTemperature, SSLMethod):
    """Online encoder (backbone + projector) against an EMA copy; symmetric in-batch InfoNCE.

    For each view the online projection is the query and the momentum projection of the *other*
    view is its key; the negatives are the other keys of the global batch. The two directions are
    returned as a ``2 x B`` matrix (row ``v``: view ``v`` is the query), so ``.mean()`` is
    ``(L_NCE + L~_NCE) / 2``, half the paper's sum (a constant factor, as SimCLR's
    ``1/(2N)`` averaging; it matters only through the learning rate under SGD).
    """

    card = MethodCard(
        name="MoCLR",
        paper="Tian, Henaff, van den Oord, Divide and Contrast: Self-supervised Learning from "
        "Uncurated Data, ICCV 2021",
        defaults_from="docs/methods.md §5: projector 2048-4096-256 (BN), EMA momentum 0.996 -> 1 "
        "(BYOL cosine), in-batch InfoNCE; temperature not stated (0.1, our choice)",
        notes="Paper optimisation (BYOL's): LARS, base lr 0.3 x batch/256, wd 1.5e-6, 10-epoch "
        "warm-up, cosine; BYOL augmentation pair (--data.recipe byol).",
    )

    def __init__(
        self,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        temperature: float = 0.1,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            proj_hidden_dim: projector hidden width (4096, docs/methods.md §5); its output is the layer DnC
                clusters (:meth:`projector_hidden`).
            proj_output_dim: embedding width z (256, docs/methods.md §5).
            temperature: InfoNCE temperature tau_c. The paper does not state it (docs/methods.md §5.2);
                0.1 is our choice (SimCLR's ImageNet value at large batch). With small batches
                or few classes 0.2 is a common alternative.
            base_momentum: EMA momentum at step 0 (tau_base = 0.996, BYOL's "implementation
                details", Grill et al. 2020, which DnC follows).
            final_momentum: momentum at the last step (1.0: BYOL's cosine ramp
                tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(f"need 0 <= base_momentum <= final_momentum <= 1, got {base_momentum}, {final_momentum}")
        if proj_hidden_dim < 1 or proj_output_dim < 1:
            raise ValueError(f"projector widths must be >= 1, got {proj_hidden_dim}, {proj_output_dim}")
        self.projector = moclr_projector(self.feature_dim, proj_hidden_dim, proj_output_dim)
        self.momentum_backbone = frozen_copy(self.backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.momentum_values = None

    def project(self, x: Tensor) -> Tensor:
        """Online projection z (un-normalised) of images ``x``: what DnC's teachers output."""
        return self.projector(self(x))

    def projector_hidden(self, x: Tensor) -> Tensor:
        """The projector's hidden layer (after BN and ReLU) for images ``x``: ``B x proj_hidden_dim``.

        DnC clusters this layer (docs/methods.md §6.2: 51.6% vs 40.1% cluster-majority accuracy for the
        pooled features). Whether the paper takes it before or after the ReLU is not stated; after
        is our choice.
        """
        return self.projector[:-2](self(x))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        hp = self.hparams
        self.momentum_values = momentum_schedule(hp.base_momentum, hp.final_momentum, self.total_steps())

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """Two large crops (one per encoder, Tian et al. 2021 §3.1)."""
        return Views(num_large_views=2)

    def compute_losses(self, batch: Batch) -> LossOutput:
        views = batch[0]
        v1, v2 = views[0], views[1]
        feats = self(torch.cat([v1, v2]))
        q1, q2 = self.projector(feats).chunk(2)
        with torch.no_grad():
            k1, k2 = self.momentum_projector(self.momentum_backbone(torch.cat([v1, v2])).flatten(1)).chunk(2)
        T = self.current_temperature()
        losses = torch.stack([info_nce_in_batch(q1, k2, T), info_nce_in_batch(q2, k1, T)])
        embeddings = F.normalize(torch.stack([q1, q2]).detach(), dim=-1)
        return LossOutput(losses, feats[: v1.shape[0]].detach(), embeddings=embeddings, logs=self.temperature_logs(T))

    def after_optimizer_step(self) -> None:
        """After the optimiser step: EMA-update the momentum encoder (BYOL's schedule)."""
        values = self.momentum_values
        m = self.schedule_value(values) if values is not None else self.hparams.base_momentum
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)
