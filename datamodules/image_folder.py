"""Bring your own data: a class-folder tree made long-tailed by a profile, or a flat folder of
unlabeled images.

* :class:`ImageFolderLT`: ``root/<class_name>/*.jpg|png|...`` (class ids = sorted folder names, as
  ``torchvision.datasets.ImageFolder``), kept as it is by default (``profile="none"``: a folder of
  your own is usually long-tailed already, and any folder works), or made long-tailed by a profile
  of :mod:`datamodules.profiles` (``profile="exp"`` with ``imbalance_ratio``, ...). Probe ``full`` =
  the whole folder; an optional ``test_root`` with the same class folders is the test set.

Every image file is decoded once when the set is built, so a corrupt, truncated, empty or fake
image stops the run before training with one line naming it (``bad_images="skip"`` leaves such
files out instead, with a warning naming them).
* :class:`UnlabeledFolder`: every image below ``root``, targets ``-1``, for pre-training on
  uncurated data (DnC's setting, Tian et al. ICCV 2021). It has no labels, hence no probe or test
  set of its own: they come from another (labeled) datamodule given as ``eval_datamodule`` (e.g. a
  CIFAR10LT for an uncurated CIFAR-sized folder), or there are none.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.base import LongTailDataModule, Splits
from datamodules.checks import check_choice, check_load_size
from datamodules.dataset_card import DatasetCard
from datamodules.errors import DataInputError, DataNotFoundError
from datamodules.file_datasets import (
    BAD_IMAGES,
    IMAGE_EXTENSIONS,
    ImageFiles,
    check_images,
    scan_images,
)
from datamodules.in_memory import few_shot_indices
from datamodules.list_files import IMAGENET_MEAN, IMAGENET_STD
from datamodules.profiled import NO_PROFILE, ProfiledLTDataModule
from datamodules.profiles import long_tail_indices


def scan_class_folders(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """``(classes, paths, targets)`` of a class-folder tree; ``classes`` (sorted folder names by
    default) fixes the id of each folder name. Hidden folders (``.ipynb_checkpoints``) and hidden
    files are skipped, and so are class folders without an image, each with a warning: they are
    not classes (an empty class would get NaN accuracies and shift the groups).

    Raises:
        FileNotFoundError: ``root`` is missing or has no image.
        ValueError: a folder that is not one of ``classes`` (when given).
    """
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} not found (expected {root}/<class_name>/<image>): fix the path")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    hidden_dirs = [name for name in folders if name.startswith(".")]
    hidden: list[Path] = []
    files_of = {name: scan_images(root / name, hidden) for name in folders if not name.startswith(".")}
    empty = [name for name, files in files_of.items() if not files]
    if hidden_dirs or hidden:
        warnings.warn(
            f"{root}: skipping hidden folder(s) {hidden_dirs} and {len(hidden)} hidden image file(s) "
            f"inside the class folders: they are not classes or images",
            stacklevel=2,
        )
    if empty and classes is None:
        warnings.warn(
            f"{root}: skipping empty class folder(s) {empty} (no {', '.join(IMAGE_EXTENSIONS)} file): "
            f"they are not classes",
            stacklevel=2,
        )
    found = [name for name in files_of if name not in empty]
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataInputError(
            f"{root} has class folders {unknown} that the training folder does not have: "
            f"give both folders the same class folders"
        )
    paths, targets = [], []
    for c, name in enumerate(classes):
        files = files_of.get(name, [])
        paths += [str(p) for p in files]
        targets += [c] * len(files)
    if not paths:
        raise DataNotFoundError(
            f"no image ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of {root}: "
            f"expected {root}/<class_name>/<image>"
        )
    return classes, paths, np.asarray(targets, dtype=np.int64)


class ImageFolderLT(ProfiledLTDataModule):
    """A class-folder tree, as it is or under a long-tail profile (the profile options of
    :class:`~datamodules.profiled.ProfiledLTDataModule`, with ``profile="none"`` as the default)."""

    keeps_source = True
    card = DatasetCard(
        name="image_folder_lt",
        num_classes=0,  # found in the folder
        image_size=224,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        group_rule="thirds",
        protocol="LDAM-style profile (exp/step/pareto/balanced, or none) over root/<class>/<image>",
        source="your own images: root/<class_name>/*.jpg|png",
        reference="profiles: Cao et al. NeurIPS 2019 (LDAM); sub-sampling / balanced twin: Liu et al. ICLR 2022",
    )

    def __init__(
        self,
        root: str,
        test_root: str | None = None,
        profile: str = NO_PROFILE,
        imbalance_ratio: float | None = None,
        load_size: int | None = None,
        bad_images: str = "error",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: ``root/<class_name>/<image>``; class ids are the sorted folder names.
            test_root: the same class folders holding the test images; none by default.
            profile: ``none`` (default: keep every image, the folder as it is) or ``exp`` |
                ``step`` | ``pareto`` | ``balanced`` (LDAM conventions) to make it long-tailed.
            imbalance_ratio: n_min / n_max in (0, 1] of a profile (default 0.01, rho = 100);
                with ``profile="none"`` leave it unset.
            load_size: side of the decoded training images; default ``image_size * 8 // 7``.
            bad_images: a file that does not decode (corrupt, truncated, empty, not an image)
                found when the set is built: ``error`` (stop, naming it) or ``skip`` (leave it out,
                with a warning naming every such file).
            **kwargs: the other profile options (``seed`` also draws the few-shot sets from the
                folder, ``head_order``, ``img_max``, ``subsample``, ``balanced_twin``, ``few_shot``;
                each with a profile only) and the view / loader options (``image_size``, ...).
        """
        super().__init__(profile=profile, imbalance_ratio=imbalance_ratio, **kwargs)
        check_choice("bad_images", bad_images, BAD_IMAGES)
        self.root = Path(root)
        self.test_root = Path(test_root) if test_root is not None else None
        self.load_size = check_load_size(load_size, self.image_size)
        self.bad_images = bad_images

    def _scan(self, root: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
        """:func:`scan_class_folders`, then every image decoded once (``bad_images``)."""
        classes, paths, labels = scan_class_folders(root, classes)
        good = check_images(paths, self.load_size, self.bad_images, str(root))
        if len(good) < len(paths):
            paths, labels = [paths[i] for i in good], labels[good]
            if not paths:
                raise DataNotFoundError(f"no image of {root} decodes: fix root")
        return classes, paths, labels

    def build_splits(self) -> Splits:
        classes, paths, labels = self._scan(self.root)
        self.classes = classes
        num_classes = len(classes)
        if self.long_tail is None:
            keep = np.arange(labels.size)
        else:
            keep = long_tail_indices(labels, self.long_tail, num_classes=num_classes)
        self.source_indices = keep

        def eval_files(p: list[str], t: np.ndarray) -> ImageFiles:
            return ImageFiles(p, t, self.image_size, self.eval_transform)

        kept = [paths[i] for i in keep]
        probe = {"full": eval_files(paths, labels)}
        for shots in self.few_shot:
            idx = few_shot_indices(labels, shots, self.seed)
            probe[f"{shots}shot"] = eval_files([paths[i] for i in idx], labels[idx])
        test = None
        if self.test_root is not None:
            _, test_paths, test_labels = self._scan(self.test_root, classes)
            test = eval_files(test_paths, test_labels)
        return Splits(
            pretrain=ImageFiles(kept, labels[keep], self.load_size),
            pretrain_eval=eval_files(kept, labels[keep]),
            pretrain_targets=labels[keep],
            probe=probe,
            test=test,
            num_classes=num_classes,
        )


class UnlabeledFolder(LongTailDataModule):
    """Every image below ``root`` (recursively), target ``-1``: uncurated pre-training data.

    Probe and test sets (and ``num_classes``, ``class_groups``) are those of ``eval_datamodule``;
    without one, the datamodule has no probe or test set. Note that with an ``eval_datamodule``
    the many / medium / few groups are the eval datamodule's (its own pre-training counts): the
    unlabeled data has no class counts.
    """

    card = DatasetCard(
        name="unlabeled_folder",
        num_classes=0,
        image_size=224,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        group_rule="thirds",
        protocol="all images below root, unlabeled (uncurated pre-training); evaluation on eval_datamodule",
        source="your own images: root/**/*.jpg|png",
        reference="uncurated pre-training: Tian et al. ICCV 2021 (DnC)",
    )

    def __init__(
        self,
        root: str,
        eval_datamodule: LongTailDataModule | None = None,
        load_size: int | None = None,
        bad_images: str = "error",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: folder of images (searched recursively; folder names are not labels).
            eval_datamodule: a labeled datamodule whose probe and test sets evaluate the
                representation; it must use the same ``image_size``.
            load_size: side of the decoded training images; default ``image_size * 8 // 7``.
            bad_images: a file that does not decode, found when the set is built: ``error`` (stop,
                naming it) or ``skip`` (leave it out, with a warning naming every such file).
            **kwargs: view and loader options of :class:`LongTailDataModule`.
        """
        super().__init__(**kwargs)
        check_choice("bad_images", bad_images, BAD_IMAGES)
        self.root = Path(root)
        self.eval_datamodule = eval_datamodule
        self.load_size = check_load_size(load_size, self.image_size)
        self.bad_images = bad_images
        if eval_datamodule is not None and eval_datamodule.image_size != self.image_size:
            raise ValueError(
                f"eval_datamodule has image_size={eval_datamodule.image_size} but this datamodule "
                f"{self.image_size}; build both with the same image_size"
            )

    def build_splits(self) -> Splits:
        if not self.root.is_dir():
            raise DataNotFoundError(f"image folder {self.root} not found: fix root")
        hidden: list[Path] = []
        paths = [str(p) for p in scan_images(self.root, hidden)]
        if hidden:
            warnings.warn(f"{self.root}: skipping {len(hidden)} hidden image file(s) (e.g. {hidden[0]})", stacklevel=2)
        if not paths:
            raise DataNotFoundError(f"no image ({', '.join(IMAGE_EXTENSIONS)}) found below {self.root}: fix root")
        paths = [paths[i] for i in check_images(paths, self.load_size, self.bad_images, str(self.root))]
        if not paths:
            raise DataNotFoundError(f"no image below {self.root} decodes: fix root")
        targets = np.full(len(paths), -1, dtype=np.int64)
        probe, test, num_classes = {}, None, None
        if self.eval_datamodule is not None:
            other = self.eval_datamodule.splits
            probe, test, num_classes = dict(other.probe), other.test, self.eval_datamodule.num_classes
        return Splits(
            pretrain=ImageFiles(paths, targets, self.load_size),
            pretrain_eval=ImageFiles(paths, targets, self.image_size, self.eval_transform),
            pretrain_targets=targets,
            probe=probe,
            test=test,
            num_classes=num_classes,
        )

    @property
    def group_rule(self) -> str:
        if self.eval_datamodule is not None:
            return self.eval_datamodule.group_rule
        return super().group_rule

    @property
    def class_groups(self) -> dict[str, np.ndarray]:
        if self.eval_datamodule is not None:
            return self.eval_datamodule.class_groups
        return super().class_groups
