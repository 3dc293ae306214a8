"""Full fine-tuning on a probe set: the out-of-domain transfer protocol of rwSAM (Liu et al., ICLR
2022 §3 and its ``ft_moco.py``; docs/protocols.md §7).

Two recipes (:func:`finetune_recipe`):

* ``rwsam`` (the default): SGD with Nesterov momentum 0.9, lr 0.1 for the head and 0.01 for the
  backbone, weight decay 5e-4, batch 48, 20 "epochs" of 2,000 iterations each, lr x0.1 at epochs
  5, 10 and 15 (a quarter, half and three quarters of the run), random-resized crops (torchvision's
  scale 0.08-1, ratio 3/4-4/3) and a horizontal flip (the flip is our assumption: the MoCo
  linear-classification script that ``ft_moco.py`` follows uses it). An "epoch" is a fixed number
  of iterations, not a pass over the data: batches are drawn from reshuffled passes.
* ``simple`` (a plain baseline recipe, for comparison): the same optimiser, batch
  ``min(256, N)``, epochs as passes over the probe set, lr x0.1 at 25/50/75 % of them, flip only.

Tests scale a recipe down through its arguments (``epochs``, ``iterations_per_epoch``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2.functional import resized_crop

from lightning_ssl.eval.features import extract_features

AUGMENTS = ("random_resized_crop", "flip")


@dataclass(frozen=True)
class FinetuneRecipe:
    """One fine-tuning protocol; :func:`finetune_recipe` builds the named ones.

    Attributes:
        name: ``rwsam`` or ``simple``.
        epochs: "epochs" of the run.
        iterations_per_epoch: optimiser steps per epoch; ``None``: one pass over the probe set.
        batch_size: images per step; ``None``: ``min(256, N)``.
        head_lr / backbone_lr: learning rates of the linear head and of the backbone.
        weight_decay / momentum / nesterov: of the SGD optimiser.
        milestones: fractions of the run at which the lr is multiplied by ``gamma``.
        gamma: the lr decay factor.
        augment: ``random_resized_crop`` (with a flip) or ``flip`` (only).
    """

    name: str
    epochs: int
    iterations_per_epoch: int | None
    batch_size: int | None
    head_lr: float = 0.1
    backbone_lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True
    milestones: tuple[float, ...] = (0.25, 0.5, 0.75)
    gamma: float = 0.1
    augment: str = "random_resized_crop"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"fine-tuning epochs={self.epochs} must be >= 1")
        for name in ("iterations_per_epoch", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"fine-tuning {name}={value} must be >= 1 (or None)")
        if self.head_lr <= 0 or self.backbone_lr < 0:
            raise ValueError(
                f"fine-tuning lrs must be head_lr > 0 and backbone_lr >= 0, got {self.head_lr}, {self.backbone_lr}"
            )
        if self.augment not in AUGMENTS:
            raise ValueError(f"unknown fine-tuning augment {self.augment!r}; valid: {', '.join(AUGMENTS)}")

    def milestone_epochs(self) -> list[int]:
        """Epochs (from 1) after which the lr decays: 5, 10, 15 for 20 epochs."""
        return sorted({max(1, int(round(self.epochs * f))) for f in self.milestones})

    def record(self) -> dict[str, Any]:
        """The recipe as stored in a result JSON, with its milestone epochs."""
        return {**asdict(self), "milestones": list(self.milestones), "milestone_epochs": self.milestone_epochs()}


FINETUNE_RECIPES: dict[str, FinetuneRecipe] = {
    "rwsam": FinetuneRecipe("rwsam", epochs=20, iterations_per_epoch=2000, batch_size=48),
    "simple": FinetuneRecipe("simple", epochs=20, iterations_per_epoch=None, batch_size=None, augment="flip"),
}
DEFAULT_FINETUNE_RECIPE = "rwsam"


def finetune_recipe(name: str = DEFAULT_FINETUNE_RECIPE, **overrides: Any) -> FinetuneRecipe:
    """The named recipe (module docstring) with ``overrides`` (``None`` values are ignored), e.g.
    ``finetune_recipe("rwsam", epochs=2, iterations_per_epoch=5)`` for a test."""
    if name not in FINETUNE_RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {name!r}; valid: {', '.join(FINETUNE_RECIPES)}")
    recipe = FINETUNE_RECIPES[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(FinetuneRecipe.__dataclass_fields__) - {"name"})
    if unknown or "name" in overrides:
        raise ValueError(
            f"unknown fine-tuning option(s) {unknown or ['name']}; valid: "
            f"{', '.join(k for k in FinetuneRecipe.__dataclass_fields__ if k != 'name')}"
        )
    if "milestones" in overrides:
        overrides["milestones"] = tuple(overrides["milestones"])
    return replace(recipe, **overrides)


def augment_batch(x: Tensor, augment: str) -> Tensor:
    """Per-image random-resized crop back to the input size and flip (``random_resized_crop``), or
    flip only (``flip``), drawn from torch's global generator (seeded by the caller)."""
    if augment == "random_resized_crop":
        size = list(x.shape[-2:])
        crops = []
        for image in x:
            top, left, h, w = RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
            crops.append(resized_crop(image, top, left, h, w, size, antialias=True))
        x = torch.stack(crops)
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class FineTuner(pl.LightningModule):
    """A copy of the backbone plus a linear head, trained end to end with cross-entropy."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, num_classes: int, recipe: FinetuneRecipe, steps_per_epoch: int
    ) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.head = nn.Linear(feature_dim, num_classes)
        self.recipe, self.steps_per_epoch = recipe, steps_per_epoch

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x).flatten(1)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _ = batch
        loss = F.cross_entropy(self.head(self(augment_batch(x, self.recipe.augment))), y)
        self.log("finetune/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        r = self.recipe
        opt = torch.optim.SGD(
            [
                {"params": self.backbone.parameters(), "lr": r.backbone_lr},
                {"params": self.head.parameters(), "lr": r.head_lr},
            ],
            momentum=r.momentum,
            nesterov=r.nesterov,
            weight_decay=r.weight_decay,
        )
        milestones = [e * self.steps_per_epoch for e in r.milestone_epochs()]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, r.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def finetune_and_predict(
    model: nn.Module,
    feature_dim: int,
    datamodule: Any,
    recipe: FinetuneRecipe | None = None,
    probe_set: str = "full",
    accelerator: str = "auto",
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Fine-tune on ``probe_set`` with ``recipe`` (default: :func:`finetune_recipe` ``("rwsam")``)
    and return ``(test predictions, test labels)``."""
    recipe = recipe or finetune_recipe()
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset = datamodule.probe_dataloader(probe_set).dataset
    n = len(dataset)
    batch = recipe.batch_size or min(256, n)
    if recipe.iterations_per_epoch is None:  # epochs are passes over the probe set
        steps_per_epoch = -(-n // batch)
        train = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=False)
    else:  # "epochs" of a fixed number of iterations, drawn from reshuffled passes
        steps_per_epoch = recipe.iterations_per_epoch
        sampler = RandomSampler(dataset, num_samples=recipe.epochs * steps_per_epoch * batch)
        train = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True)
    tuner = FineTuner(
        model.backbone if hasattr(model, "backbone") else model,
        feature_dim,
        int(datamodule.num_classes),
        recipe,
        steps_per_epoch,
    )
    trainer = pl.Trainer(
        max_steps=recipe.epochs * steps_per_epoch,
        max_epochs=-1,
        accelerator=accelerator,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(tuner, train)
    network = nn.Sequential(tuner.backbone, nn.Flatten(1), tuner.head)
    logits, labels, _ = extract_features(network, datamodule.test_dataloader(), device=tuner.device)
    return logits.argmax(1), labels
