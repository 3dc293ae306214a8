"""Fashion-MNIST-LT: the LDAM profile over Fashion-MNIST (Xiao et al. 2017), held in memory.

The files are the standard idx files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte``,
``t10k-...``), parsed here with NumPy. They are looked up in ``root`` and in ``root/FashionMNIST/raw``
(torchvision's download layout); with the default ``root="data"`` also in
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package). A ``root`` given
explicitly is the only place searched: a wrong path is an error, never a silent fall-back to another
copy. They are downloaded with ``torchvision.datasets.FashionMNIST`` when none has them and
``download=True``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd

from datamodules.dataset_card import DatasetCard
from datamodules.errors import DataInputError, DataNotFoundError
from datamodules.in_memory import InMemoryLTDataModule, Source

# Where a system package puts the files (Debian / Ubuntu: apt install dataset-fashion-mnist).
SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
DEFAULT_ROOT = "data"  # the only root that also searches SYSTEM_DIRS
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, optionally gzipped) as a NumPy array.

    Header: two zero bytes, a dtype code, the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes; the data follows in C order.

    Raises:
        ValueError: a bad magic number, or fewer data bytes than the header announces (naming the file).
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile) as err:
        raise DataInputError(f"{path} is a truncated or corrupt gzip file ({err}); delete it and get it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataInputError(f"{path} is not an idx file: magic bytes {raw[:4].hex()} (expected 0000 <type> <ndim>)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataInputError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header < expected:
        raise DataInputError(
            f"{path} is truncated: its header announces shape {shape} ({expected} data bytes) but it "
            f"holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)


def find_idx_files(dirs: list[Path]) -> dict[str, Path] | None:
    """The four Fashion-MNIST files in the first folder of ``dirs`` that has all of them."""
    for d in dirs:
        found = {}
        for key, name in FILES.items():
            for candidate in (d / name, d / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


class FashionMNISTLT(InMemoryLTDataModule):
    """Long-tailed Fashion-MNIST: the LDAM profile (default exp, ratio 0.01, seed 0, class 0 = head)
    over the 60,000 training images (6,000 per class), so 6000, 3597, ..., 60 images per class;
    the 10,000 test images are the test set; probe ``full`` is the whole balanced training set.
    No paper defines a Fashion-MNIST-LT protocol: we apply LDAM's CIFAR recipe."""

    card = DatasetCard(
        name="fashion_mnist_lt",
        num_classes=10,
        image_size=28,
        channels=1,
        mean=(0.2860,),
        std=(0.3530,),
        group_rule="thirds",
        protocol="LDAM exp profile over the 60k training images (img_max 6000, head = class 0, seed 0)",
        source="idx files in root, root/FashionMNIST/raw or /usr/share/datasets/fashion-mnist "
        "(apt install dataset-fashion-mnist); or torchvision.datasets.FashionMNIST (download=True)",
        reference="Xiao, Rasul & Vollgraf 2017 (Fashion-MNIST); profile: Cao et al. 2019 (LDAM)",
    )

    def __init__(self, root: str = "data", download: bool = False, **kwargs: Any) -> None:
        """
        Args:
            root: folder with the idx files (or torchvision's ``FashionMNIST/raw`` below it); the
                default ``data`` also searches the system folder of ``apt install dataset-fashion-mnist``.
            download: when no folder has the files, fetch them into ``root`` with torchvision.
            **kwargs: profile options of :class:`InMemoryLTDataModule` and the view / loader options.
        """
        super().__init__(**kwargs)
        self.root = Path(root)
        self.download = download

    def search_dirs(self) -> list[Path]:
        """``root`` and ``root/FashionMNIST/raw``; the system folders only for the default root."""
        own = [self.root, self.root / "FashionMNIST" / "raw"]
        return own + [Path(d) for d in SYSTEM_DIRS] if self.root == Path(DEFAULT_ROOT) else own

    def load_source(self) -> Source:
        files = find_idx_files(self.search_dirs())
        if files is None and self.download:
            tvd.FashionMNIST(str(self.root), train=True, download=True)
            files = find_idx_files(self.search_dirs())
        if files is None:
            tried = ", ".join(str(d) for d in self.search_dirs())
            raise DataNotFoundError(
                f"Fashion-MNIST idx files ({', '.join(FILES.values())}, optionally .gz) not found in "
                f"root={str(self.root)!r} (searched: {tried}). Fix root, or get the files by (1) "
                f"download=True (--data.download true), (2) apt install dataset-fashion-mnist (then "
                f'root=/usr/share/datasets/fashion-mnist), or (3) python -c "import torchvision; '
                f"torchvision.datasets.FashionMNIST('{self.root}', download=True)\""
            )
        arrays = {k: read_idx(p) for k, p in files.items()}
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise DataInputError(
                    f"{files[f'{split}_images']} / {files[f'{split}_labels']}: shapes {images.shape} and "
                    f"{labels.shape} are not N×H×W images with N labels"
                )
        to_t = torch.from_numpy
        return Source(
            to_t(arrays["train_images"][:, None].copy()),
            arrays["train_labels"].astype(np.int64),
            to_t(arrays["test_images"][:, None].copy()),
            arrays["test_labels"].astype(np.int64),
        )
