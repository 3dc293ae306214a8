"""The embedded default dataset and the batch contract through on_after_batch_transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.digits import DigitsLT


def test_digits_lt_counts_and_groups() -> None:
    dm = DigitsLT()
    assert dm.num_classes == 10
    assert dm.class_counts.tolist() == [122, 94, 73, 56, 43, 33, 26, 20, 15, 12]
    assert dm.class_groups["many"].tolist() == [0, 1, 2, 3]
    assert dm.group_rule == "thirds"
    stats = dm.stats()
    assert stats["pretrain_size"] == 494 and stats["test_size"] == 539
    assert stats["probe_sizes"] == {"full": 1258}


def test_balanced_twin_has_same_size() -> None:
    assert DigitsLT(balanced_twin=True).class_counts.tolist() == [49] * 10


def test_train_batch_becomes_views() -> None:
    dm = DigitsLT(batch_size=8, num_large_views=2, num_small_views=2, small_size=8)
    images, target, index = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 8, 8)
    views, t2, i2 = dm.on_after_batch_transfer((images, target, index), 0)
    assert [tuple(v.shape) for v in views] == [(8, 3, 16, 16)] * 2 + [(8, 3, 8, 8)] * 2
    assert all(v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])  # each view its own random parameters
    assert torch.equal(t2, target) and index.dtype == torch.int64
    # index is the position in the pre-training set: it looks up the right label
    assert torch.equal(dm.splits.pretrain.targets[index], target)


def test_views_are_reproducible_from_the_batch_counter() -> None:
    dm1, dm2 = DigitsLT(batch_size=4), DigitsLT(batch_size=4)
    batch = next(iter(dm1.train_dataloader()))
    dm1.on_after_batch_transfer(batch, 0)
    saved = dm1.state_dict()  # as a checkpoint would hold it
    a = dm1.on_after_batch_transfer(batch, 0)[0]
    dm2.load_state_dict(saved)
    b = dm2.on_after_batch_transfer(batch, 0)[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = dm1.on_after_batch_transfer(batch, 0)[0]  # next batch: new parameters
    assert not torch.equal(a[0], c[0])


def test_eval_batches_are_deterministic_and_normalised() -> None:
    dm = DigitsLT(eval_batch_size=64)
    x1, y1, i1 = next(iter(dm.test_dataloader()))
    x2, _, _ = next(iter(dm.test_dataloader()))
    assert x1.shape == (64, 3, 16, 16) and torch.equal(x1, x2)
    assert i1.tolist() == list(range(64))
    full = dm.probe_dataloader("full")
    assert sum(len(b[1]) for b in full) == 1258
    assert abs(float(x1.mean())) < 0.5  # normalised with the training mean/std
    with pytest.raises(ValueError, match="unknown probe set '5shot'"):
        dm.probe_dataloader("5shot")


def test_few_shot_probe_sets() -> None:
    dm = DigitsLT(few_shot=[5])
    loader = dm.probe_dataloader("5shot")
    labels = torch.cat([b[1] for b in loader]).numpy()
    assert np.bincount(labels).tolist() == [5] * 10


def test_pretrain_subset_keeps_original_index() -> None:
    dm = DigitsLT(batch_size=1000)
    dm.set_pretrain_subset([3, 10, 400])
    images, target, index = next(iter(dm.train_dataloader()))
    assert sorted(index.tolist()) == [3, 10, 400]
    assert torch.equal(dm.splits.pretrain.targets[index], target)
    with pytest.raises(ValueError, match=r"positions in \[0, 494\)"):
        dm.set_pretrain_subset([494])


def test_resident_batches_equal_the_collated_ones() -> None:
    """With resident=True the loader yields indices and the images are gathered after transfer:
    the same indices give exactly the same views, targets and indices as the collated path."""
    plain, resident = DigitsLT(batch_size=16), DigitsLT(batch_size=16, resident=True)
    index = next(iter(resident.train_dataloader()))
    assert index.dtype == torch.int64 and index.shape == (16,)
    views, target, idx = resident.on_after_batch_transfer(index, 0)
    images = plain.splits.pretrain.images[index]
    ref_views, ref_target, _ = plain.on_after_batch_transfer((images, plain.splits.pretrain.targets[index], index), 0)
    assert all(torch.equal(a, b) for a, b in zip(views, ref_views))
    assert torch.equal(target, ref_target) and torch.equal(idx, index)
    # the same sampler order as the collated loader
    assert torch.equal(index, next(iter(plain.train_dataloader()))[2])
