"""A shuffling sampler whose order is a function of (seed, epoch), resumable mid-epoch, and the
training DataLoader that carries it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler


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


class ResumableDataLoader(DataLoader):
    """The training DataLoader over a :class:`ResumableSampler`. Its ``state_dict`` /
    ``load_state_dict`` tell Lightning that it resumes mid-epoch (Lightning otherwise warns that a
    mid-epoch resume is unreliable): the sampler skips the batches the restored fit loop has
    counted, so the state kept is the order's seed, checked on resume."""

    sampler: ResumableSampler

    def state_dict(self) -> dict[str, Any]:
        return {"sampler_seed": int(self.sampler.seed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("sampler_seed")
        if saved is not None and int(saved) != int(self.sampler.seed):
            raise ValueError(
                f"the checkpoint was trained with view_seed {saved} but this run has {self.sampler.seed}; "
                f"resume with --data.view_seed {saved} (or start a new run without --ckpt_path)"
            )
