"""SDCLR (Jiang, Chen, Mortazavi, Wang; "Self-Damaging Contrastive Learning", ICML 2021;
docs/methods.md §12): SimCLR whose second view goes through a pruned copy of the same network."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from lightning_ssl.losses import nt_xent
from lightning_ssl.methods.base import Batch, LossOutput
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.pruning import PrunedBranch


class SDCLR(SimCLR):
    """The dense network sees view 1, its pruned self-competitor view 2; NT-Xent between them.

    The self-competitor shares every weight; at the start of every epoch its masks are recomputed
    from the current weights by global magnitude pruning (one threshold over every convolution of
    the backbone, official ``prune/mask.py``); it has its own BatchNorms in backbone and projector
    (official ``batch_norm_multiple``). The loss ``NT-Xent(z_dense(v1), z_pruned(v2))`` has
    negatives from both branches, and its one backward pass gives the official two-backward
    gradient (docs/methods.md §12.2). Probes evaluate the dense network.

    The projector is SimCLR's (the suite's SDCLR and SimCLR differ only in the pruned branch; the
    original SDCLR used a deeper head for SDCLR than for SimCLR, docs/methods.md §12.5).
    """

    card = MethodCard(
        name="SDCLR",
        paper="Jiang et al., Self-Damaging Contrastive Learning, ICML 2021",
        defaults_from="official commands (cmds/, README): prune ratio 0.9 on CIFAR (0.3 on ImageNet-100), "
        "re-pruned every epoch, T=0.2, SGD lr 0.5, wd 1e-4, batch 512, 2000 epochs",
    )

    def __init__(self, prune_ratio: float = 0.9, temperature: float = 0.2, **kwargs: Any) -> None:
        """
        Args:
            prune_ratio: fraction of the backbone's convolution weights the self-competitor drops,
                by global magnitude (official commands: 0.9 on CIFAR-10/100-LT, 0.3 on
                ImageNet-100-LT; the argparse default 0.3 is not what the paper ran).
            temperature: NT-Xent temperature (official CIFAR commands: 0.2; 0.3 on ImageNet-100-LT).
            **kwargs: SimCLR's options (projector, ``temperature_schedule``, ``gh``) and
                :class:`SSLMethod`'s; ``num_large_views`` must stay 2.
        """
        if not 0.0 <= prune_ratio < 1.0:
            raise ValueError(f"prune_ratio={prune_ratio} must be in [0, 1) (SDCLR: 0.9 on CIFAR, 0.3 on ImageNet-100)")
        if kwargs.get("num_large_views", 2) != 2:
            raise ValueError(
                f"SDCLR has one dense and one pruned view: num_large_views={kwargs['num_large_views']} must be 2"
            )
        super().__init__(temperature=temperature, **kwargs)
        self.pruned = PrunedBranch({"backbone": self.backbone, "projector": self.projector}, prune=("backbone",))

    # -- the self-competitor -----------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """Re-prune from the current weights at the start of every epoch (official ``prune_simCLR.py``).
        A run resumed in the middle of an epoch keeps the masks of that epoch (``mask_epoch``)."""
        super().on_train_epoch_start()
        if int(self.pruned.mask_epoch) != self.current_epoch:
            self.pruned.reprune({"backbone": self.backbone}, self.hparams.prune_ratio, self.current_epoch)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.get("compile") and "_compiled_pruned" not in self.__dict__:
            backbone = self.backbone

            def pruned_call(tensors: dict[str, Tensor], x: Tensor) -> Tensor:
                return functional_call(backbone, tensors, (x,))

            self.__dict__["_compiled_pruned"] = torch.compile(pruned_call)

    def pruned_forward(self, x: Tensor) -> Tensor:
        """Backbone features of the pruned branch (``B x D``)."""
        if self.hparams.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.pruned.forward_with("backbone", self.backbone, x, self.__dict__.get("_compiled_pruned")).flatten(1)

    def pruned_project(self, feats: Tensor) -> Tensor:
        return self.pruned.forward_with("projector", self.projector, feats)

    # -- the loss ----------------------------------------------------------------------------------
    def contrastive_losses(self, batch: Batch) -> LossOutput:
        views = batch[0]
        feats = self(views[0])
        z_dense = self.projector(feats)
        z_pruned = self.pruned_project(self.pruned_forward(views[1]))
        T = self.current_temperature()
        losses = nt_xent(z_dense, z_pruned, T, per_view=True)  # row 0: dense anchors, row 1: pruned anchors
        logs = {**self.temperature_logs(T), "sparsity": self.pruned.sparsity.clone()}
        return LossOutput(losses, feats.detach(), embeddings=torch.stack([z_dense, z_pruned]), logs=logs)
