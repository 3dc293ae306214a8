"""The semi-synthetic "halves" dataset of Liu, HaoChen, Gaidon & Ma (ICLR 2022, §3.3).

The experiment tests the paper's explanation of why SSL is robust to imbalance: from the frequent
classes SSL also learns label-irrelevant features that transfer to the rare classes, which
supervised pre-training has no reason to learn. The data makes the two kinds of feature live in
different places: frequent classes carry their label in one half of the image (left by default),
rare classes in the other half (right).

Our reading of the construction (the paper's prose; no code was released for it):

* every image is cut at the vertical mid-line; the *label half* of an image of class ``y`` is the
  left half if ``y`` is frequent, else the right half, taken from the image itself;
* the *other half* is the same half of a *donor* image drawn uniformly at random (seeded) from the
  whole split, independently of ``y``: it looks like natural image content (so SSL learns
  features there, e.g. from the frequent images' right halves, which are exactly the features the
  rare classes need) but carries no information about the label;
* frequent / rare is a long-tail profile: by default ``step`` (Buda et al. 2018, LDAM), the
  first ``C // 2`` classes of the head order are frequent, at ``imbalance_ratio=0.01`` (our choice,
  the paper's exact sizes were not available to us); test and probe sets are composed the same way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from datamodules.cifar import CIFAR10LT
from datamodules.in_memory import InMemoryLTDataModule, Source
from datamodules.profiles import head_to_tail_order

HALVES = ("left", "right")


def compose_halves(
    images: torch.Tensor,
    labels: np.ndarray,
    frequent: np.ndarray,
    frequent_half: str = "left",
    seed: int | list[int] = 0,
) -> tuple[torch.Tensor, np.ndarray]:
    """Images whose label half is their own and whose other half comes from a random donor.

    Args:
        images: uint8 ``N×C×H×W``.
        labels: int64 ``N``.
        frequent: bool per class: does the class carry its label in ``frequent_half``?
        frequent_half: ``left`` or ``right``; rare classes use the other half.
        seed: seed of the donor draw.

    Returns:
        the composed images and, per image, the index of its donor (never the image itself).
    """
    if frequent_half not in HALVES:
        raise ValueError(f"frequent_half={frequent_half!r}; valid: {', '.join(HALVES)}")
    n, width = images.shape[0], images.shape[-1]
    if n < 2:
        raise ValueError(f"need at least 2 images to draw donors, got {n}")
    rng = np.random.default_rng(seed)
    donors = rng.integers(0, n - 1, size=n)
    donors += donors >= np.arange(n)  # uniform over the other images
    own_left = frequent[labels] == (frequent_half == "left")
    own = np.arange(n)
    left_src = torch.from_numpy(np.where(own_left, own, donors))
    right_src = torch.from_numpy(np.where(own_left, donors, own))
    mid = width // 2
    out = torch.cat([images[..., :mid][left_src], images[..., mid:][right_src]], dim=-1)
    return out.contiguous(), donors


class SemiSyntheticHalves(InMemoryLTDataModule):
    """Frequent classes labelled by one image half, rare classes by the other (module docstring).

    Built on CIFAR-10 (``root`` / ``download`` as :class:`~datamodules.cifar.CIFAR10LT`) or on any
    in-memory source given as ``source`` (its arrays are used, its card's statistics kept).
    """

    card = replace(
        CIFAR10LT.card,  # its classes, size and statistics
        name="semi_synthetic_halves",
        protocol="CIFAR-10, step profile (rho=100): frequent classes labelled by the left half, rare "
        "by the right half; the other half is a random donor image's",
        source="torchvision.datasets.CIFAR10 (download=True), or any in-memory source",
        reference="Liu, HaoChen, Gaidon & Ma, ICLR 2022, §3.3",
    )

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        source: InMemoryLTDataModule | None = None,
        frequent_half: str = "left",
        profile: str = "step",
        imbalance_ratio: float = 0.01,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: CIFAR-10 folder (as CIFAR10LT), used when ``source`` is not given.
            download: fetch CIFAR-10 if missing.
            source: another in-memory datamodule whose images and labels are composed instead.
            frequent_half: the half that carries the label of frequent classes (``left`` in the
                paper); rare classes use the other one.
            profile: long-tail profile; ``step`` makes the first ``C // 2`` classes of the head
                order frequent, the rest rare (the split the experiment needs).
            imbalance_ratio: rare / frequent class size; 0.01 is our choice.
            **kwargs: other profile options (``seed`` also seeds the donors, ``head_order`` picks
                which classes are frequent) and the view / loader options.
        """
        if frequent_half not in HALVES:
            raise ValueError(f"frequent_half={frequent_half!r}; valid: {', '.join(HALVES)}")
        if source is not None:
            self.card = replace(
                source.card,
                name="semi_synthetic_halves",
                protocol=f"{source.card.name} composed into halves (Liu et al. ICLR 2022 §3.3), profile {profile}",
                reference=SemiSyntheticHalves.card.reference,
            )
        super().__init__(profile=profile, imbalance_ratio=imbalance_ratio, **kwargs)
        self.root = root
        self.download = download
        self.source = source
        self.frequent_half = frequent_half

    @property
    def frequent_classes(self) -> np.ndarray:
        """Class ids carrying their label in ``frequent_half``: the first ``C // 2`` of the head order."""
        c = self.card.num_classes
        return np.sort(head_to_tail_order(c, self.long_tail.head_order, self.long_tail.seed)[: c // 2])

    def load_source(self) -> Source:
        if self.source is not None:
            src = self.source.load_source()
        else:
            src = CIFAR10LT(root=self.root, download=self.download).load_source()
        frequent = np.zeros(self.card.num_classes, dtype=bool)
        frequent[self.frequent_classes] = True
        train, _ = compose_halves(
            src.train_images, src.train_labels, frequent, self.frequent_half, [self.long_tail.seed, 0]
        )
        test = None
        if src.test_images is not None and src.test_labels is not None:
            test, _ = compose_halves(
                src.test_images, src.test_labels, frequent, self.frequent_half, [self.long_tail.seed, 1]
            )
        return Source(train, src.train_labels, test, src.test_labels)
