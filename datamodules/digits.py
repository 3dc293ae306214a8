"""Digits-LT: scikit-learn's bundled 8×8 digits, the embedded default (no files, no network)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

from datamodules.dataset_card import DatasetCard
from datamodules.in_memory import InMemoryLTDataModule, Source


def load_digits_arrays(test_fraction: float = 0.3, split_seed: int = 0) -> Source:
    """sklearn's digits (1,797 images, 10 classes, 0..16 grey levels) as uint8 ``N×1×8×8``,
    split per class into train / test with a fixed seed (stratified, ``test_fraction`` of each class)."""
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(split_seed)
    test_mask = np.zeros(labels.size, dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        test_mask[rng.choice(idx, size=int(round(idx.size * test_fraction)), replace=False)] = True
    to_t = torch.from_numpy
    return Source(
        to_t(images[~test_mask]).contiguous(),
        labels[~test_mask],
        to_t(images[test_mask]).contiguous(),
        labels[test_mask],
    )


DEFAULT_BATCH_SIZE = 64  # 494 images at ratio 0.1: 7 steps per epoch (drop_last)
DEFAULT_RECIPE = "small_gray"  # views for 16 px grey images (docs/methods.md §0.5)


class DigitsLT(InMemoryLTDataModule):
    """Long-tailed digits: the embedded default dataset (ships inside scikit-learn).

    Train/test is a fixed stratified 70/30 split of the 1,797 images (train 1,258 with 122-128 per
    class; test 539 with 52-55 per class); the smallest training class has 122 images, so the
    ``exp`` profile at ratio 0.1 keeps 122, 94, 73, 56, 43, 33, 26, 20, 15, 12 (494 images).
    Mean/std (0.306 / 0.376) are those of the training split. Images are upsampled from 8×8 to ``image_size``
    (default 16) by the view and eval transforms.
    """

    card = DatasetCard(
        name="digits_lt",
        num_classes=10,
        image_size=16,
        channels=1,
        mean=(0.306,),
        std=(0.376,),
        group_rule="thirds",
        protocol="LDAM exp profile over a stratified 70% train split of sklearn digits",
        source="bundled with scikit-learn (sklearn.datasets.load_digits); nothing to download",
        reference="Alpaydin & Kaynak 1998 (UCI optdigits); LDAM profile: Cao et al. 2019",
    )

    def __init__(
        self,
        imbalance_ratio: float = 0.1,
        image_size: int | None = 16,
        batch_size: int | None = None,
        recipe: str | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            imbalance_ratio: n_min / n_max; 0.1 by default because 122 images at the head leave
                only 1 image per tail class at 0.01.
            image_size: side of views and eval images (the source is 8×8).
            batch_size: pre-training batch size per process; default (unset) 64, sized to the
                set: 7 optimiser steps per epoch of the 494 images at ratio 0.1, where the base's
                256 would be a single step per epoch (README "Recipes").
            recipe: augmentation recipe of the views; default (unset) ``small_gray``, the recipe
                for 16 px grey images (docs/methods.md §0.5): SimCLR's 0.08-1 crops are 4.5 px
                wide at 16 px and its colour jitter does nothing to a grey image.
            **kwargs: profile, view and loader options of :class:`InMemoryLTDataModule`.

        The values used for unset options are recorded in the hyper-parameters (checkpoints).
        """
        batch = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        views = DEFAULT_RECIPE if recipe is None else recipe
        super().__init__(
            imbalance_ratio=imbalance_ratio, image_size=image_size, batch_size=batch, recipe=views, **kwargs
        )
        self._record_resolved(batch_size=batch, recipe=views)

    def load_source(self) -> Source:
        return load_digits_arrays()
