"""MTTV, "Maximally Useful and Minimally Redundant: The Key to SSL for Imbalanced Data" (Sharma &
Padmanabhan, arXiv 2509.08469), as released in its official code (docs/methods.md §8)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.ema import ema_update, frozen_copy
from lightning_ssl.heads import mlp
from lightning_ssl.losses import masked_nt_xent
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.declared_views import Views
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.temperature import ScheduledTemperature


class MTTV(ScheduledTemperature, SSLMethod):
    """Two images and two kinds of view fused into one positive pair, against an EMA key encoder.

    For image ``I`` with partner ``P``, ``n(.)`` the un-augmented normalised view and ``a(.)`` an
    augmented view, the pair is

        u = E_q(n(I)) + E_q(a(P))    (query encoder, with gradient)
        v = E_k(a(I)) + E_k(n(P))    (EMA key encoder, no gradient)

    and the loss is NT-Xent with extreme similarities masked (:func:`masked_nt_xent`).

    Views of the batch: ``views[0]`` is ``a(I)`` and the last view is ``n(I)`` (the datamodule's
    ``clean_view=True``); when there is a second large view of the same size, the partner's
    augmented view ``a(P)`` is taken from it, so that ``a(P)`` is not the very tensor that the
    partner uses as its own ``a(I)``.

    Documented deviation: the official code draws ``P`` uniformly from the whole pre-training set
    for every item; here ``P`` is another image of the same local batch (a seeded random cyclic
    permutation, so no image is its own partner). Within a batch an anchor's pair then shares an
    image with two of its negatives; with the official sampling this happens for a fraction
    batch/dataset of the items.
    """

    card = MethodCard(
        name="MTTV",
        paper="Sharma & Padmanabhan, Maximally Useful and Minimally Redundant: The Key to "
        "Self-supervised Learning for Imbalanced Data, arXiv 2509.08469",
        defaults_from="official code (models/MTTVModel.py, Loss/loss.py, config/*; docs/methods.md §8): "
        "head d-d-d-d/4, t=0.3, lambda_l=0.1, lambda_h=0.9, key momentum 0.9",
        notes="Official optimisation: SGD lr 3.0, wd 1e-4, batch 1024, 2000 epochs with 200 warm-up; "
        "views: --data.recipe mttv --data.clean_view true.",
    )

    def __init__(
        self,
        temperature: float = 0.3,
        low: float = 0.1,
        high: float = 0.9,
        key_momentum: float = 0.9,
        mask_positive: bool = False,
        log_of_mean: bool = False,
        partner_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            temperature: NT-Xent temperature t (official ``training.temperature``: 0.3).
            low: lambda_l: negatives with ``|cos| < low`` are dropped (official CIFAR: 0.1).
            high: lambda_h: negatives with ``|cos| > high`` are dropped (official CIFAR: 0.9;
                the code's comment says to keep only the low mask on ImageNet: pass 1.0).
            key_momentum: EMA momentum of the key encoder, updated at the start of every step
                before the keys are computed (official: 0.9, much lower than MoCo's 0.999).
            mask_positive: also mask an extreme positive, as the official code (off: the clean
                re-implementation recommended in docs/methods.md §8.3 never masks the positive).
            log_of_mean: the official ``-log(mean ratio)`` instead of the mean of ``-log ratio``
                (off by default: mean-of-logs is the standard InfoNCE, docs/methods.md §8.3).
            partner_seed: seed of the partner permutation (each step and rank derive their own).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
        if not 0.0 <= key_momentum <= 1.0:
            raise ValueError(f"key_momentum={key_momentum} must be in [0, 1]")
        d = self.feature_dim
        if d < 4:
            raise ValueError(f"MTTV's head outputs feature_dim // 4; feature_dim={d} is too small")
        self.head = mlp([d, d, d, d // 4], last_bn=True)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_head = frozen_copy(self.head)

    # -- the pieces ---------------------------------------------------------------------------
    def partners(self, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
        """``partner[i]``: the batch position of image i's partner. A random cyclic permutation
        (no fixed point; each partner uniform over the other images), seeded by
        ``(partner_seed, global_step, rank)`` so that a step and its SAM second pass agree."""
        if batch_size < 2:
            raise ValueError(f"MTTV needs at least 2 images per batch to pair them, got {batch_size}")
        seed = zlib.crc32(f"{self.hparams.partner_seed}:{self.global_step}:{distributed.rank()}".encode())
        order = torch.randperm(batch_size, generator=torch.Generator().manual_seed(seed))
        partner = torch.empty_like(order)
        partner[order] = order.roll(-1)
        return partner.to(device)

    def query(self, x: Tensor) -> Tensor:
        return self.head(self(x))

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        return self.key_head(self.key_backbone(x).flatten(1))

    def fuse(
        self, a_anchor: Tensor, n_anchor: Tensor, a_partner: Tensor, n_partner: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``u = E_q(n(I)) + E_q(a(P))``, ``v = E_k(a(I)) + E_k(n(P))`` (sum fusion, official code),
        and the detached backbone features of ``n(I)`` (for the online probe: the clean view of
        the anchor, whose label is the batch's target). Each side is one encoder pass over the
        concatenation of its two views (BN statistics over both; our choice)."""
        batch = n_anchor.shape[0]
        feats = self(torch.cat([n_anchor, a_partner]))
        q = self.head(feats)
        u = q[:batch] + q[batch:]
        k = self.key(torch.cat([a_anchor, n_partner]))
        v = k[:batch] + k[batch:]
        return u, v, feats[:batch].detach()

    # -- the method ---------------------------------------------------------------------------
    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """An augmented view first and the clean view n(.) last (class docstring;
        docs/methods.md §3.2); a second large view, when present, is the partner's."""
        return Views(clean_view=True)

    def compute_losses(self, batch: Batch) -> LossOutput:
        views = batch[0]
        a_anchor, n_anchor = views[0], views[-1]
        second = views[1] if len(views) > 2 and views[1].shape == a_anchor.shape else a_anchor
        partner = self.partners(a_anchor.shape[0], a_anchor.device)
        u, v, feats = self.fuse(a_anchor, n_anchor, second[partner], n_anchor[partner])
        hp = self.hparams
        T = self.current_temperature()
        losses = masked_nt_xent(u, v, T, hp.low, hp.high, hp.mask_positive, hp.log_of_mean)
        return LossOutput(losses, feats, logs=self.temperature_logs(T))

    # -- hooks ---------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """EMA-update the key encoder before this step's keys (official code, m = 0.9)."""
        m = self.hparams.key_momentum
        ema_update(self.key_backbone, self.backbone, m)
        ema_update(self.key_head, self.head, m)
