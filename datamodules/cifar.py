"""CIFAR-10-LT and CIFAR-100-LT under the two protocols of the long-tailed SSL literature.

* ``ldam`` (Cao et al., NeurIPS 2019, ``imbalance_cifar.py``; docs/protocols.md §2.1): the profile path of
  :class:`InMemoryLTDataModule` with its defaults (``exp``, ratio 0.01, seed 0, class 0 = head), which
  selects exactly LDAM's indices (12,406 / 10,847 images at rho = 100). Probe ``full`` = the whole
  balanced 50k training set (GH, MTTV, rwSAM).
* ``sdclr`` (Jiang et al., ICML 2021; docs/protocols.md §2.2): the released index files, read as given
  (their within-class sampling cannot be regenerated). Pre-training set ``split{k}_D_i.npy``
  (``split{k}_D_b.npy``, the balanced twin of the same size, with ``balanced_twin=True``); probe
  ``full`` = ``trainIdxList.npy`` (45k / 40k held-in images), probe ``1pct`` = ``split{k}_S_b.npy``.

The images are read from torchvision's on-disk format (python pickle batches); ``download=True``
fetches them with ``torchvision.datasets.CIFAR10/100``.
"""

from __future__ import annotations

import hashlib
import pickle
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision.datasets as tvd

from datamodules.checks import check_choice
from datamodules.dataset_card import DatasetCard
from datamodules.errors import DataInputError, DataNotFoundError
from datamodules.in_memory import InMemoryLTDataModule, Source, few_shot_indices
from datamodules.profiles import LongTailProfile

PROTOCOLS = ("ldam", "sdclr")

# VITA-Group/SDCLR, folder split/, pinned to the commit the protocol notes were checked against.
SDCLR_URL = "https://raw.githubusercontent.com/VITA-Group/SDCLR/34c932ec9c2169a3c615abb1a469c0c8ecadbf86/split"

# md5[:12] of the released files (docs/protocols.md §2.2), checked after a download.
SDCLR_MD5 = {
    "trainIdxList.npy": "5f7467f0a7b0",
    "cifar100_trainIdxList.npy": "62cf0ce5400e",
    **{
        f"split{k}_D_i.npy": m
        for k, m in enumerate(["2eca0a41acdf", "cca93b54cb2b", "49389bc44f34", "0faaa93a0b6e", "eae18ddb9d34"], 1)
    },
    **{
        f"cifar100_split{k}_D_i.npy": m
        for k, m in enumerate(["a1007dab6a4f", "24625bdc24bd", "6b7d2f209b7f", "b3bb0ef5e403", "a0a4da24baed"], 1)
    },
}


def read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, np.ndarray]:
    """Images (uint8 ``N×3×32×32``) and labels (int64) of CIFAR pickle batches, in file order.

    The format of https://www.cs.toronto.edu/~kriz/cifar.html, as torchvision stores it: each file a
    pickled dict with ``data`` (uint8 ``N×3072``, channel-major) and ``labels`` (CIFAR-10) or
    ``fine_labels`` (CIFAR-100).
    """
    images, labels = [], []
    for name in files:
        path = folder / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise DataInputError(
                f"{path} is not a readable CIFAR pickle batch ({err}); delete it and download again"
            ) from err
        if "data" not in entry or label_key not in entry:
            raise DataInputError(f"{path} has keys {sorted(entry)}; expected 'data' and {label_key!r}")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), np.concatenate(labels)


