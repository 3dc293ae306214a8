"""BCL's per-sample augmentation strength from the momentum loss (Zhou, Yao, Wang, Han, Zhang;
"Contrastive Learning with Boosted Memorization", ICML 2022; docs/methods.md §13.3-§13.4)."""

from __future__ import annotations

import torch
from torch import Tensor

MIN_STRENGTH = {1: 10.0, 2: 5.0}
"""The official magnitude floor per op count (``memoboosted_cifar100.py``: ``min_strength`` 10 for
``rand_k = 1`` and 5 otherwise, "training stability")."""


@torch.no_grad()
def momentum_weights(memory: Tensor, seen: Tensor | None = None) -> Tensor:
    """The official ``calculate_momentum_weight``: ``z = (M - mean M) / std M`` over all samples,
    ``w = z / max |z| / 2 + 1/2`` in [0, 1]; the std cancels, so ``w = 1/2 + (M - mean M) / (2 max |M - mean M|)``.

    Only seen samples take part (all of them in the official code, which never drops a batch);
    unseen ones get 0, the official first-epoch weight. If every seen value is equal (the official
    code divides 0 by 0) they all get 1/2, the limit of the formula.
    """
    if memory.ndim != 1:
        raise ValueError(f"memory must hold one value per sample, got shape {tuple(memory.shape)}")
    seen = torch.ones_like(memory, dtype=torch.bool) if seen is None else seen
    m = memory.double()
    count = seen.sum()
    if int(count) == 0:
        return torch.zeros_like(memory)
    mean = torch.where(seen, m, 0.0).sum() / count
    dev = torch.where(seen, m - mean, 0.0)
    largest = dev.abs().max()
    w = 0.5 + dev / (2.0 * largest) if float(largest) > 0 else torch.full_like(m, 0.5)
    return torch.where(seen, w, 0.0).to(memory.dtype)


def bcl_strength(
    weights: Tensor, num_ops: int, rand_strength: float = 30.0, uniform: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(magnitude, probability)`` of every sample's RandAugment (official ``memoboosted_cifar100.py``):

    * ``num_ops = 1`` (BCL-I): ``m = 10 + (rand_strength - 10) w``;
    * otherwise (BCL-D: 2): ``m = 5 + (rand_strength - 5) w u`` with ``u ~ U(0, 1)`` drawn per image
      and epoch (``uniform``);
    * ``p = w`` in both.
    """
    floor = MIN_STRENGTH.get(num_ops, MIN_STRENGTH[2])
    if not floor <= rand_strength <= 30.0:
        raise ValueError(f"rand_strength={rand_strength} must be in [{floor:g}, 30] (the RandAugment magnitude scale)")
    if num_ops == 1:
        magnitude = floor + (rand_strength - floor) * weights
    else:
        if uniform is None or uniform.shape != weights.shape:
            raise ValueError(f"BCL with num_ops={num_ops} needs one U(0, 1) draw per sample (uniform)")
        magnitude = floor + (rand_strength - floor) * weights * uniform
    return magnitude, weights.clone()
