"""SwAV (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin; NeurIPS 2020), with multi-crop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.heads import mlp
from lightning_ssl.losses import sinkhorn_knopp, swav_loss
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.declared_views import Views, init_option
from lightning_ssl.methods.method_card import MethodCard


class SwAV(SSLMethod):
    """Swapped prediction of Sinkhorn codes over learnable prototypes.

    Every crop (large and small) predicts the codes of the large crops; codes are computed by
    Sinkhorn-Knopp over the global batch (plus an optional queue of past embeddings). The loss is
    returned per view (``V x B``) together with the normalised projector outputs (``V x B x D``),
    so that UOTA can weight each crop (Wang et al. 2021, Eq. M.12).

    Views of the batch: the first ``num_large_views`` are the large crops and the next
    ``num_small_views`` the small ones; the method declares both (:meth:`views_needed`) and the
    datamodule follows, so multi-crop is ``--model.num_small_views 6``.
    """

    card = MethodCard(
        name="SwAV",
        paper="Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments, NeurIPS 2020",
        defaults_from="§4 / App. A and the official code: projector 2048-128, 3000 prototypes, "
        "T=0.1, eps=0.05, 3 Sinkhorn iterations, prototypes frozen for 313 iterations, "
        "queue from epoch 15 for small batches",
        notes="Paper optimisation: LARS, lr 0.6 x batch/256 (4.8 at 4096) cosine to 0.0006, wd 1e-6; "
        "multi-crop 2x224 + 6x96 (--model.num_small_views 6).",
    )

    def __init__(
        self,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_steps: int = 313,
        num_large_views: int = 2,
        num_small_views: int = 0,
        queue_length: int = 0,
        queue_start_epoch: int = 15,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            proj_hidden_dim: projector hidden width (official code: 2048).
            proj_output_dim: embedding width (128, App. A).
            num_prototypes: K (3000 on ImageNet, App. A; the paper reports little sensitivity
                to K as long as there are enough prototypes).
            temperature: of the softmax over prototype scores (0.1, Eq. 2 / App. A).
            sinkhorn_epsilon: entropy regularisation of the codes (0.05, Eq. 3 / App. A).
            sinkhorn_iterations: Sinkhorn-Knopp rounds (3, §3.1).
            freeze_prototypes_steps: the prototypes get no update for this many optimiser steps
                (313 = the first epoch at batch 4096, App. A; helps convergence).
            num_large_views: large crops at the front of the batch; their codes are the targets
                (SwAV uses the two 224 crops, §3.2).
            num_small_views: small crops after them (multi-crop, §3.2: 6 of 96 px for 224 px
                images; their side is the datamodule's ``small_size``).
            queue_length: past embeddings *per process* added to the Sinkhorn batch (0 = no
                queue). The official ``--queue_length`` (3840 for total batch 256, App. A) is
                global and divided by the number of GPUs; pass that quotient. Use it when the
                global batch is smaller than the number of prototypes.
            queue_start_epoch: the queue starts filling at this (0-based) epoch and is used once
                full (official code: 15).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        if temperature <= 0 or sinkhorn_epsilon <= 0:
            raise ValueError(f"temperature={temperature} and sinkhorn_epsilon={sinkhorn_epsilon} must be > 0")
        if sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations={sinkhorn_iterations} must be >= 1")
        if num_large_views < 1 or num_small_views < 0 or num_large_views + num_small_views < 2:
            raise ValueError(
                f"num_large_views={num_large_views}, num_small_views={num_small_views}: SwAV needs at "
                "least 1 large crop and 2 crops in all; pass e.g. --model.num_large_views 2"
            )
        if num_prototypes < 1 or queue_length < 0 or freeze_prototypes_steps < 0 or queue_start_epoch < 0:
            raise ValueError(
                f"need num_prototypes >= 1, queue_length >= 0, freeze_prototypes_steps >= 0 and "
                f"queue_start_epoch >= 0; got {num_prototypes}, {queue_length}, "
                f"{freeze_prototypes_steps}, {queue_start_epoch}"
            )
        self.projector = mlp([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.prototypes = nn.Linear(proj_output_dim, num_prototypes, bias=False)
        self.register_buffer("queue", torch.zeros(num_large_views, queue_length, proj_output_dim))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self._pending: Tensor | None = None

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """``num_large_views`` large crops, then ``num_small_views`` small ones (Caron et al. 2020 §3.2)."""
        return Views(
            num_large_views=int(init_option(cls, options, "num_large_views")),
            num_small_views=int(init_option(cls, options, "num_small_views")),
        )

    # -- views, codes, loss ---------------------------------------------------------------------
    def split_views(self, views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The large crops and the small crops of a batch's views (the base has checked that the
        batch holds them: :meth:`SSLMethod.check_views`)."""
        n_large, n_small = self.hparams.num_large_views, self.hparams.num_small_views
        return list(views[:n_large]), list(views[n_large : n_large + n_small])

    def queue_in_use(self) -> bool:
        """The queue joins the Sinkhorn batch from ``queue_start_epoch`` on, once it is full."""
        hp = self.hparams
        started = hp.queue_length > 0 and self.current_epoch >= hp.queue_start_epoch
        return started and self._queue_fill() >= hp.queue_length

    def _queue_fill(self) -> int:
        """How many queue slots are filled: a host-side mirror of the ``queue_count`` buffer, so the
        step never waits on the device (read from the buffer once, after a checkpoint load)."""
        if getattr(self, "_fill", None) is None:
            self._fill = int(self.queue_count)
        return self._fill

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._fill = None  # re-read from the restored buffer

    @torch.no_grad()
    def codes(self, scores: Tensor, assign_index: int) -> Tensor:
        """Sinkhorn codes of one large crop's scores, over the global batch and, when the queue is
        in use, the queued embeddings of that crop scored by the current prototypes."""
        hp = self.hparams
        batch = scores.shape[0]
        if self.queue_in_use():
            scores = torch.cat([self.prototypes(self.queue[assign_index]).to(scores.dtype), scores])
        return sinkhorn_knopp(scores, hp.sinkhorn_epsilon, hp.sinkhorn_iterations)[-batch:]

    def compute_losses(self, batch: Batch) -> LossOutput:
        large, small = self.split_views(batch[0])
        feats = [self(torch.cat(large))] + ([self(torch.cat(small))] if small else [])
        # one projector pass over all crops, as the official code (BN statistics over all crops)
        z = F.normalize(self.projector(torch.cat(feats)), dim=1)
        scores = self.prototypes(z)
        n_views = len(large) + len(small)
        z_v, s_v = z.chunk(n_views), scores.chunk(n_views)
        assign = tuple(range(len(large)))
        codes = [self.codes(s_v[c].detach(), c) for c in assign]
        losses = swav_loss(s_v, codes, self.hparams.temperature, assign)
        self._pending = torch.stack([z_v[c] for c in assign]).detach()
        batch_size = large[0].shape[0]
        return LossOutput(losses, feats[0][:batch_size].detach(), embeddings=torch.stack(z_v).detach())

    # -- once per optimiser step ------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Project the prototypes back on the unit sphere (official code, every iteration)."""
        with torch.no_grad():
            w = self.prototypes.weight
            w.copy_(F.normalize(w, dim=1))

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """No prototype update during the first ``freeze_prototypes_steps`` steps (App. A)."""
        if self.trainer.global_step < self.hparams.freeze_prototypes_steps:
            for p in self.prototypes.parameters():
                p.grad = None

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Push this step's large-crop embeddings at the front of the queue (newest first)."""
        hp, pending, self._pending = self.hparams, self._pending, None
        if pending is None or hp.queue_length == 0 or self.current_epoch < hp.queue_start_epoch:
            return
        self.queue.copy_(torch.cat([pending.to(self.queue.dtype), self.queue], dim=1)[:, : hp.queue_length])
        self._fill = min(hp.queue_length, self._queue_fill() + pending.shape[1])
        self.queue_count.fill_(self._fill)
