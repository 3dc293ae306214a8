"""Writers of tiny datasets in the real on-disk formats, for tests (nothing is downloaded).

* CIFAR: torchvision's python pickle batches (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``, ``batches.meta``; ``cifar-100-python/train``, ``test``, ``meta``).
* Fashion-MNIST: idx files (``train-images-idx3-ubyte[.gz]``, ...).
* Image files: class-folder trees and ``relative/path label`` list files with tiny JPEG/PNG images.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_SHAPE = (3, 32, 32)


def _cifar_data(images: np.ndarray | None, n: int) -> np.ndarray:
    """``N×3072`` uint8 rows; zeros (a broadcast view, no memory) when ``images`` is None."""
    if images is None:
        return np.broadcast_to(np.zeros(1, dtype=np.uint8), (n, 3072))
    images = np.asarray(images, dtype=np.uint8)
    assert images.shape == (n, *CIFAR_SHAPE), images.shape
    return images.reshape(n, 3072)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_cifar10(
    root: Path,
    train_labels: Sequence[int] | np.ndarray,
    test_labels: Sequence[int] | np.ndarray,
    train_images: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
) -> Path:
    """``root/cifar-10-batches-py`` with the training set cut into 5 batches (in order).
    Images are zeros when not given. Returns ``root``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = np.asarray(train_labels, dtype=np.int64)
    data = _cifar_data(train_images, train_labels.size)
    bounds = np.linspace(0, train_labels.size, 6).astype(int)
    for b in range(5):
        lo, hi = bounds[b], bounds[b + 1]
        _dump(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": train_labels[lo:hi].tolist(),
                "data": np.ascontiguousarray(data[lo:hi]),
                "filenames": [f"img_{i}.png" for i in range(lo, hi)],
            },
        )
    test_labels = np.asarray(test_labels, dtype=np.int64)
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test_labels.tolist(),
            "data": np.ascontiguousarray(_cifar_data(test_images, test_labels.size)),
            "filenames": [f"test_{i}.png" for i in range(test_labels.size)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072})
    return Path(root)


def write_cifar100(
    root: Path,
    train_labels: Sequence[int] | np.ndarray,
    test_labels: Sequence[int] | np.ndarray,
    train_images: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` (fine labels as given, coarse = fine // 5)."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels, images in (("train", train_labels, train_images), ("test", test_labels, test_images)):
        labels = np.asarray(labels, dtype=np.int64)
        _dump(
            folder / name,
            {
                "filenames": [f"{name}_{i}.png" for i in range(labels.size)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": labels.tolist(),
                "coarse_labels": (labels // 5).tolist(),
                "data": np.ascontiguousarray(_cifar_data(images, labels.size)),
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)],
        },
    )
    return Path(root)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An idx file of a uint8 array (gzipped when ``path`` ends with ``.gz``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_fashion_mnist(
    folder: Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    gz: bool = True,
) -> Path:
    """The four idx files of Fashion-MNIST in ``folder``."""
    ext = ".gz" if gz else ""
    write_idx(Path(folder) / f"train-images-idx3-ubyte{ext}", train_images)
    write_idx(Path(folder) / f"train-labels-idx1-ubyte{ext}", train_labels)
    write_idx(Path(folder) / f"t10k-images-idx3-ubyte{ext}", test_images)
    write_idx(Path(folder) / f"t10k-labels-idx1-ubyte{ext}", test_labels)
    return Path(folder)


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct solid RGB colour per class (so a test can read the class off the pixels)."""
    return (20 + 23 * label) % 256, (200 - 17 * label) % 256, (60 + 41 * label) % 256


def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    """A solid-colour image of ``size`` = (width, height); the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_class_folders(
    root: Path,
    counts: dict[str, int],
    size: tuple[int, int] = (12, 10),
    ext: str = ".png",
) -> dict[str, list[Path]]:
    """``root/<class>/<i><ext>``: ``counts[class]`` images of class ``sorted(counts).index(class)``'s colour."""
    out = {}
    for c, name in enumerate(sorted(counts)):
        out[name] = [
            write_image(Path(root) / name / f"{i:03d}{ext}", size, class_color(c)) for i in range(counts[name])
        ]
    return out


def write_list(path: Path, entries: Sequence[tuple[str, int]]) -> Path:
    """A ``relative/path label`` list file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {y}\n" for p, y in entries))
    return path


def write_listed_images(
    root: Path,
    entries: Sequence[tuple[str, int]],
    sizes: Sequence[tuple[int, int]] = ((20, 14), (14, 22)),
) -> None:
    """The images of list ``entries`` under ``root`` (JPEG/PNG by suffix), coloured by class and
    cycling through ``sizes`` (non-square, both orientations)."""
    for i, (p, y) in enumerate(entries):
        write_image(Path(root) / p.lstrip("/"), sizes[i % len(sizes)], class_color(y))


TINY_SIMCLR = (
    "--model SimCLR --model.backbone resnet_tiny --model.proj_hidden_dim 16 --model.proj_output_dim 8 "
    "--data DigitsLT --data.batch_size 64"
).split()


def tiny_simclr_fit(epochs: int, *extra: str) -> list[str]:
    """The ``lssl fit`` argv of a tiny SimCLR on Digits-LT on the CPU for ``epochs`` epochs, then
    ``extra``: what the resume and preemption tests run."""
    return ["fit", *TINY_SIMCLR, "--trainer.max_epochs", str(epochs), "--trainer.accelerator", "cpu", *extra]
