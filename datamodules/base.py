"""The shared LightningDataModule of every long-tailed dataset.

A subclass builds its splits (:class:`Splits`); this base turns them into the batch contract of
docs/design.md §3:

* pre-training batches ``(views, target, index)``: the loaders yield raw uint8 images of one size,
  and the views are made batch-wise, each image with its own random parameters, in
  ``on_after_batch_transfer`` (on the GPU when training runs there, on the CPU otherwise: same
  code, same semantics);
* evaluation batches ``(image, target, index)`` with the deterministic eval transform.

It exposes ``num_classes``, ``class_counts`` (of the pre-training set), ``class_groups`` and
``group_rule``, the balanced probe set(s) (``probe_sets``, ``probe_dataloader(name)``), the test set
and an eval-transform pass over the pre-training set (``pretrain_eval_dataloader``, used for
clustering and density weights).
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from datamodules.checks import check_choice, check_int, check_seed
from datamodules.dataset_card import DatasetCard
from datamodules.errors import DataInputError
from datamodules.groups import class_groups, effective_rule, group_rule_name
from datamodules.samplers import ResumableDataLoader, ResumableSampler
from datamodules.tensor_datasets import IndexedImages
from datamodules.view_transforms import (
    VIEW_RECIPES,
    EvalTransform,
    MultiViewTransform,
    default_small_size,
)


class _Positions(Dataset):
    """``i -> i``: what a resident training loader yields (collated into an index tensor)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@dataclass
class Splits:
    """What a dataset provides. ``pretrain_eval`` is ``pretrain`` under the eval transform."""

    pretrain: Dataset  # (uint8 C×H×W, target, index)
    pretrain_eval: Dataset  # (float C×S×S, target, index), same order as pretrain
    pretrain_targets: np.ndarray  # int64, -1 where unknown
    probe: dict[str, Dataset] = field(default_factory=dict)  # name -> eval dataset, "full" first
    test: Dataset | None = None
    num_classes: int | None = None


