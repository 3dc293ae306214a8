"""List-file datamodules: the community's real lists (shared/data/lists, docs/protocols.md §2.3-2.5),
list errors, lazy/eager missing-image checks, decoding, and the batch contract on tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.file_datasets import ImageFiles, load_square
from datamodules.list_files import ImageNet100LT, ImageNetLT, INaturalist2018, PlacesLT, read_list
from tests.fixtures import class_color, write_list, write_listed_images


# -- the real lists --------------------------------------------------------------------------------
def test_places_lt_counts_from_the_real_lists(shared_data):
    dm = PlacesLT(
        root=str(shared_data / "no_images"), lists_dir=str(shared_data / "lists" / "places_lt"), lists_only=True
    )
    stats = dm.stats()
    counts = dm.class_counts
    assert stats["pretrain_size"] == 62500 and counts.size == 365
    assert counts.max() == 4980 and counts.min() == 5
    groups = {g: v["classes"] for g, v in stats["groups"].items()}
    assert groups == {"many": 131, "medium": 163, "few": 71}
    # the groups follow the >100 / 20-100 / <20 rule, checked here by brute force
    assert groups["many"] == sum(c > 100 for c in counts) and groups["few"] == sum(c < 20 for c in counts)
    assert stats["probe_sizes"] == {"full": 7300} and stats["test_size"] == 36500
    assert stats["group_rule"].startswith("thresholds")


def test_imagenet100_lt_counts_twin_and_probe_fallback(shared_data):
    lists = str(shared_data / "lists" / "imagenet100_lt")
    dm = ImageNet100LT(root="no_images", lists_dir=lists, lists_only=True)
    with pytest.warns(UserWarning, match="ImageNet_100_train.txt"):
        stats = dm.stats()
    counts = dm.class_counts
    assert stats["pretrain_size"] == 12205 and counts.max() == 1280 and counts.min() == 6
    assert sorted(counts.tolist(), reverse=True)[:5] == [1280, 679, 511, 456, 392]
    assert {g: v["classes"] for g, v in stats["groups"].items()} == {"many": 39, "medium": 48, "few": 13}
    assert stats["probe_sizes"] == {"full": 2000} and stats["test_size"] == 5000
    twin = ImageNet100LT(
        root="no_images", lists_dir=lists, lists_only=True, balanced_twin=True, probe_list="ImageNet_100_val.txt"
    )
    assert twin.class_counts.tolist() == [122] * 100


def test_imagenet_lt_eval_lists_parse(shared_data):
    lists = shared_data / "lists" / "imagenet_lt"
    test = read_list(lists / "ImageNet_LT_test.txt", 1000)
    assert len(test.paths) == 50000 and np.bincount(test.targets).tolist() == [50] * 1000
    assert test.paths[0].startswith("val/") and test.lines[0] == 1
    val = read_list(lists / "ImageNet_LT_val.txt", 1000)
    assert np.bincount(val.targets).tolist() == [20] * 1000
    # the train list is not among the reference files: the error names it and the option to set
    with pytest.raises(FileNotFoundError, match="ImageNet_LT_train.txt.*lists_dir"):
        ImageNetLT(root="no_images", lists_dir=str(lists), lists_only=True).setup()


# -- list errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("a.jpg 0\nb.jpg\n", r"list.txt:2: expected 'relative/path label'"),
        ("a.jpg 0\n\nb.jpg one\n", r"list.txt:3: label 'one' is not an integer"),
        ("a.jpg 0\nb.jpg 3\n", r"list.txt:2: label 3 is outside \[0, 3\)"),
        ("a.jpg -1\n", r"list.txt:1: label -1 is outside"),
        ("a.jpg 0\nb.jpg 1\n/a.jpg 2\n", r"list.txt:3: a.jpg is listed twice \(first at line 1\)"),
        ("\n\n", "has no entries"),
    ],
)
def test_malformed_lists_name_file_and_line(tmp_path, content, pattern):
    (tmp_path / "list.txt").write_text(content)
    with pytest.raises(ValueError, match=pattern):
        read_list(tmp_path / "list.txt", 3)


def test_paths_with_spaces_and_leading_slash(tmp_path):
    (tmp_path / "list.txt").write_text("/dir a/img 1.jpg 2\r\nb.jpg 0\n")
    lst = read_list(tmp_path / "list.txt", 3)
    assert lst.paths == ["dir a/img 1.jpg", "b.jpg"] and lst.targets.tolist() == [2, 0]
    assert list(lst.origins) == [f"{tmp_path / 'list.txt'}:1", f"{tmp_path / 'list.txt'}:2"]


# -- tiny images -----------------------------------------------------------------------------------
def tiny_places(tmp_path: Path, missing: str | None = None) -> tuple[Path, list[tuple[str, int]]]:
    """A Places-LT-shaped tree: 3 classes in the lists (labels 0, 1, 364), JPEG images."""
    root = tmp_path / "places"
    train = [(f"train/c{y}/{i}.jpg", y) for y, n in ((0, 5), (1, 3), (364, 2)) for i in range(n)]
    val = [(f"train/c{y}/v{i}.jpg", y) for y in (0, 1, 364) for i in range(2)]
    test = [(f"val/c{y}/{i}.jpg", y) for y in (0, 1, 364) for i in range(2)]
    for name, entries in (("Places_LT_train.txt", train), ("Places_LT_val.txt", val), ("Places_LT_test.txt", test)):
        write_list(root / name, entries)
        write_listed_images(root, [e for e in entries if e[0] != missing])
    return root, train


def test_items_batch_contract_and_pixels(tmp_path):
    root, train = tiny_places(tmp_path)
    dm = PlacesLT(root=str(root), image_size=16, batch_size=4, verify_files=True)
    dm.setup()
    assert dm.load_size == 18  # 16 * 8 // 7
    image, target, index = dm.splits.pretrain[7]
    assert image.dtype == torch.uint8 and image.shape == (3, 18, 18)
    assert (target.item(), index) == (train[7][1], 7)
    # solid colour per class: the decoded pixels are the class colour (JPEG: within a few levels)
    color = torch.tensor(class_color(train[7][1])).view(3, 1, 1)
    assert (image.int() - color).abs().max() <= 3
    views, target, index = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert len(views) == 2 and all(v.dtype == torch.float32 and v.shape == (4, 3, 16, 16) for v in views)
    assert target.dtype == torch.int64 and index.dtype == torch.int64
    image, target, _ = next(iter(dm.test_dataloader()))
    assert image.dtype == torch.float32 and image.shape == (6, 3, 16, 16)
    assert dm.class_counts[[0, 1, 364]].tolist() == [5, 3, 2] and dm.class_counts.sum() == 10


def test_missing_image_is_reported_lazily_or_at_setup(tmp_path):
    root, train = tiny_places(tmp_path, missing="train/c1/2.jpg")
    dm = PlacesLT(root=str(root), image_size=16)
    dm.setup()  # lazy by default
    with pytest.raises(FileNotFoundError, match=r"c1/2.jpg not found \(listed at .*Places_LT_train.txt:8\)"):
        dm.splits.pretrain[7]
    with pytest.raises(FileNotFoundError, match=r"c1/2.jpg not found \(listed at .*Places_LT_train.txt:8\).*1 of 10"):
        PlacesLT(root=str(root), image_size=16, verify_files=True).setup()


def test_missing_root_and_wrong_twin(tmp_path):
    root, _ = tiny_places(tmp_path)
    with pytest.raises(FileNotFoundError, match="image root .*nowhere.*lists_only=True"):
        PlacesLT(root=str(tmp_path / "nowhere"), lists_dir=str(root)).setup()
    with pytest.raises(ValueError, match="balanced twin"):
        PlacesLT(root=str(root), balanced_twin=True)
    with pytest.raises(ValueError, match="load_size"):
        INaturalist2018(root=str(root), image_size=32, load_size=16)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(OSError, match=f"cannot decode image {garbage} \\(listed at l.txt:4\\)"):
        load_square(garbage, 8, origin="l.txt:4")
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:600])
    with pytest.raises(OSError, match=f"cannot decode image {cut}"):
        ImageFiles([str(cut)], [0], 8)[0]


def test_resize_then_center_crop_by_hand(tmp_path):
    # a 30×10 PNG whose columns encode x: after shorter side -> 5 (15×5), the center 5 columns remain
    array = np.zeros((10, 30, 3), dtype=np.uint8)
    array[:, :, 0] = np.arange(30, dtype=np.uint8)[None, :] * 8
    Image.fromarray(array).save(tmp_path / "wide.png")
    out = load_square(tmp_path / "wide.png", 5)
    assert out.shape == (3, 5, 5)
    ref = np.asarray(Image.fromarray(array).resize((15, 5), Image.BILINEAR, reducing_gap=3.0))[:, 5:10, 0]
    np.testing.assert_array_equal(out[0].numpy(), ref)
    assert out[0, 0].tolist() == sorted(out[0, 0].tolist())  # left-to-right ramp kept, centered
    assert 100 < out[0, 0, 2].item() < 140  # the middle of the 0..232 ramp
