"""Map-style datasets over in-memory uint8 tensors, yielding the batch contract's tuples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class IndexedImages(Dataset):
    """``(image, target, index)`` over a uint8 tensor ``N×C×H×W``.

    ``index`` is the position in this dataset (the pre-training set for training), stable across
    epochs and ranks. ``transform`` (optional) maps a uint8 ``1×C×H×W`` batch to a float one: the
    deterministic evaluation transform. Without it the raw uint8 image is returned, and views are
    made batch-wise after transfer (``on_after_batch_transfer``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: np.ndarray | torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        if targets.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image.unsqueeze(0)).squeeze(0)
        return image, self.targets[i], i
