"""Long-tailed datamodules over small datasets held in memory as uint8 tensors.

A subclass loads its source arrays (:meth:`load_source`); this class applies the long-tail
profile (:class:`datamodules.profiles.LongTailProfile`) to the training source and builds the
probe sets: ``full`` = the whole balanced training source (the "full balanced training set"
linear-probe protocol of GH, MTTV and rwSAM; docs/protocols.md §3) and ``{k}shot`` = ``k`` images per
class drawn from it with a seeded RNG (BCL's 100/50-shot probes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datamodules.base import Splits
from datamodules.errors import DataInputError
from datamodules.profiled import ProfiledLTDataModule
from datamodules.profiles import long_tail_indices
from datamodules.tensor_datasets import IndexedImages


@dataclass
class Source:
    """Raw arrays of a small dataset: uint8 ``N×C×H×W`` images and int64 labels."""

    train_images: torch.Tensor
    train_labels: np.ndarray
    test_images: torch.Tensor | None = None
    test_labels: np.ndarray | None = None


def few_shot_indices(labels: np.ndarray, shots: int, seed: int = 0) -> np.ndarray:
    """``shots`` indices per class, sorted, drawn without replacement by a seeded RNG."""
    rng = np.random.default_rng([seed, shots])
    picked = []
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        if idx.size < shots:
            raise DataInputError(
                f"class {c} has {idx.size} probe images, fewer than few_shot={shots}: pass shots "
                f"of at most {idx.size} per class (--data.few_shot [{idx.size}])"
            )
        picked.append(rng.choice(idx, size=shots, replace=False))
    return np.sort(np.concatenate(picked))


class InMemoryLTDataModule(ProfiledLTDataModule):
    """Profile-built long-tailed pre-training set over an in-memory source (the profile options are
    :class:`~datamodules.profiled.ProfiledLTDataModule`'s)."""

    in_memory = True

    def load_source(self) -> Source:
        raise NotImplementedError(f"{type(self).__name__} must implement load_source()")

    def pretrain_indices(self, labels: np.ndarray) -> np.ndarray:
        """Indices of the pre-training set into the training source."""
        return long_tail_indices(labels, self.long_tail, num_classes=self.card.num_classes)

    def probe_indices(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Probe sets as indices into the training source: ``full`` and the few-shot sets."""
        sets = {"full": np.arange(labels.size)}
        for shots in self.few_shot:
            sets[f"{shots}shot"] = few_shot_indices(labels, shots, self.seed)
        return sets

    def build_splits(self) -> Splits:
        src = self.load_source()
        labels = np.asarray(src.train_labels, dtype=np.int64)
        keep = self.pretrain_indices(labels)
        keep_t = torch.from_numpy(keep)
        train_images = src.train_images[keep_t]
        probe = {
            name: IndexedImages(src.train_images[torch.from_numpy(idx)], labels[idx], self.eval_transform)
            for name, idx in self.probe_indices(labels).items()
        }
        test = None
        if src.test_images is not None and src.test_labels is not None:
            test = IndexedImages(src.test_images, src.test_labels, self.eval_transform)
        self.source_indices = keep  # position in the source of each pre-training image
        return Splits(
            pretrain=IndexedImages(train_images, labels[keep]),
            pretrain_eval=IndexedImages(train_images, labels[keep], self.eval_transform),
            pretrain_targets=labels[keep],
            probe=probe,
            test=test,
            num_classes=self.card.num_classes,
        )
