"""The semi-synthetic halves dataset (Liu et al. ICLR 2022 §3.3): which half depends on the label."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from datamodules.dataset_card import DatasetCard
from datamodules.in_memory import InMemoryLTDataModule, Source
from datamodules.semi_synthetic import SemiSyntheticHalves, compose_halves
from tests.fixtures import write_cifar10

PER_CLASS = 40


def class_images(labels: np.ndarray, size: int = 8) -> torch.Tensor:
    """Image of class y: every pixel = 20 * y + 5 (so a half's class can be read off its pixels)."""
    values = torch.from_numpy(20 * labels + 5).to(torch.uint8)
    return values.view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


class ConstantSource(InMemoryLTDataModule):
    """A 10-class in-memory source with class-constant images (not CIFAR: any source works)."""

    card = DatasetCard("constant", 10, 8, 3, (0.5,), (0.25,), "thirds", "test source", "made in the test")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def load_source(self) -> Source:
        train = np.repeat(np.arange(10), PER_CLASS)
        test = np.repeat(np.arange(10), 5)
        return Source(class_images(train), train, class_images(test), test)


def half_class(images: torch.Tensor, half: str) -> np.ndarray:
    """Class encoded in the left / right half of each image (all its pixels agree)."""
    w = images.shape[-1] // 2
    part = images[..., :w] if half == "left" else images[..., w:]
    flat = part.reshape(part.shape[0], -1)
    assert (flat == flat[:, :1]).all()  # a half comes from one image
    return (flat[:, 0].numpy().astype(int) - 5) // 20


def test_compose_halves_takes_label_half_from_itself_and_other_half_from_a_donor():
    n = 60
    labels = np.arange(n) % 4
    images = torch.arange(n, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 6).contiguous()
    frequent = np.array([True, True, False, False])
    out, donors = compose_halves(images, labels, frequent, "left", seed=3)
    left, right = out[:, 0, 0, 0].numpy(), out[:, 0, 0, 3].numpy()
    own = np.arange(n)
    is_freq = frequent[labels]
    np.testing.assert_array_equal(left[is_freq], own[is_freq])
    np.testing.assert_array_equal(right[is_freq], donors[is_freq])
    np.testing.assert_array_equal(right[~is_freq], own[~is_freq])
    np.testing.assert_array_equal(left[~is_freq], donors[~is_freq])
    assert (donors != own).all() and len(set(donors.tolist())) > n // 3
    again, _ = compose_halves(images, labels, frequent, "left", seed=3)
    assert torch.equal(out, again)  # seeded
    flipped, _ = compose_halves(images, labels, frequent, "right", seed=3)
    np.testing.assert_array_equal(flipped[:, 0, 0, 3].numpy()[is_freq], own[is_freq])


def test_which_half_depends_on_the_label():
    dm = SemiSyntheticHalves(source=ConstantSource(), imbalance_ratio=0.25, image_size=8)
    dm.setup()
    assert dm.card.name == "semi_synthetic_halves" and dm.card.mean == (0.5,)
    assert dm.frequent_classes.tolist() == [0, 1, 2, 3, 4]
    assert dm.class_counts.tolist() == [40] * 5 + [10] * 5  # step profile
    for images, targets in (
        (dm.splits.pretrain.images, dm.splits.pretrain_targets),
        (dm.splits.test.images, dm.splits.test.targets.numpy()),
    ):
        freq = targets < 5
        left, right = half_class(images, "left"), half_class(images, "right")
        # the label half determines the label exactly ...
        np.testing.assert_array_equal(left[freq], targets[freq])
        np.testing.assert_array_equal(right[~freq], targets[~freq])
        # ... the other half does not: it matches the label only by chance (about 1 in 10)
        assert np.mean(right[freq] == targets[freq]) < 0.3
        assert np.mean(left[~freq] == targets[~freq]) < 0.3
        assert len(set(right[freq].tolist())) >= 5 and len(set(left[~freq].tolist())) >= 5


def test_frequent_half_right_and_permuted_head_order():
    dm = SemiSyntheticHalves(
        source=ConstantSource(),
        imbalance_ratio=0.25,
        image_size=8,
        frequent_half="right",
        head_order="permuted",
        seed=1,
    )
    frequent = dm.frequent_classes
    counts = dm.class_counts
    assert sorted(np.flatnonzero(counts == 40).tolist()) == frequent.tolist()
    targets = dm.splits.pretrain_targets
    freq = np.isin(targets, frequent)
    right = half_class(dm.splits.pretrain.images, "right")
    np.testing.assert_array_equal(right[freq], targets[freq])
    assert np.mean(right[~freq] == targets[~freq]) < 0.3
    with pytest.raises(ValueError, match="frequent_half"):
        SemiSyntheticHalves(source=ConstantSource(), frequent_half="top")


def test_default_source_is_cifar10_on_disk(tmp_path):
    labels = np.repeat(np.arange(10), 20)
    images = np.repeat((20 * labels + 5).astype(np.uint8)[:, None, None, None], 3, 1).repeat(32, 2).repeat(32, 3)
    write_cifar10(tmp_path, labels, labels[::4], images, images[::4])
    dm = SemiSyntheticHalves(root=str(tmp_path), imbalance_ratio=0.5, batch_size=8)
    dm.setup()
    assert dm.card.channels == 3 and dm.class_counts.tolist() == [20] * 5 + [10] * 5
    targets = dm.splits.pretrain_targets
    np.testing.assert_array_equal(half_class(dm.splits.pretrain.images, "left")[targets < 5], targets[targets < 5])
    views, target, index = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert len(views) == 2 and views[0].shape == (8, 3, 32, 32) and target.dtype == torch.int64
