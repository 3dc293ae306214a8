"""Long-tailed datasets defined by the community's list files: ImageNet-LT, ImageNet-100-LT,
Places-LT, iNaturalist 2018.

A list file has one ``relative/path label`` per line (OLTR, Liu et al. CVPR 2019; SDCLR for
ImageNet-100-LT). The lists are read as given, never regenerated (docs/design.md §6). Images live under
``root``; the lists under ``lists_dir`` (default ``root``). A leading ``/`` of a listed path is
ignored, so the OLTR-style ``/a/airfield/...`` also resolves under ``root``.

Groups: many ``> 100`` / medium ``20..100`` / few ``< 20`` training images (Kang et al. 2020;
docs/protocols.md §4).

Without images: ``ImageNetLT(root=..., lists_dir=..., lists_only=True)`` builds every split from
the lists alone (``stats()``, ``class_counts``, ``class_groups`` work; loading an item then raises
``FileNotFoundError``), which is what ``lssl data stats`` needs. In that mode a missing probe or
test list is skipped instead of being an error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datamodules.base import LongTailDataModule, Splits
from datamodules.checks import check_load_size
from datamodules.dataset_card import DatasetCard
from datamodules.errors import DataInputError, DataNotFoundError
from datamodules.file_datasets import ImageFiles, check_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ListOrigins(Sequence[str]):
    """``file:line`` of each entry of a list, made on demand (no string per image kept)."""

    def __init__(self, file: Path, lines: np.ndarray) -> None:
        self.file = str(file)
        self.lines = lines

    def __len__(self) -> int:
        return int(self.lines.size)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return f"{self.file}:{int(self.lines[i])}"


@dataclass
class ImageList:
    """The parsed content of one list file."""

    file: Path
    paths: list[str]  # as listed, leading "/" removed
    targets: np.ndarray  # int64
    lines: np.ndarray  # 1-based line number of each entry

    @property
    def origins(self) -> ListOrigins:
        return ListOrigins(self.file, self.lines)


def read_list(file: str | Path, num_classes: int) -> ImageList:
    """Parse a ``relative/path label`` list; blank lines are skipped.

    Raises:
        FileNotFoundError: the list file is missing.
        ValueError: a malformed line, a label outside ``[0, num_classes)`` or a path listed twice,
            naming the file and line.
    """
    file = Path(file)
    if not file.is_file():
        raise DataNotFoundError(f"list file {file} not found")
    paths: list[str] = []
    targets: list[int] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise DataInputError(f"{file}:{number}: expected 'relative/path label', got {line!r}")
            path, label_text = parts
            try:
                label = int(label_text)
            except ValueError:
                raise DataInputError(f"{file}:{number}: label {label_text!r} is not an integer") from None
            if not 0 <= label < num_classes:
                raise DataInputError(f"{file}:{number}: label {label} is outside [0, {num_classes})")
            path = path.lstrip("/")
            if path in seen:
                raise DataInputError(f"{file}:{number}: {path} is listed twice (first at line {seen[path]})")
            seen[path] = number
            paths.append(path)
            targets.append(label)
            lines.append(number)
    if not paths:
        raise DataInputError(f"list file {file} has no entries")
    return ImageList(file, paths, np.asarray(targets, dtype=np.int64), np.asarray(lines, dtype=np.int64))


class ListFileLTDataModule(LongTailDataModule):
    """Base of the list-file datamodules: a subclass names its lists and sets its card."""

    train_list: ClassVar[str]
    balanced_list: ClassVar[str | None] = None  # the balanced twin of the same size, if published
    probe_lists: ClassVar[tuple[str, ...]]  # candidates for probe "full", in order of preference
    extra_probes: ClassVar[dict[str, str]] = {}  # probe name -> list file, used when present
    test_list: ClassVar[str]

    def __init__(
        self,
        root: str,
        lists_dir: str | None = None,
        balanced_twin: bool = False,
        probe_list: str | None = None,
        load_size: int | None = None,
        verify_files: bool = False,
        lists_only: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: folder the listed image paths are relative to.
            lists_dir: folder of the list files; default ``root``.
            balanced_twin: pre-train on the published balanced list of the same size instead
                (SDCLR's ``D_b`` control; only where the protocol has one).
            probe_list: list file (in ``lists_dir``) of the ``full`` linear-probe set; default the
                first present of the dataset's ``probe_lists`` (see the class docstring).
            load_size: side of the decoded training images the views are cut from; default
                ``image_size * 8 // 7`` (256 for 224). Our choice: the eval resize size.
            verify_files: check at set-up that every listed image exists and decodes, naming
                the first bad one (else each image is checked when it is loaded: a large list is
                slow to decode up front).
            lists_only: build the splits from the lists alone, without images (for statistics).
            **kwargs: view and loader options of :class:`LongTailDataModule`.
        """
        super().__init__(**kwargs)
        if balanced_twin and self.balanced_list is None:
            raise ValueError(
                f"{type(self).__name__} has no published balanced twin list; "
                f"balanced_twin=True is valid for ImageNet100LT only"
            )
        self.root = Path(root)
        self.lists_dir = Path(lists_dir) if lists_dir is not None else self.root
        self.balanced_twin = balanced_twin
        self.probe_list = probe_list
        self.load_size = check_load_size(load_size, self.image_size)
        self.verify_files = verify_files
        self.lists_only = lists_only

    def _read(self, name: str) -> ImageList:
        try:
            return read_list(self.lists_dir / name, self.card.num_classes)
        except FileNotFoundError:
            raise DataNotFoundError(
                f"{self.card.name}: list file {self.lists_dir / name} not found; set lists_dir to the "
                f"folder holding the lists ({self.card.source})"
            ) from None

    def _files(self, lst: ImageList, train: bool) -> ImageFiles:
        paths = [os.path.join(self.root, p) for p in lst.paths]
        if train:
            return ImageFiles(paths, lst.targets, self.load_size, origins=lst.origins)
        return ImageFiles(paths, lst.targets, self.image_size, self.eval_transform, lst.origins)

    def _probe_file(self) -> str | None:
        if self.probe_list is not None:
            return self.probe_list
        present = [n for n in self.probe_lists if (self.lists_dir / n).is_file()]
        if not present:
            if self.lists_only:
                return None
            raise DataNotFoundError(
                f"{self.card.name}: no probe list found in {self.lists_dir} (tried "
                f"{', '.join(self.probe_lists)}); set probe_list or lists_dir"
            )
        if present[0] != self.probe_lists[0]:
            warnings.warn(
                f"{self.card.name}: {self.probe_lists[0]} (the protocol's full-shot probe list) not "
                f"found in {self.lists_dir}; probing on {present[0]} instead",
                stacklevel=2,
            )
        return present[0]

    def build_splits(self) -> Splits:
        if not self.lists_only and not self.root.is_dir():
            raise DataNotFoundError(
                f"{self.card.name}: image root {self.root} not found ({self.card.source}); "
                f"pass lists_only=True to read the lists without images"
            )
        train = self._read(self.balanced_list if self.balanced_twin else self.train_list)
        probe_names = {"full": self._probe_file()}
        probe_names.update({k: v for k, v in self.extra_probes.items() if (self.lists_dir / v).is_file()})
        probe = {k: self._files(self._read(v), False) for k, v in probe_names.items() if v is not None}
        test = None
        if not (self.lists_only and not (self.lists_dir / self.test_list).is_file()):
            test = self._files(self._read(self.test_list), False)
        splits = Splits(
            pretrain=self._files(train, True),
            pretrain_eval=self._files(train, False),
            pretrain_targets=train.targets,
            probe=probe,
            test=test,
            num_classes=self.card.num_classes,
        )
        if self.verify_files:
            for dataset in (splits.pretrain, *probe.values(), test):
                if dataset is not None:
                    dataset.verify()
                    check_images(dataset.paths, dataset.size, "error", str(self.lists_dir))
        return splits


