"""MoCo v2 (Chen, Fan, Girshick, He; arXiv 2003.04297, 2020), on MoCo (He et al., CVPR 2020)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.ema import ema_update, frozen_copy
from lightning_ssl.heads import mlp
from lightning_ssl.losses import info_nce_with_queue
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.card import MethodCard
from lightning_ssl.schedules import momentum_schedule


class MoCoV2(SSLMethod):
    """Momentum key encoder and a queue of keys gathered from all ranks (identical on every rank)."""

    card = MethodCard(
        name="MoCo v2",
        paper="Chen et al., Improved Baselines with Momentum Contrastive Learning, arXiv 2003.04297",
        defaults_from="§3 / Table 1: MLP head 2048, T=0.2, K=65536, m=0.999, cosine lr",
    )

    def __init__(
        self,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        base_momentum: float = 0.999,
        final_momentum: float = 0.999,
        symmetric: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            proj_hidden_dim: MLP head hidden width (MoCo v2 §3: 2048, no BN).
            proj_output_dim: key/query dimension (128).
            temperature: InfoNCE temperature (MoCo v2 Table 1: 0.2 with the MLP head).
            queue_size: number of negative keys K (65,536 on ImageNet; CIFAR-sized sets use
                4,096, as MTTV's baseline; it must not exceed a few epochs of data).
            base_momentum: key-encoder momentum m (He et al. 2020 §3.2: 0.999).
            final_momentum: momentum at the end (a BYOL-style cosine ramp when > base).
            symmetric: also swap the roles of the two views (a symmetrised loss, He et al.
                2020 §4.1 "symmetric loss"; doubles the compute).
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        if queue_size < 0:
            raise ValueError(f"queue_size={queue_size} must be >= 0")
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(f"need 0 <= base_momentum <= final_momentum <= 1, got {base_momentum}, {final_momentum}")
        self.projector = mlp([self.feature_dim, proj_hidden_dim, proj_output_dim], bn=False)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_output_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.momentum_values = None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        hp = self.hparams
        self.momentum_values = momentum_schedule(hp.base_momentum, hp.final_momentum, self.total_steps())

    def _keys(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return F.normalize(self.key_projector(self.key_backbone(x).flatten(1)), dim=1)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Write the keys of all ranks, in rank order, at the queue pointer (FIFO)."""
        size = self.queue.shape[0]
        if size == 0:
            return
        keys = distributed.all_gather_same_size(keys)[:size]
        # pointer arithmetic on the device: no host synchronisation in the training step
        idx = (torch.arange(keys.shape[0], device=keys.device) + self.queue_ptr) % size
        self.queue[idx] = keys
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def compute_losses(self, batch: Batch) -> LossOutput:
        v1, v2 = batch[0][0], batch[0][1]
        T = self.hparams.temperature
        queue = self.queue.clone().detach() if self.queue.shape[0] else None
        feats = self(v1 if not self.hparams.symmetric else torch.cat([v1, v2]))
        q = F.normalize(self.projector(feats), dim=1)
        if self.hparams.symmetric:
            q1, q2 = q.chunk(2)
            k2, k1 = self._keys(v2), self._keys(v1)
            losses = torch.stack([info_nce_with_queue(q1, k2, queue, T), info_nce_with_queue(q2, k1, queue, T)])
            keys, emb = torch.cat([k2, k1]), torch.stack([q1, q2])
        else:
            k2 = self._keys(v2)
            losses = info_nce_with_queue(q, k2, queue, T)
            keys, emb = k2, q.unsqueeze(0)
        self._pending_keys = keys
        return LossOutput(losses, feats[: v1.shape[0]].detach(), embeddings=emb)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the optimiser step: EMA-update the key encoder, then enqueue this step's keys."""
        m = self.schedule_value(self.momentum_values) if self.momentum_values is not None else self.hparams.base_momentum
        ema_update(self.key_backbone, self.backbone, m)
        ema_update(self.key_projector, self.projector, m)
        keys = getattr(self, "_pending_keys", None)
        if keys is not None:
            self._enqueue(keys)
            self._pending_keys = None
