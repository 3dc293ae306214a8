"""ImageFolderLT (class folders + a profile) and UnlabeledFolder (uncurated images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.digits import DigitsLT
from datamodules.image_folder import ImageFolderLT, UnlabeledFolder
from tests.fixtures import class_color, write_class_folders, write_image

COUNTS = {"apple": 8, "banana": 8, "cherry": 8}


@pytest.fixture
def tree(tmp_path):
    write_class_folders(tmp_path / "train", COUNTS)
    write_class_folders(tmp_path / "test", {"apple": 2, "banana": 1, "cherry": 3})
    return tmp_path


def test_exp_profile_over_folders_and_pixels(tree):
    dm = ImageFolderLT(
        root=str(tree / "train"),
        test_root=str(tree / "test"),
        profile="exp",
        imbalance_ratio=0.25,
        image_size=8,
        batch_size=4,
    )
    dm.setup()
    assert dm.classes == ["apple", "banana", "cherry"]
    assert dm.class_counts.tolist() == [8, 4, 2]  # int(8 * 0.25 ** (r / 2))
    assert dm.num_classes == 3 and len(dm.splits.probe["full"]) == 24 and len(dm.splits.test) == 6
    for i in range(len(dm.splits.pretrain)):
        image, target, index = dm.splits.pretrain[i]
        assert image.shape == (3, 9, 9) and image.dtype == torch.uint8 and index == i
        # PNG is lossless: each image is its class folder's colour
        assert image[:, 0, 0].tolist() == list(class_color(int(target)))
    views, target, index = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert len(views) == 2 and views[0].shape == (4, 3, 8, 8) and views[0].dtype == torch.float32
    image, target, _ = next(iter(dm.test_dataloader()))
    assert image.shape == (6, 3, 8, 8) and target.tolist() == [0, 0, 1, 2, 2, 2]


def test_profiles_none_twin_subsample_and_few_shot(tree):
    root = str(tree / "train")
    assert ImageFolderLT(root=root).class_counts.tolist() == [8, 8, 8]  # profile "none" by default
    assert ImageFolderLT(root=root, profile="exp", imbalance_ratio=0.25, balanced_twin=True).class_counts.tolist() == [
        4,
        4,
        4,
    ]
    assert ImageFolderLT(root=root, profile="step", imbalance_ratio=0.5).class_counts.tolist() == [8, 4, 4]
    assert ImageFolderLT(root=root, profile="balanced", subsample=0.5).class_counts.tolist() == [4, 4, 4]
    dm = ImageFolderLT(root=root, profile="exp", imbalance_ratio=0.25, few_shot=[3])
    assert np.bincount(dm.splits.probe["3shot"].targets.numpy()).tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match="test_dataloader|no test set"):
        dm.test_dataloader()


def test_bad_inputs(tree, tmp_path):
    with pytest.raises(ValueError, match="unknown profile 'zipf'"):
        ImageFolderLT(root=str(tree), profile="zipf")
    with pytest.raises(ValueError, match="balanced_twin"):
        ImageFolderLT(root=str(tree), profile="none", balanced_twin=True)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderLT(root=str(tmp_path / "nowhere")).setup()
    write_image(tree / "test" / "durian" / "0.png", (4, 4), (0, 0, 0))
    with pytest.raises(ValueError, match="durian"):
        ImageFolderLT(root=str(tree / "train"), test_root=str(tree / "test"), profile="none").setup()
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no image"):
        ImageFolderLT(root=str(tmp_path / "empty")).setup()


def test_unlabeled_folder_alone(tmp_path):
    for i, sub in enumerate(["", "x/", "x/y/"]):
        write_image(tmp_path / f"{sub}{i}.jpg", (10, 12), (i * 50, 0, 0))
    (tmp_path / "notes.txt").write_text("not an image")
    dm = UnlabeledFolder(root=str(tmp_path), image_size=8, batch_size=2)
    dm.setup()
    assert len(dm.splits.pretrain) == 3 and dm.splits.pretrain_targets.tolist() == [-1, -1, -1]
    assert dm.probe_sets == [] and dm.stats()["unlabeled"] == 3
    views, target, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert target.tolist() == [-1, -1] and views[0].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="no test set"):
        dm.test_dataloader()


def test_unlabeled_folder_evaluates_on_another_datamodule(tmp_path):
    write_image(tmp_path / "a.png", (9, 9), (1, 2, 3))
    write_image(tmp_path / "b.png", (9, 9), (4, 5, 6))
    digits = DigitsLT(image_size=8)
    dm = UnlabeledFolder(root=str(tmp_path), image_size=8, eval_datamodule=digits)
    assert dm.probe_sets == digits.probe_sets and dm.num_classes == 10
    assert len(dm.splits.test) == len(digits.splits.test)
    assert dm.group_rule == digits.group_rule
    assert {k: v.tolist() for k, v in dm.class_groups.items()} == {
        k: v.tolist() for k, v in digits.class_groups.items()
    }
    image, target, _ = next(iter(dm.probe_dataloader("full")))
    assert image.shape[1:] == (3, 8, 8) and target.min() >= 0
    with pytest.raises(ValueError, match="image_size"):
        UnlabeledFolder(root=str(tmp_path), image_size=16, eval_datamodule=digits)
