"""`lssl data stats` works for every datamodule (fixtures in the real on-disk formats, or the
community's real list files in ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_ssl.cli.main import main
from tests.fixtures import write_cifar10, write_cifar100, write_class_folders, write_fashion_mnist


def stats(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(["data", "stats", *args]) == 0
    return capsys.readouterr().out


def test_cifar10_and_cifar100(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_cifar10(tmp_path, np.repeat(np.arange(10), 100), np.repeat(np.arange(10), 10))
    out = stats(capsys, "cifar10_lt", "--data.root", str(tmp_path), "--data.imbalance_ratio", "0.1")
    # exp profile over 100 per class at ratio 0.1: 100, 77, 59, 46, 35, 27, 21, 16, 12, 10
    assert "pre-training set: 403 images, 10 classes" in out and "test set: 100 images" in out
    write_cifar100(tmp_path, np.repeat(np.arange(100), 20), np.repeat(np.arange(100), 2))
    out = stats(capsys, "cifar100_lt", "--data.root", str(tmp_path), "--data.imbalance_ratio", "0.25")
    assert "100 classes" in out and "many 34 classes" in out


def test_fashion_mnist(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    write_fashion_mnist(
        tmp_path,
        rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
        np.repeat(np.arange(10), 20),
        rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        np.repeat(np.arange(10), 3),
    )
    out = stats(capsys, "fashion_mnist_lt", "--data.root", str(tmp_path), "--data.imbalance_ratio", "0.25")
    assert "10 classes" in out and "test set: 30 images" in out and "probe sets: full 200" in out


def test_image_folder_and_unlabeled(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_class_folders(tmp_path / "train", {"cat": 8, "dog": 8, "fox": 8})
    out = stats(
        capsys,
        "image_folder_lt",
        "--data.root",
        str(tmp_path / "train"),
        "--data.profile",
        "exp",
        "--data.imbalance_ratio",
        "0.25",
    )
    assert "pre-training set: 14 images, 3 classes" in out  # exp over 8 per class at 0.25: 8, 4, 2
    write_class_folders(tmp_path / "flat_src", {"x": 5})
    out = stats(capsys, "unlabeled_folder", "--data.root", str(tmp_path / "flat_src" / "x"))
    assert "(5 unlabeled)" in out


def test_semi_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_cifar10(tmp_path, np.repeat(np.arange(10), 100), np.repeat(np.arange(10), 10))
    out = stats(capsys, "semi_synthetic_halves", "--data.root", str(tmp_path))
    # step profile, ratio 0.01 over 100 per class: 5 x 100 + 5 x 1
    assert "pre-training set: 505 images, 10 classes" in out


@pytest.mark.parametrize(
    "name,folder,expected",
    [
        ("places_lt", "places_lt", "pre-training set: 62500 images, 365 classes"),
        ("imagenet100_lt", "imagenet100_lt", "pre-training set: 12205 images, 100 classes"),
    ],
)
def test_list_file_datasets_from_real_lists(
    shared_data: Path, capsys: pytest.CaptureFixture, name: str, folder: str, expected: str
) -> None:
    out = stats(
        capsys,
        name,
        "--data.root",
        "/nonexistent",
        "--data.lists_dir",
        str(shared_data / "lists" / folder),
        "--data.lists_only",
        "true",
    )
    assert expected in out
    if name == "places_lt":
        assert "many 131 classes" in out and "medium 163 classes" in out and "few 71 classes" in out
