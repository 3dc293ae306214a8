"""Per-sample weights of rwSAM's perturbation, looked up by the batch's ``index``."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_ssl.eval.features import extract_features
from lightning_ssl.optim.sam import SAMConfig
from lightning_ssl.weights.kde import density_weights, label_exp_weights, log_kde_density

log = logging.getLogger(__name__)


class SampleWeighter:
    """Holds the weight of every pre-training example (``index`` -> weight).

    ``kde``: refreshed at the start of every ``refresh_every``-th epoch (not epoch 0, whose
    features are random) from a clean pass over the pre-training set
    (``datamodule.pretrain_eval_dataloader()``), features gathered across ranks so every rank holds
    the same weights; uniform until the first refresh. ``label_exp``: ``label_base ** target``.
    """

    def __init__(self, config: SAMConfig) -> None:
        self.config = config
        self.weights: Tensor | None = None
        self.refreshed_at: int = -1

    def maybe_refresh(self, module: pl.LightningModule, trainer: pl.Trainer) -> None:
        cfg = self.config
        epoch = trainer.current_epoch
        if cfg.weights != "kde" or epoch == 0 or epoch % cfg.refresh_every or epoch == self.refreshed_at:
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "pretrain_eval_dataloader"):
            raise ValueError("sam.weights='kde' needs a datamodule with pretrain_eval_dataloader()")
        feats, _, index = extract_features(module, dm.pretrain_eval_dataloader())
        logd = log_kde_density(feats, cfg.kde_bandwidth)
        weights = torch.ones(int(index.max()) + 1, device=feats.device)
        weights[index] = density_weights(logd, cfg.kde_alpha)
        self.weights = weights
        self.refreshed_at = epoch
        log.info(
            "rwSAM KDE weights refreshed at epoch %d: min %.3f max %.3f",
            epoch,
            float(weights.min()),
            float(weights.max()),
        )

    def __call__(self, target: Tensor, index: Tensor) -> Tensor | None:
        cfg = self.config
        if cfg.weights == "label_exp":
            return label_exp_weights(target, cfg.label_base)
        if cfg.weights == "kde" and self.weights is not None:
            return self.weights.to(index.device)[index]
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"weights": None if self.weights is None else self.weights.cpu(), "refreshed_at": self.refreshed_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = state.get("weights")
        self.refreshed_at = int(state.get("refreshed_at", -1))
