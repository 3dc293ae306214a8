"""SimCLR (Chen, Kornblith, Norouzi, Hinton; ICML 2020)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch

from lightning_ssl.heads import mlp
from lightning_ssl.losses import nt_xent, nt_xent_multi
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.declared_views import Views, init_option
from lightning_ssl.methods.gh import GeometricHarmonization, GHConfig
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.temperature import ScheduledTemperature, record_hparam
from lightning_ssl.weights.memory import pretrain_size


class SimCLR(ScheduledTemperature, SSLMethod):
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
        num_large_views: int = 2,
        gh: GHConfig | None = None,
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
            num_large_views: large views per image used by the loss; > 2 gives every other view of
                the same image as a positive (the "more than two views" option).
            gh: Geometric Harmonization added to the loss (Zhou et al. NeurIPS 2023, docs/methods.md
                §15): official CIFAR settings K=100 anchors, Sinkhorn eps 0.05 x 300 with the running
                class prior, gamma 0.1, off for 500 of 1000 epochs then ramped over 10
                (``--model.gh.warmup_epochs 0.5`` for half of any run). Two views only.
            **kwargs: backbone and optimisation options of :class:`SSLMethod`.
        """
        if isinstance(gh, dict):  # from a checkpoint's saved hyper-parameters
            gh = GHConfig(**gh)
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if num_large_views < 2:
            raise ValueError(f"num_large_views={num_large_views}: contrastive learning needs at least 2 views")
        if gh is not None and num_large_views != 2:
            raise ValueError(
                f"gh needs num_large_views=2 (a swapped prediction between two views), got "
                f"num_large_views={num_large_views}"
            )
        self.projector = mlp([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.gh = GeometricHarmonization(gh, proj_output_dim) if gh is not None else None
        if gh is not None:  # a plain dict: checkpoints load with weights_only=True
            record_hparam(self, "gh", asdict(gh))

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """The first ``num_large_views`` large crops (two in SimCLR, Chen et al. 2020 §2.1)."""
        return Views(num_large_views=int(init_option(cls, options, "num_large_views")))

    def compute_losses(self, batch: Batch) -> LossOutput:
        return self.add_gh(self.contrastive_losses(batch), batch)

    def contrastive_losses(self, batch: Batch) -> LossOutput:
        """The NT-Xent part: ``V x B`` per-view losses and the raw projections as ``embeddings``."""
        views = batch[0][: self.hparams.num_large_views]
        feats = self(torch.cat(views))
        z = self.projector(feats).chunk(len(views))
        T = self.current_temperature()
        # per-view (V×B) losses, so that view weights (UOTA) apply without this method knowing
        losses = nt_xent(z[0], z[1], T, per_view=True) if len(z) == 2 else nt_xent_multi(z, T, per_view=True)
        return LossOutput(
            losses, feats.chunk(len(views))[0].detach(), embeddings=torch.stack(z), logs=self.temperature_logs(T)
        )

    # -- Geometric Harmonization (docs/methods.md §15) -------------------------------------------------
    def add_gh(self, out: LossOutput, batch: Batch) -> LossOutput:
        """``out`` with GH's weighted ``2 x B`` term added to its losses (after the warm-up), and the
        first view's GH logits kept for the memory update after the step."""
        if self.gh is None:
            return out
        assert out.embeddings is not None
        epoch = self.current_epoch if self._trainer is not None else 0
        t1, t2 = self.gh.logits(out.embeddings[0]), self.gh.logits(out.embeddings[1])
        self.gh.remember(t1, batch[2])
        term = self.gh.loss(t1, t2, epoch)
        if term is None:
            return out
        gh, weight = term
        logs = {**out.logs, "gh_loss": (gh.detach() / weight).mean(), "gh_weight": torch.tensor(weight)}
        return LossOutput(out.losses + gh, out.features, out.embeddings, logs)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.gh is not None and stage == "fit" and len(self.gh.memory) == 0:
            self.gh.memory.resize(pretrain_size(self.trainer))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.gh is not None:
            self.gh.resolve_warmup(self.trainer.max_epochs)

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        if self.gh is not None:
            self.gh.after_step(self.current_epoch)
