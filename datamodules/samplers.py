"""A shuffling sampler whose order is a function of (seed, epoch), resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (a seeded permutation per epoch, sharded over ranks; Lightning calls
    ``set_epoch`` and leaves it unwrapped under DDP) that can skip the batches of the current epoch
    a resumed run has already trained on, so that killing and resuming a run replays exactly the
    same batches as an uninterrupted one."""

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, drop_last: bool = True
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self._skip = 0

    def skip_next(self, num_samples: int) -> None:
        """Leave out the first ``num_samples`` indices of the next epoch's order (once)."""
        self._skip = max(0, int(num_samples))

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self._skip = self._skip, 0
        return iter(indices[start:])
