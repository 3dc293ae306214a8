"""MoCo v2 (Chen, Fan, Girshick, He; arXiv 2003.04297, 2020), on MoCo (He et al., CVPR 2020).

Batch normalisation (docs/methods.md §2 v2): MoCo shuffles the key batch across GPUs before the
key encoder ("shuffling BN", He et al. §3.3) so that a query and its positive key are not
normalised with statistics of the same few samples, which lets the model lower the loss through
BN statistics instead of features. The suite does not shuffle. Under DDP ``sync_bn=True``
normalises both encoders with statistics of the whole global batch (SyncBatchNorm, CUDA only), the
fix SimCLR and MoCo v3 use for the same leak, which makes any one sample's share of the statistics
1 / global batch. A single-device run (and DDP without ``sync_bn``) normalises the query batch
and the key batch each with its own batch statistics, as MoCo without shuffling; with the suite's
batches of 256-512 a sample's share is 1/256-1/512, the order of MoCo's per-GPU batch of 32
after shuffling, but the query and key batches still hold the same images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed
from lightning_ssl.ema import ema_update, frozen_copy
from lightning_ssl.heads import mlp
from lightning_ssl.losses import info_nce_with_queue
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.declared_views import Views, init_option
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.temperature import ScheduledTemperature
from lightning_ssl.schedules import momentum_schedule


class MoCoV2(ScheduledTemperature, SSLMethod):
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
        num_large_views: int = 2,
        sync_bn: bool = False,
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
            num_large_views: large views per image; > 2 makes every view a query whose positives are
                the keys of all the other views (the "more than two views" option; our
                generalisation, implies ``symmetric``); all keys are enqueued.
            sync_bn: under DDP, convert the BatchNorm layers of the query and key encoders to
                SyncBatchNorm (statistics over the global batch; our replacement for shuffle-BN,
                module docstring). Needs CUDA devices; ignored on a single device. The
                method-level form of ``Trainer(sync_batchnorm=True)``, settable per method in a
                sweep; checkpoints keep the same keys.
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        super().__init__(**kwargs)
        if num_large_views < 2:
            raise ValueError(f"num_large_views={num_large_views}: MoCo needs at least 2 views")
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

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """The first ``num_large_views`` large crops (a query and a key view, Chen et al. 2020 §3)."""
        return Views(num_large_views=int(init_option(cls, options, "num_large_views")))

    def setup(self, stage: str) -> None:
        """Convert to SyncBatchNorm before the strategy wraps the model (``sync_bn`` under DDP)."""
        super().setup(stage)
        trainer = self._trainer
        if not self.hparams.get("sync_bn") or trainer is None or trainer.world_size <= 1:
            return
        if trainer.strategy.root_device.type != "cuda":
            raise ValueError(
                f"MoCoV2(sync_bn=True) under DDP needs CUDA devices (torch's SyncBatchNorm has no "
                f"{trainer.strategy.root_device.type} implementation): pass --model.sync_bn false"
            )
        for name in ("backbone", "projector", "key_backbone", "key_projector"):
            setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(self, name)))

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
        hp = self.hparams
        n = hp.num_large_views
        views = batch[0][:n]
        T = self.current_temperature()  # TS applies to positives and queue alike (docs/methods.md §14)
        queue = self.queue.clone().detach() if self.queue.shape[0] else None
        if n == 2 and not hp.symmetric:
            feats = self(views[0])
            q = F.normalize(self.projector(feats), dim=1)
            k = self._keys(views[1])
            self._pending_keys = k
            return LossOutput(
                info_nce_with_queue(q, k, queue, T),
                feats.detach(),
                embeddings=q.unsqueeze(0),
                logs=self.temperature_logs(T),
            )
        # every view is a query; its positives are the keys of the other views (row v: view v)
        feats = self(torch.cat(views))
        q = F.normalize(self.projector(feats), dim=1).chunk(n)
        k = [self._keys(v) for v in views]
        losses = torch.stack(
            [
                torch.stack([info_nce_with_queue(q[v], k[u], queue, T) for u in range(n) if u != v]).mean(0)
                for v in range(n)
            ]
        )
        self._pending_keys = torch.cat(k[::-1] if n == 2 else k)
        return LossOutput(
            losses, feats[: views[0].shape[0]].detach(), embeddings=torch.stack(q), logs=self.temperature_logs(T)
        )

    def after_optimizer_step(self) -> None:
        """After the optimiser step: EMA-update the key encoder, then enqueue this step's keys."""
        m = (
            self.schedule_value(self.momentum_values)
            if self.momentum_values is not None
            else self.hparams.base_momentum
        )
        ema_update(self.key_backbone, self.backbone, m)
        ema_update(self.key_projector, self.projector, m)
        keys = getattr(self, "_pending_keys", None)
        if keys is not None:
            self._enqueue(keys)
            self._pending_keys = None
