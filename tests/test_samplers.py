"""The training order: a seeded permutation per epoch that skips the batches a resumed run already
trained on, and a loader that tells Lightning it resumes mid-epoch and checks the order's seed."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from datamodules.samplers import ResumableDataLoader, ResumableSampler


def dataset(n: int = 20) -> TensorDataset:
    return TensorDataset(torch.arange(n))


def test_order_is_a_function_of_seed_and_epoch_and_skip_drops_a_prefix_once() -> None:
    a, b = ResumableSampler(dataset(), seed=3), ResumableSampler(dataset(), seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    full = list(a)
    assert sorted(full) == list(range(20)) and full == list(b)
    b.skip_next(8)
    assert list(b) == full[8:]
    assert list(b) == full  # the skip applies to one epoch only
    a.set_epoch(2)
    assert list(a) != full


def test_loader_state_carries_the_seed_and_a_different_seed_is_refused() -> None:
    loader = ResumableDataLoader(dataset(), batch_size=4, sampler=ResumableSampler(dataset(), seed=5))
    state = loader.state_dict()
    assert state == {"sampler_seed": 5}
    ResumableDataLoader(dataset(), batch_size=4, sampler=ResumableSampler(dataset(), seed=5)).load_state_dict(state)
    other = ResumableDataLoader(dataset(), batch_size=4, sampler=ResumableSampler(dataset(), seed=6))
    with pytest.raises(ValueError, match="trained with view_seed 5 but this run has 6; resume with --data.view_seed 5"):
        other.load_state_dict(state)