def _card(name: str, num_classes: int, protocol: str, source: str, reference: str) -> DatasetCard:
    return DatasetCard(
        name=name,
        num_classes=num_classes,
        image_size=224,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        group_rule="thresholds",
        protocol=protocol,
        source=source,
        reference=reference,
    )


class ImageNetLT(ListFileLTDataModule):
    """ImageNet-LT (Liu et al. CVPR 2019): 115,846 training images, 1,000 classes, 1280..5 per class.

    Probe ``full``: ``ImageNet_train.txt`` (the whole ImageNet train set, SDCLR's full-shot probe)
    when present in ``lists_dir``, else ``ImageNet_LT_val.txt`` (20 per class, from ImageNet train).
    Extra probes when present: ``1pct`` (SDCLR ``imageNet_sub_balance_train_0.01.txt``, 12/class),
    ``100shot`` (GH ``ImageNet_split1_test_100shot.txt``). Test: ``ImageNet_LT_test.txt`` (50/class).
    """

    card = _card(
        "imagenet_lt",
        1000,
        "OLTR list ImageNet_LT_train.txt (Pareto alpha=6); probe: ImageNet_train.txt if given, else "
        "ImageNet_LT_val.txt (20/class); test: ImageNet_LT_test.txt (= ImageNet val)",
        "images: ILSVRC-2012 from image-net.org (root holds train/ and val/); lists: github "
        "jiawei-ren/BalancedMetaSoftmax-Classification, data/ImageNet_LT",
        "Liu et al. CVPR 2019 (OLTR); groups: Kang et al. ICLR 2020",
    )
    train_list = "ImageNet_LT_train.txt"
    probe_lists = ("ImageNet_train.txt", "ImageNet_LT_val.txt")
    extra_probes = {"1pct": "imageNet_sub_balance_train_0.01.txt", "100shot": "ImageNet_split1_test_100shot.txt"}
    test_list = "ImageNet_LT_test.txt"


