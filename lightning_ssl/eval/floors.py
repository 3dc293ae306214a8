"""The two reference encoders every result is compared with (docs/protocols.md §8).

* ``RawPixels``: the eval-transformed image itself, flattened, as the feature. An encoder that does
  not beat it has learnt nothing a linear probe could not read off the pixels.
* ``RandomInit``: the sweep's backbone at initialisation (seeded like every run), never trained.
  Random convolutional features are a strong floor on small images; a method that does not beat
  them by a clear margin has not been trained yet.

Both go through the same offline evaluation (probe sets, kNN bank, test set) as the methods.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FLOORS = ("RawPixels", "RandomInit")  # the reference encoders every sweep and report has


class RawPixels(nn.Module):
    """Images ``B×C×H×W`` -> ``B×(C·H·W)``; images larger than ``max_side`` are first area-averaged
    to ``max_side`` (a 224 px ImageNet image would give 150,528 dimensions per sample)."""

    def __init__(self, max_side: int = 32) -> None:
        super().__init__()
        if max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        self.max_side = max_side
        # a buffer, so that ``next(model.parameters())``-style device look-ups have something
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.max_side:
            x = F.adaptive_avg_pool2d(x, self.max_side)
        return x.flatten(1).float()
