"""A per-sample memory keyed by the batch ``index``: BCL's momentum loss and GH's logit memory.

Both official codes keep one exponential moving average per training sample and update it from
the sample's value at every step that sees it (BCL ``train.py``; GH ``train_cifar.py``;
docs/methods.md §13.2, §15.4). Here the memory is a pair of buffers (so it is in every checkpoint
and a resumed run continues it exactly), it starts at zero (the official GH memory is an
uninitialised ``torch.empty``), and under DDP every rank gathers the indices and values of all
ranks and applies the same update, so the memory is identical on every rank (the GH code's
ImageNet path instead gives each sample rank 0's loss, docs/methods.md §13.6).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_ssl import distributed


def pretrain_size(trainer: Any) -> int:
    """Samples of the pre-training set (the range of the batch ``index``), from the trainer's
    datamodule (docs/design.md §3: ``pretrain_eval_dataloader()`` holds the whole set in index order)."""
    dm = getattr(trainer, "datamodule", None)
    loader = getattr(dm, "pretrain_eval_dataloader", None)
    if loader is None:
        raise ValueError(
            "a per-sample memory needs the size of the pre-training set: train with a datamodule "
            "that has pretrain_eval_dataloader() (every datamodule of the suite), not bare dataloaders"
        )
    return len(loader().dataset)


class PerSampleMemory(nn.Module):
    """``values[i]``: an exponential moving average of sample ``i``'s value; ``seen[i]``: whether
    sample ``i`` has been seen. The first value of a sample is stored as it is (BCL's
    ``M_1 = l_1``; GH's first epoch adds to a zero memory), later ones as
    ``m <- beta m + (1 - beta) v``.

    Args:
        width: ``None`` for one number per sample (BCL's loss), ``K`` for a ``K``-vector (GH's logits).
    """

    def __init__(self, width: int | None = None) -> None:
        super().__init__()
        self.width = width
        self.register_buffer("values", torch.zeros(self._shape(0)))
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))

    def _shape(self, n: int) -> tuple[int, ...]:
        return (n,) if self.width is None else (n, self.width)

    def __len__(self) -> int:
        return int(self.seen.shape[0])

    def resize(self, n: int) -> None:
        """Hold ``n`` samples, all unseen (called when the fit starts, before a checkpoint loads)."""
        if n < 1:
            raise ValueError(f"a per-sample memory needs n >= 1 samples, got {n}")
        if len(self) != n:
            self.values = torch.zeros(self._shape(n), device=self.values.device)
            self.seen = torch.zeros(n, dtype=torch.bool, device=self.seen.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Take the size of the memory being loaded: it is the pre-training set's, known only when a
        fit starts (``load_from_checkpoint``, a resume, or DDP-spawn's copy back to the main process)."""
        stored = state_dict.get(f"{prefix}seen")
        if stored is not None and stored.shape[0] != len(self):
            self.resize(int(stored.shape[0]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update(self, index: Tensor, values: Tensor, beta: float) -> None:
        """Write this step's values of the samples ``index`` of every rank (gathered in rank order).
        No host synchronisation: ``index`` must lie in ``[0, len(self))`` (the batch contract's index)."""
        if len(self) == 0:
            raise ValueError("the per-sample memory has no size yet: resize() it when the fit starts")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"memory momentum beta={beta} must be in [0, 1]")
        index = distributed.all_gather_same_size(index.detach().long())
        values = distributed.all_gather_same_size(values.detach().to(self.values.dtype))
        old = self.values[index]
        seen = self.seen[index].view(-1, *([1] * (values.ndim - 1)))
        self.values[index] = torch.where(seen, beta * old + (1.0 - beta) * values, values)
        self.seen[index] = True
