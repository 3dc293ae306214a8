"""Optimiser choice by name: SGD, LARS (timm's, You et al. 2017) and AdamW."""

from __future__ import annotations

import torch
from timm.optim import Lars

PRETRAIN_OPTIMIZERS = ("sgd", "lars", "adamw")


def build_optimizer(
    name: str, groups: list[dict], lr: float, momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """Build the optimiser; groups carry their own weight decay (see ``split_decay_groups``).

    LARS adapts only groups with non-zero weight decay (timm's ``always_adapt=False``), so biases
    and norms are excluded from the trust ratio as in BYOL App. C.1. SGD uses the fused kernel on
    CUDA when every parameter is there.
    """
    if name == "sgd":
        fused = all(p.is_cuda for g in groups for p in g["params"]) and torch.cuda.is_available()
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused or None)
    if name == "lars":
        return Lars(groups, lr=lr, momentum=momentum, trust_coeff=0.001)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(PRETRAIN_OPTIMIZERS)}")