class LongTailDataModule(pl.LightningDataModule):
    """The dataset: a name such as FashionMNISTLT (lssl data stats NAME) or a subclass's class path.

    The base of every datamodule; a subclass implements :meth:`build_splits` and sets ``card``."""

    card: ClassVar[DatasetCard]

    def __init__(
        self,
        image_size: int | None = None,
        recipe: str = "simclr",
        num_large_views: int = 2,
        num_small_views: int = 0,
        small_size: int | None = None,
        clean_view: bool = False,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        group_rule: str | None = None,
        view_seed: int = 0,
        resident: bool = False,
    ) -> None:
        """
        Args:
            image_size: side of the large views and of eval images; default the dataset's native
                size (the card's ``image_size``).
            recipe: augmentation recipe of the views (``simclr``, ``mocov2``, ``byol``, ...).
            num_large_views: number of large (global) crops per image; 2 for two-view methods.
            num_small_views: number of small crops (SwAV multi-crop, Caron et al. 2020 §3.2).
            small_size: side of the small crops; default
                :func:`~datamodules.view_transforms.default_small_size` (SwAV's 96 px for 224 px, scaled and
                rounded down, at least 8 and at most ``image_size``: 13 px at 32 px).
            clean_view: append the un-augmented normalised view (MTTV's n(.)).
            batch_size: pre-training batch size per process.
            eval_batch_size: batch size of the evaluation loaders.
            num_workers: DataLoader workers (0 keeps in-memory data in the main process).
            group_rule: ``thirds`` or ``thresholds``; default the card's rule.
            view_seed: seed of the augmentation stream (per-batch seeds derive from it).
            resident: keep the pre-training images on the training device as uint8 (in-memory
                datasets): the loader yields only indices and the images are gathered on the
                device after transfer, so no image is collated or copied per batch (the GPU
                path of docs/design.md §10; the same code runs on the CPU).
        """
        super().__init__()
        self.save_hyperparameters()  # stored in checkpoints: `lssl probe` rebuilds the same data
        self._check_options(
            image_size,
            recipe,
            num_large_views,
            num_small_views,
            small_size,
            batch_size,
            eval_batch_size,
            num_workers,
            group_rule,
            view_seed,
            resident,
        )
        self.image_size = image_size if image_size is not None else self.card.image_size
        # the resolved sizes, not None, are what the checkpoint and the loggers record: the model's
        # image_size follows the data's, and Lightning refuses hparams that differ between the two
        self._record_resolved(image_size=self.image_size)
        self.recipe = recipe
        self.num_large_views = num_large_views
        self.num_small_views = num_small_views
        self.small_size = small_size if small_size is not None else default_small_size(self.image_size)
        if self.small_size > self.image_size:
            raise ValueError(
                f"small_size={self.small_size} is larger than image_size={self.image_size}: small crops "
                f"are at most the large views' size; pass --data.small_size {self.image_size} or less"
            )
        self._record_resolved(small_size=self.small_size)
        self.clean_view = clean_view
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self._group_rule = group_rule or self.card.group_rule
        self.view_seed = view_seed
        self._batches_made = 0
        self._splits: Splits | None = None
        self._pretrain_subset: np.ndarray | None = None
        self.resident = resident
        self._resident: tuple[torch.Tensor, torch.Tensor] | None = None
        self.view_transform = MultiViewTransform(
            image_size=self.image_size,
            mean=self.card.mean,
            std=self.card.std,
            recipe=recipe,
            num_large_views=num_large_views,
            num_small_views=num_small_views,
            small_size=self.small_size,
            clean_view=clean_view,
        )
        self.eval_transform = EvalTransform(self.image_size, self.card.mean, self.card.std)

    in_memory: ClassVar[bool] = False  # the images are held as one uint8 tensor (``resident`` is possible)

    def _check_options(
        self,
        image_size: int | None,
        recipe: str,
        num_large_views: int,
        num_small_views: int,
        small_size: int | None,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        group_rule: str | None,
        view_seed: int,
        resident: bool,
    ) -> None:
        """Every view and loader option, before anything is built (datamodules/checks.py)."""
        check_int("image_size", image_size, 4, 32, optional=True, why="the side of the views in pixels")
        check_choice("recipe", recipe, VIEW_RECIPES)
        check_int("num_large_views", num_large_views, 1, 2)
        check_int("num_small_views", num_small_views, 0, 2)
        check_int("small_size", small_size, 4, 8, optional=True, why="the side of the small crops in pixels")
        check_int("batch_size", batch_size, 1, 64, why="images per pre-training step and process")
        check_int("eval_batch_size", eval_batch_size, 1, 512)
        check_int("num_workers", num_workers, 0, 0, why="DataLoader worker processes; 0 loads in the main process")
        if group_rule is not None:
            check_choice("group_rule", group_rule, ("thirds", "thresholds", "none"))
        check_seed("view_seed", view_seed)
        if resident and not self.in_memory:
            raise ValueError(
                f"resident=True needs an in-memory dataset; {type(self).__name__} decodes image files "
                "in DataLoader workers: drop --data.resident (or pass --data.resident false)"
            )

    def _record_resolved(self, **values: Any) -> None:
        """Store resolved defaults in the hyperparameters (and their logged initial copy)."""
        self.hparams.update(values)
        initial = getattr(self, "_hparams_initial", None)
        if initial is not None:
            initial.update(values)

    # -- what a subclass provides -------------------------------------------------------------
    def build_splits(self) -> Splits:
        raise NotImplementedError(f"{type(self).__name__} must implement build_splits()")

    # -- set-up -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._splits = self.build_splits()

    @property
    def splits(self) -> Splits:
        self.setup()
        assert self._splits is not None
        return self._splits

    # -- the facts every evaluation needs ------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.splits.num_classes or self.card.num_classes

    @property
    def class_counts(self) -> np.ndarray:
        """Per-class counts of the pre-training set (unknown targets are not counted)."""
        t = self.splits.pretrain_targets
        return np.bincount(t[t >= 0], minlength=self.num_classes).astype(np.int64)

    @property
    def group_rule(self) -> str:
        """The rule's reported name; ``none`` for ``thirds`` over a balanced pre-training set."""
        return group_rule_name(effective_rule(self._group_rule, self.class_counts))

    @property
    def class_groups(self) -> dict[str, np.ndarray]:
        return class_groups(self.class_counts, self._group_rule)

    @property
    def probe_sets(self) -> list[str]:
        return list(self.splits.probe)

    # -- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        sampler = None
        if shuffle:
            trainer = self.trainer
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, seed=self.view_seed, drop_last=drop_last)
            sampler.skip_next(self._batches_done_this_epoch() * batch_size)
        return (ResumableDataLoader if shuffle else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def _batches_done_this_epoch(self) -> int:
        """Batches of the current epoch already trained on when a run resumes mid-epoch (the
        fit loop's state is restored before the train loader is built); 0 otherwise."""
        trainer = self.trainer
        if trainer is None or trainer.global_step == 0:
            return 0
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed or 0)
        dataset = self.splits.pretrain if self._pretrain_subset is None else self._pretrain_subset
        per_epoch = len(dataset) // (self.batch_size * trainer.world_size)
        return done if done < per_epoch else 0  # an end-of-epoch checkpoint starts a new epoch

    def set_pretrain_subset(self, indices: np.ndarray | list[int] | None) -> None:
        """Pre-train on these positions of the pre-training set only (DnC's per-cluster experts).

        Batches keep the original ``index`` (position in the full pre-training set), so anything
        looked up by index (cluster ids, sample weights) stays valid. ``None`` restores the full set.
        """
        if indices is None:
            self._pretrain_subset = None
            return
        idx = np.asarray(indices, dtype=np.int64)
        n = len(self.splits.pretrain)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise ValueError(
                f"pretrain subset must be non-empty positions in [0, {n}), got {idx.size} "
                f"indices in [{idx.min() if idx.size else '-'}, {idx.max() if idx.size else '-'}]"
            )
        self._pretrain_subset = idx

    def train_dataloader(self) -> DataLoader:
        dataset: Dataset = self.splits.pretrain
        if self.resident:
            if not isinstance(dataset, IndexedImages):
                raise ValueError(
                    f"resident=True needs an in-memory dataset; {type(self).__name__} decodes "
                    f"files in DataLoader workers: set resident=False"
                )
            dataset = _Positions(len(dataset))  # the loader carries indices; images stay on the device
        if self._pretrain_subset is not None:
            dataset = Subset(dataset, self._pretrain_subset.tolist())
        n = len(dataset)
        world = self.trainer.world_size if self.trainer is not None else 1
        if (
            self._pretrain_subset is None and n < self.batch_size * world
        ):  # a DnC expert's subset may be: it is sized so
            warnings.warn(
                f"{type(self).__name__}: batch_size={self.batch_size} (x {world} process(es)) is larger than the "
                f"pre-training set ({n} images): each epoch is one batch of {n}; pass --data.batch_size "
                f"{max(1, n // (8 * world))} or so for several steps per epoch",
                stacklevel=2,
            )
        return self._loader(dataset, self.batch_size, True, drop_last=n > self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        """The test set, so that online probes report test accuracy during pre-training; without a
        test set there is no validation (an empty list, with a warning saying how to add one)."""
        if self.splits.test is None:
            warnings.warn(
                f"{type(self).__name__} has no test set{self._how_to_add_test_set()}: no validation and "
                f"no online probe accuracy during pre-training",
                stacklevel=2,
            )
            return []
        return self.test_dataloader()

    def _how_to_add_test_set(self) -> str:
        return " (pass test_root=DIR holding the same class folders)" if hasattr(self, "test_root") else ""

    def test_dataloader(self) -> DataLoader:
        if self.splits.test is None:
            raise DataInputError(f"{type(self).__name__} has no test set to evaluate on{self._how_to_add_test_set()}")
        return self._loader(self.splits.test, self.eval_batch_size, False, False)

    def probe_dataloader(self, name: str = "full") -> DataLoader:
        if name not in self.splits.probe:
            raise ValueError(f"unknown probe set {name!r}; this datamodule has {self.probe_sets}")
        return self._loader(self.splits.probe[name], self.eval_batch_size, False, False)

    def pretrain_eval_dataloader(self) -> DataLoader:
        """The pre-training set under the eval transform, in index order."""
        return self._loader(self.splits.pretrain_eval, self.eval_batch_size, False, False)

    # -- views --------------------------------------------------------------------------------
    def make_views(self, images: torch.Tensor, index: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Views of a uint8 batch; each call draws fresh per-image parameters from a seed that is
        a function of (view_seed, rank, batch counter), so a resumed run makes the same views.
        ``index`` (the batch's positions in the pre-training set) looks up per-sample strengths."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        seed = zlib.crc32(f"{self.view_seed}:{rank}:{self._batches_made}".encode())
        self._batches_made += 1
        return self.view_transform(images, seed=seed, index=index)

    def set_sample_augmentation(
        self, num_ops: int, magnitude: torch.Tensor | None, probability: torch.Tensor | None
    ) -> None:
        """Per-sample augmentation strength of the large views (BCL's RandAugment, docs/methods.md
        §13.4): ``magnitude[i]`` in [0, 30] and ``probability[i]`` for the sample at position ``i``
        of the pre-training set, ``num_ops`` ops per view; ``None`` turns it off. A method sets it
        (through ``trainer.datamodule``) at the start of every epoch, from its checkpointed state."""
        self.view_transform.set_sample_augmentation(num_ops, magnitude, probability)

    def _gather_resident(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images and targets of ``index`` from the copy kept on ``index``'s device (made once)."""
        if self._resident is None or self._resident[0].device != index.device:
            pretrain = self.splits.pretrain
            self._resident = (pretrain.images.to(index.device), pretrain.targets.to(index.device))
        images, targets = self._resident
        return images[index], targets[index], index

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, torch.Tensor) and batch.ndim == 1:  # a resident training batch: indices
            batch = self._gather_resident(batch)
        images, target, index = batch
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            trainer = self.trainer
            if trainer is None or trainer.training:
                return self.make_views(images, index), target, index
            return self.eval_transform(images), target, index
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"batches_made": self._batches_made}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._batches_made = int(state_dict.get("batches_made", 0))

    # -- statistics ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Everything ``lssl data stats`` prints."""
        counts = self.class_counts
        groups = self.class_groups
        nonzero = counts[counts > 0]
        return {
            "name": self.card.name,
            "num_classes": self.num_classes,
            "pretrain_size": int(len(self.splits.pretrain)),
            "unlabeled": int((self.splits.pretrain_targets < 0).sum()),
            "class_counts": counts,
            "imbalance_ratio": float(nonzero.min() / nonzero.max()) if nonzero.size else float("nan"),
            "group_rule": self.group_rule,
            "groups": {g: {"classes": int(len(c)), "images": int(counts[c].sum())} for g, c in groups.items()},
            "probe_sizes": {k: len(v) for k, v in self.splits.probe.items()},
            "test_size": len(self.splits.test) if self.splits.test is not None else 0,
        }