class ImageNet100LT(ListFileLTDataModule):
    """ImageNet-100-LT (SDCLR, Jiang et al. ICML 2021): 12,205 images, 100 classes, 1280..6.

    ``balanced_twin=True`` pre-trains on ``imageNet_100_BL_train.txt`` (12,200 = 122/class). Probe
    ``full``: ``ImageNet_100_train.txt`` (SDCLR's full-shot probe set) when present, else
    ``ImageNet_100_val.txt`` (20/class); ``1pct`` = ``imageNet_100_sub_balance_train_0.01.txt``
    (12/class) when present. Test: ``ImageNet_100_test.txt`` (50/class).
    """

    card = _card(
        "imagenet100_lt",
        100,
        "SDCLR list imageNet_100_LT_train.txt (Pareto-like, 1280..6); balanced twin "
        "imageNet_100_BL_train.txt; probe: ImageNet_100_train.txt if given, else ImageNet_100_val.txt",
        "images: ILSVRC-2012 (root holds train/ and val/); lists: github VITA-Group/SDCLR, split/imagenet-100",
        "Jiang et al. ICML 2021 (SDCLR); class set: Tian et al. 2020 (CMC)",
    )
    train_list = "imageNet_100_LT_train.txt"
    balanced_list = "imageNet_100_BL_train.txt"
    probe_lists = ("ImageNet_100_train.txt", "ImageNet_100_val.txt")
    extra_probes = {"1pct": "imageNet_100_sub_balance_train_0.01.txt"}
    test_list = "ImageNet_100_test.txt"


class PlacesLT(ListFileLTDataModule):
    """Places-LT (Liu et al. CVPR 2019): 62,500 images, 365 classes, 4980..5 per class.

    No balanced training list is published: probe ``full`` is ``Places_LT_val.txt`` (20/class,
    from Places365 train). Test: ``Places_LT_test.txt`` (100/class, Places365 val).
    """

    card = _card(
        "places_lt",
        365,
        "OLTR list Places_LT_train.txt; probe: Places_LT_val.txt (20/class; no balanced train list "
        "exists); test: Places_LT_test.txt",
        "images: Places365-Standard from places2.csail.mit.edu (root holds train/ and val/); lists: "
        "github jiawei-ren/BalancedMetaSoftmax-Classification, data/Places_LT",
        "Liu et al. CVPR 2019 (OLTR); groups: Kang et al. ICLR 2020",
    )
    train_list = "Places_LT_train.txt"
    probe_lists = ("Places_LT_val.txt",)
    test_list = "Places_LT_test.txt"


class INaturalist2018(ListFileLTDataModule):
    """iNaturalist 2018 (Van Horn et al. CVPR 2018): 437,513 images, 8,142 classes, 1000..2.

    Its only other list, ``iNaturalist18_val.txt`` (3/class), is the test set, so it cannot also be
    the probe set: probe ``full`` is the (long-tailed) training list itself. Our choice; no
    balanced list exists.
    """

    card = _card(
        "inaturalist2018",
        8142,
        "list iNaturalist18_train.txt (natural long tail); probe: the training list (no balanced list "
        "exists); test: iNaturalist18_val.txt (3/class)",
        "images: github visipedia/inat_comp 2018 (root holds train_val2018/); lists: github "
        "jiawei-ren/BalancedMetaSoftmax-Classification, data/iNaturalist18",
        "Van Horn et al. CVPR 2018; lists: Kang et al. ICLR 2020",
    )
    train_list = "iNaturalist18_train.txt"
    probe_lists = ("iNaturalist18_train.txt",)
    test_list = "iNaturalist18_val.txt"
