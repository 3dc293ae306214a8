"""Fashion-MNIST-LT: the idx parser, the file search order, errors and the LDAM profile."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import fashion_mnist
from datamodules.fashion_mnist import FashionMNISTLT, read_idx
from tests.fixtures import write_fashion_mnist, write_idx


def tiny_arrays(per_class: int = 20) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
    images = rng.integers(0, 256, size=(labels.size, 28, 28), dtype=np.uint8)
    return images, labels, images[:30], labels[:30]


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """Hide the Debian package's folder, so that only the test's files are found."""
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (str(tmp_path / "no_system_dir"),))


# -- idx files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_roundtrip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, array)), array)


def test_idx_header_by_hand(tmp_path):
    # magic 0x00000801 (uint8, 1 dim), size 3, then the data
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    assert read_idx(path).tolist() == [7, 8, 9]


def test_idx_bad_magic_and_truncation_name_the_file(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    with pytest.raises(ValueError, match=f"{bad}.*not an idx file"):
        read_idx(bad)
    short = write_idx(tmp_path / "short-idx3-ubyte", np.zeros((4, 5, 5), dtype=np.uint8))
    short.write_bytes(short.read_bytes()[:-7])
    with pytest.raises(ValueError, match=f"{short} is truncated.*100 data bytes.*93"):
        read_idx(short)
    gz = write_idx(tmp_path / "cut-idx3-ubyte.gz", np.zeros((40, 28, 28), dtype=np.uint8))
    gz.write_bytes(gz.read_bytes()[:30])
    with pytest.raises(ValueError, match=f"{gz}"):
        read_idx(gz)


# -- the datamodule --------------------------------------------------------------------------------
def test_profile_counts_pixels_and_test_set(tmp_path, no_system_dirs):
    images, labels, test_images, test_labels = tiny_arrays(20)
    write_fashion_mnist(tmp_path, images, labels, test_images, test_labels, gz=False)
    dm = FashionMNISTLT(root=str(tmp_path), imbalance_ratio=0.1, image_size=28)
    dm.setup()
    # LDAM exp with img_max = 20: int(20 * 0.1 ** (c / 9))
    assert dm.class_counts.tolist() == [int(20 * 0.1 ** (c / 9)) for c in range(10)]
    pre = dm.splits.pretrain
    assert pre.images.shape[1:] == (1, 28, 28) and pre.images.dtype == torch.uint8
    np.testing.assert_array_equal(pre.images[:, 0].numpy(), images[dm.source_indices])
    np.testing.assert_array_equal(dm.splits.test.targets.numpy(), test_labels)
    assert len(dm.splits.probe["full"]) == 200
    views, target, index = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert len(views) == 2 and views[0].dtype == torch.float32 and views[0].shape[-2:] == (28, 28)
    assert target.dtype == torch.int64 and index.dtype == torch.int64


def test_torchvision_layout_is_found(tmp_path, no_system_dirs):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_fashion_mnist(raw, *tiny_arrays(12), gz=True)
    dm = FashionMNISTLT(root=str(tmp_path), profile="balanced")
    assert dm.class_counts.tolist() == [12] * 10


def test_missing_files_list_paths_and_three_remedies(tmp_path, no_system_dirs):
    with pytest.raises(FileNotFoundError) as err:
        FashionMNISTLT(root=str(tmp_path)).setup()
    msg = str(err.value)
    for part in (
        str(tmp_path),
        str(tmp_path / "FashionMNIST" / "raw"),
        "download=True",
        "apt install dataset-fashion-mnist",
        "torchvision.datasets.FashionMNIST",
    ):
        assert part in msg


def test_mismatched_counts_raise(tmp_path, no_system_dirs):
    images, labels, test_images, test_labels = tiny_arrays(10)
    write_fashion_mnist(tmp_path, images, labels[:-1], test_images, test_labels)
    with pytest.raises(ValueError, match="train-images"):
        FashionMNISTLT(root=str(tmp_path)).setup()


def test_download_goes_through_torchvision(tmp_path, no_system_dirs, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeFashionMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append(root)
            write_fashion_mnist(Path(root) / "FashionMNIST" / "raw", *tiny_arrays(10))

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashionMNIST)
    dm = FashionMNISTLT(root=str(tmp_path), download=True, profile="balanced")
    assert dm.class_counts.tolist() == [10] * 10 and calls == [str(tmp_path)]


def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    folder = Path(fashion_mnist.SYSTEM_DIRS[0])
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {folder} (apt install dataset-fashion-mnist)")
    with gzip.open(folder / "train-labels-idx1-ubyte.gz") as f:
        assert f.read(4) == bytes([0, 0, 8, 1])
    dm = FashionMNISTLT(root=str(folder))
    dm.setup()
    assert dm.splits.probe["full"].images.shape == (60000, 1, 28, 28)
    assert dm.splits.test.images.shape == (10000, 1, 28, 28)
    assert dm.class_counts.tolist() == [int(6000 * 0.01 ** (c / 9)) for c in range(10)]
    assert dm.class_counts[0] == 6000 and dm.class_counts[-1] == 60