def md5_prefix(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()[:12]


def load_index_file(path: Path, num_source: int) -> np.ndarray:
    """An SDCLR ``.npy`` index file: int64 indices into the official training set."""
    idx = np.load(path)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise DataInputError(f"{path} holds a {idx.dtype} array of shape {idx.shape}; expected 1-d integer indices")
    if idx.size and (idx.min() < 0 or idx.max() >= num_source):
        raise DataInputError(f"{path} has indices outside [0, {num_source}): min {idx.min()}, max {idx.max()}")
    return idx.astype(np.int64)


# profile options the sdclr protocol does not read (its split files fix the set)
SDCLR_IGNORES = ("profile", "imbalance_ratio", "head_order", "img_max", "subsample")


class _CIFARLT(InMemoryLTDataModule):
    """Shared code of :class:`CIFAR10LT` and :class:`CIFAR100LT`."""

    folder: ClassVar[str]
    train_files: ClassVar[list[str]]
    test_files: ClassVar[list[str]]
    label_key: ClassVar[str]
    torchvision_name: ClassVar[str]
    sdclr_prefix: ClassVar[str]  # "" for CIFAR-10, "cifar100_" for CIFAR-100
    sdclr_remote: ClassVar[dict[str, str]]  # remote sub-folder of the split files / of the index lists

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        protocol: str = "ldam",
        sdclr_split: int = 1,
        sdclr_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: folder holding torchvision's ``cifar-10-batches-py`` / ``cifar-100-python``.
            download: fetch the missing images (torchvision) and, for ``protocol="sdclr"`` without
                ``sdclr_dir``, the SDCLR index files (GitHub VITA-Group/SDCLR, ``split/``).
            protocol: ``ldam`` (Cao et al. 2019: profile-built, the profile options below apply) or
                ``sdclr`` (Jiang et al. 2021: fixed index files; the profile options are ignored,
                ``balanced_twin`` picks ``D_b``, ``few_shot`` draws from ``trainIdxList``).
            sdclr_split: which of SDCLR's 5 random splits (1..5); papers report the mean over all 5.
            sdclr_dir: folder holding the SDCLR ``.npy`` files (flat); default
                ``{root}/sdclr_splits/<dataset>``, filled by ``download=True``.
            **kwargs: profile options of :class:`InMemoryLTDataModule` (``profile``,
                ``imbalance_ratio``, ``seed``, ...) and the view / loader options of the base.
        """
        super().__init__(**kwargs)
        check_choice("protocol", protocol, PROTOCOLS)
        if isinstance(sdclr_split, bool) or not isinstance(sdclr_split, int) or not 1 <= sdclr_split <= 5:
            raise ValueError(
                f"sdclr_split={sdclr_split!r} is outside 1..5 (SDCLR released 5 splits); pass e.g. --data.sdclr_split 1"
            )
        if protocol == "sdclr":
            unused = [
                f"{k}={getattr(self.long_tail, k)!r}"
                for k in SDCLR_IGNORES
                if getattr(self.long_tail, k) != getattr(LongTailProfile, k)
            ]
            if unused:
                raise ValueError(
                    f"{', '.join(unused)} shape an LDAM profile, but protocol='sdclr' reads SDCLR's fixed "
                    "index files: drop them, or pass --data.protocol ldam"
                )
        self.root = Path(root)
        self.download = download
        self.protocol = protocol
        self.sdclr_split = sdclr_split
        self.sdclr_dir = Path(sdclr_dir) if sdclr_dir is not None else None

    # -- images -------------------------------------------------------------------------------
    def load_source(self) -> Source:
        folder = self.root / self.folder
        missing = [n for n in self.train_files + self.test_files if not (folder / n).is_file()]
        if missing and self.download:
            for train in (True, False):
                getattr(tvd, self.torchvision_name)(str(self.root), train=train, download=True)
            missing = [n for n in self.train_files + self.test_files if not (folder / n).is_file()]
        if missing:
            raise DataNotFoundError(
                f"{self.card.name}: {folder / missing[0]} not found (root={str(self.root)!r}). Fix root, "
                f"pass download=True (--data.download true), or run "
                f'python -c "import torchvision; torchvision.datasets.{self.torchvision_name}'
                f"('{self.root}', download=True)\""
            )
        train_images, train_labels = read_cifar_batches(folder, self.train_files, self.label_key)
        test_images, test_labels = read_cifar_batches(folder, self.test_files, self.label_key)
        return Source(train_images, train_labels, test_images, test_labels)

    # -- SDCLR index files --------------------------------------------------------------------
    def sdclr_file(self, kind: str) -> Path:
        """Path of an SDCLR file: ``kind`` is ``D_i``, ``D_b``, ``S_b`` or ``trainIdxList``;
        downloaded first when absent and ``download=True``."""
        if kind == "trainIdxList":
            name, remote = f"{self.sdclr_prefix}trainIdxList.npy", self.sdclr_remote["lists"]
        else:
            name, remote = f"{self.sdclr_prefix}split{self.sdclr_split}_{kind}.npy", self.sdclr_remote["splits"]
        folder = self.sdclr_dir or self.root / "sdclr_splits" / self.card.name.removesuffix("_lt")
        path = folder / name
        if path.is_file():
            return path
        if self.download and self.sdclr_dir is None:
            folder.mkdir(parents=True, exist_ok=True)
            url = f"{SDCLR_URL}/{remote}/{name}"
            tmp = path.with_suffix(".part")
            urllib.request.urlretrieve(url, tmp)
            if name in SDCLR_MD5 and md5_prefix(tmp) != SDCLR_MD5[name]:
                tmp.unlink()
                raise DataInputError(f"{url} does not have the expected md5 prefix {SDCLR_MD5[name]}")
            tmp.rename(path)
            return path
        how = (
            f"set sdclr_dir to a folder holding the files of VITA-Group/SDCLR split/{remote}/"
            if self.sdclr_dir is not None
            else "pass download=True to fetch them from GitHub (VITA-Group/SDCLR, split/), or set "
            "sdclr_dir to a folder holding them"
        )
        raise DataNotFoundError(f"SDCLR split file {path} not found in {folder}; {how}")

    def pretrain_indices(self, labels: np.ndarray) -> np.ndarray:
        if self.protocol == "ldam":
            return super().pretrain_indices(labels)
        return load_index_file(self.sdclr_file("D_b" if self.long_tail.balanced_twin else "D_i"), labels.size)

    def probe_indices(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        if self.protocol == "ldam":
            return super().probe_indices(labels)
        pool = load_index_file(self.sdclr_file("trainIdxList"), labels.size)
        sets = {"full": pool, "1pct": load_index_file(self.sdclr_file("S_b"), labels.size)}
        for shots in self.few_shot:
            sets[f"{shots}shot"] = pool[few_shot_indices(labels[pool], shots, self.seed)]
        return sets


class CIFAR10LT(_CIFARLT):
    """CIFAR-10-LT (LDAM or SDCLR protocol; see the module docstring and :class:`_CIFARLT`)."""

    card = DatasetCard(
        name="cifar10_lt",
        num_classes=10,
        image_size=32,
        channels=3,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        group_rule="thirds",
        protocol="ldam: exp profile, head = class 0, img_max 5000, seed 0 (12,406 images at rho=100); "
        "sdclr: split{k}_D_i.npy (11,165 images, img_max 4500, class order permuted per split)",
        source="torchvision.datasets.CIFAR10 (download=True); SDCLR splits: GitHub VITA-Group/SDCLR split/",
        reference="Cao et al. NeurIPS 2019 (LDAM-DRW); Jiang et al. ICML 2021 (SDCLR)",
    )
    folder = "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    test_files = ["test_batch"]
    label_key = "labels"
    torchvision_name = "CIFAR10"
    sdclr_prefix = ""
    sdclr_remote = {"splits": "cifar10_imbSub_with_subsets", "lists": "cifar10"}


class CIFAR100LT(_CIFARLT):
    """CIFAR-100-LT (LDAM or SDCLR protocol; see the module docstring and :class:`_CIFARLT`)."""

    card = DatasetCard(
        name="cifar100_lt",
        num_classes=100,
        image_size=32,
        channels=3,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        group_rule="thirds",
        protocol="ldam: exp profile, head = class 0, img_max 500, seed 0 (10,847 images at rho=100); "
        "sdclr: cifar100_split{k}_D_i.npy (9,754 images, img_max 450, class order permuted per split)",
        source="torchvision.datasets.CIFAR100 (download=True); SDCLR splits: GitHub VITA-Group/SDCLR split/",
        reference="Cao et al. NeurIPS 2019 (LDAM-DRW); Jiang et al. ICML 2021 (SDCLR)",
    )
    folder = "cifar-100-python"
    train_files = ["train"]
    test_files = ["test"]
    label_key = "fine_labels"
    torchvision_name = "CIFAR100"
    sdclr_prefix = "cifar100_"
    sdclr_remote = {"splits": "cifar100_imbSub_with_subsets", "lists": "cifar100"}
