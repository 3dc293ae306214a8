"""Parameter groups: no weight decay (and no LARS adaptation) on norms and biases.

The exclusion follows SimCLR (Chen et al. 2020 App. B.1) and BYOL (Grill et al. 2020 App. C.1).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def split_decay_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: weights of linear/conv layers with ``weight_decay``; biases and
    normalisation parameters (any parameter with fewer than 2 dims) with 0."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
