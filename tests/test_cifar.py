"""CIFAR-10/100-LT: the pickle reader, the LDAM and SDCLR protocols against the community's files
(docs/protocols.md §2.1-2.2, shared/data/README.md), errors, downloads (mocked) and the batch contract."""

from __future__ import annotations

import gc
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import cifar
from datamodules.cifar import CIFAR10LT, CIFAR100LT, read_cifar_batches
from tests.fixtures import write_cifar10, write_cifar100


@pytest.fixture(autouse=True)
def _free_memory():
    """Datamodules hold reference cycles: collect them after each test (150 MB sources)."""
    yield
    gc.collect()


def md5_12(indices: np.ndarray) -> str:
    return hashlib.md5(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def real_labels(request) -> dict[str, np.ndarray]:
    folder = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "labels"
    if not folder.is_dir():
        pytest.skip(f"reference labels not found at {folder}")
    return {n: np.load(folder / f"{n}_train_labels.npy") for n in ("cifar10", "cifar100")}


@pytest.fixture(scope="module")
def fake_cifar_root(real_labels, tmp_path_factory) -> Path:
    """CIFAR-10 and CIFAR-100 on disk with the real training labels and all-zero images."""
    root = tmp_path_factory.mktemp("cifar_real_labels")
    write_cifar10(root, real_labels["cifar10"], np.arange(20) % 10)
    write_cifar100(root, real_labels["cifar100"], np.arange(200) % 100)
    return root


@pytest.fixture
def tiny_cifar(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """CIFAR-10 with 40 random training images per class (400) and 10 test images."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), 40))
    images = rng.integers(0, 256, size=(400, 3, 32, 32), dtype=np.uint8)
    write_cifar10(tmp_path, labels, np.arange(10), images, images[:10])
    return tmp_path, labels, images


# -- reader ----------------------------------------------------------------------------------------
def test_pickle_reader_keeps_order_pixels_and_labels(tiny_cifar):
    root, labels, images = tiny_cifar
    got_images, got_labels = read_cifar_batches(
        root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels"
    )
    assert got_images.dtype == torch.uint8 and got_images.shape == (400, 3, 32, 32)
    np.testing.assert_array_equal(got_images.numpy(), images)
    np.testing.assert_array_equal(got_labels, labels)


def test_cifar100_reader_uses_fine_labels(tmp_path):
    fine = np.arange(300) % 100
    write_cifar100(tmp_path, fine, fine[:100])
    _, got = read_cifar_batches(tmp_path / "cifar-100-python", ["train"], "fine_labels")
    np.testing.assert_array_equal(got, fine)


def test_corrupt_batch_names_the_file(tiny_cifar):
    root = tiny_cifar[0]
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x05garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        CIFAR10LT(root=str(root), imbalance_ratio=0.5).setup()


# -- LDAM protocol ---------------------------------------------------------------------------------
LDAM_CHECKS = [  # (class, ratio, N, md5[:12]) from shared/data/README.md
    (CIFAR10LT, 0.01, 12406, "2c6d68a4dc2c"),
    (CIFAR10LT, 0.02, 13996, "a8883e6578ef"),
    (CIFAR10LT, 0.1, 20431, "3e04b4b432eb"),
    (CIFAR100LT, 0.01, 10847, "8c380ca791fc"),
    (CIFAR100LT, 0.02, 12608, "94d575c2ea60"),
    (CIFAR100LT, 0.1, 19573, "d563a6a6a557"),
]
FIRST5 = {CIFAR10LT: [4030, 38518, 48266, 45556, 6312], CIFAR100LT: [9470, 27272, 30172, 43691, 45171]}


@pytest.mark.parametrize(("cls", "ratio", "n", "md5"), LDAM_CHECKS)
def test_ldam_indices_match_the_published_md5(fake_cifar_root, cls, ratio, n, md5):
    dm = cls(root=str(fake_cifar_root), imbalance_ratio=ratio)
    dm.setup()
    assert len(dm.splits.pretrain) == n
    assert dm.source_indices[:5].tolist() == FIRST5[cls]
    assert md5_12(dm.source_indices) == md5
    assert len(dm.splits.probe["full"]) == 50000  # the whole balanced training set
    assert dm.splits.pretrain.targets.tolist() == dm.splits.pretrain_targets.tolist()


def test_ldam_cifar10_counts_and_thirds(fake_cifar_root):
    dm = CIFAR10LT(root=str(fake_cifar_root))
    assert dm.class_counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert dm.class_counts.sum() == 12406
    groups = dm.class_groups  # SDCLR thirds: many = the 4 largest classes
    assert groups["many"].tolist() == [0, 1, 2, 3]
    assert groups["medium"].tolist() == [4, 5, 6] and groups["few"].tolist() == [7, 8, 9]


def test_ldam_cifar100_counts(fake_cifar_root):
    counts = CIFAR100LT(root=str(fake_cifar_root)).class_counts
    assert counts.sum() == 10847
    assert counts[:10].tolist() == [500, 477, 455, 434, 415, 396, 378, 361, 344, 328]
    assert counts[-4:].tolist() == [5, 5, 5, 5]


def test_step_and_pareto_profiles_on_real_labels(real_labels, tmp_path):
    labels = real_labels["cifar10"]
    step = CIFAR10LT(root=str(tmp_path), profile="step").pretrain_indices(labels)
    assert np.bincount(labels[step]).tolist() == [5000] * 5 + [50] * 5  # 25,250 (docs/protocols.md §2.1)
    pareto = CIFAR10LT(root=str(tmp_path), profile="pareto").pretrain_indices(labels)
    counts = np.bincount(labels[pareto], minlength=10)
    # the rank-size law written out: n_r = int(5000 * 0.01 ** (ln(r+1) / ln 10))
    expected = [int(5000 * 0.01 ** (np.log(r + 1) / np.log(10))) for r in range(10)]
    assert counts.tolist() == expected
    assert counts[0] == 5000 and counts[-1] == 50
    # steeper head drop than exp: class 1 keeps far fewer images than exp's 2997
    assert counts[1] < 2997 and np.all(np.diff(counts) <= 0)


def test_balanced_twin_has_the_same_size(real_labels, tmp_path):
    labels = real_labels["cifar100"]
    twin = CIFAR100LT(root=str(tmp_path), balanced_twin=True).pretrain_indices(labels)
    assert np.bincount(labels[twin]).tolist() == [108] * 100  # 10,847 // 100


# -- SDCLR protocol --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdclr_dirs() -> dict[str, Path]:
    folder = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "splits" / "sdclr"
    if not folder.is_dir():
        pytest.skip(f"SDCLR split files not found at {folder}")
    return {"cifar10": folder / "cifar10", "cifar100": folder / "cifar100"}


def test_sdclr_cifar10_split1(fake_cifar_root, sdclr_dirs, real_labels):
    dm = CIFAR10LT(root=str(fake_cifar_root), protocol="sdclr", sdclr_dir=str(sdclr_dirs["cifar10"]))
    dm.setup()
    d_i = sdclr_dirs["cifar10"] / "split1_D_i.npy"
    assert cifar.md5_prefix(d_i) == "2eca0a41acdf"  # the file is SDCLR's (docs/protocols.md §2.2)
    np.testing.assert_array_equal(dm.source_indices, np.load(d_i))  # read as given, order kept
    assert len(dm.splits.pretrain) == 11165
    counts = dm.class_counts
    assert sorted(counts.tolist(), reverse=True) == [4500, 2697, 1617, 969, 581, 348, 208, 125, 75, 45]
    head_to_tail = np.lexsort((np.arange(10), -counts)).tolist()
    assert head_to_tail == [6, 8, 4, 1, 7, 0, 3, 2, 5, 9]  # docs/protocols.md §2.2, split 1
    assert dm.class_groups["many"].tolist() == [1, 4, 6, 8]
    assert dm.probe_sets == ["full", "1pct"]
    assert len(dm.splits.probe["full"]) == 45000
    one_pct = dm.splits.probe["1pct"].targets.numpy()
    assert np.bincount(one_pct).tolist() == [45] * 10
    # the targets come from the pickles: they agree with the reference labels
    np.testing.assert_array_equal(dm.splits.pretrain_targets, real_labels["cifar10"][dm.source_indices])


def test_sdclr_balanced_twin_and_split_choice(fake_cifar_root, sdclr_dirs):
    d = str(sdclr_dirs["cifar10"])
    twin = CIFAR10LT(root=str(fake_cifar_root), protocol="sdclr", sdclr_dir=d, balanced_twin=True)
    assert twin.class_counts.tolist() == [1116] * 10
    split3 = CIFAR10LT(root=str(fake_cifar_root), protocol="sdclr", sdclr_dir=d, sdclr_split=3)
    split3.setup()
    assert split3.sdclr_file("D_i").name == "split3_D_i.npy"
    assert cifar.md5_prefix(split3.sdclr_file("D_i")) == "49389bc44f34"
    np.testing.assert_array_equal(split3.source_indices, np.load(sdclr_dirs["cifar10"] / "split3_D_i.npy"))


def test_sdclr_cifar100(fake_cifar_root, sdclr_dirs):
    d = str(sdclr_dirs["cifar100"])
    dm = CIFAR100LT(root=str(fake_cifar_root), protocol="sdclr", sdclr_dir=d, few_shot=[10])
    dm.setup()
    assert cifar.md5_prefix(dm.sdclr_file("D_i")) == "a1007dab6a4f"
    np.testing.assert_array_equal(dm.source_indices, np.load(sdclr_dirs["cifar100"] / "cifar100_split1_D_i.npy"))
    assert len(dm.splits.pretrain) == 9754 and dm.class_counts.max() == 450 and dm.class_counts.min() == 4
    assert len(dm.splits.probe["full"]) == 40000
    assert np.bincount(dm.splits.probe["1pct"].targets.numpy()).tolist() == [4] * 100
    assert np.bincount(dm.splits.probe["10shot"].targets.numpy()).tolist() == [10] * 100
    twin = CIFAR100LT(root=str(fake_cifar_root), protocol="sdclr", sdclr_dir=d, balanced_twin=True)
    assert twin.class_counts.tolist() == [97] * 100


def test_sdclr_download_fetches_pinned_files_and_checks_md5(tiny_cifar, sdclr_dirs, monkeypatch):
    root = tiny_cifar[0]
    fetched = []

    def fake_urlretrieve(url: str, dest: Path) -> None:
        fetched.append(url)
        shutil.copy(sdclr_dirs["cifar10"] / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(cifar.urllib.request, "urlretrieve", fake_urlretrieve)
    dm = CIFAR10LT(root=str(root), protocol="sdclr", download=True)
    path = dm.sdclr_file("D_i")
    assert path == root / "sdclr_splits" / "cifar10" / "split1_D_i.npy"
    assert fetched == [f"{cifar.SDCLR_URL}/cifar10_imbSub_with_subsets/split1_D_i.npy"]
    assert dm.sdclr_file("trainIdxList").name == "trainIdxList.npy"
    assert fetched[-1] == f"{cifar.SDCLR_URL}/cifar10/trainIdxList.npy"
    dm.sdclr_file("D_i")  # now on disk: not fetched again
    assert len(fetched) == 2

    def corrupt(url: str, dest: Path) -> None:
        with open(dest, "wb") as f:
            np.save(f, np.arange(5))

    monkeypatch.setattr(cifar.urllib.request, "urlretrieve", corrupt)
    dm2 = CIFAR10LT(root=str(root), protocol="sdclr", download=True, sdclr_split=2)
    with pytest.raises(ValueError, match="md5"):
        dm2.sdclr_file("D_i")
    assert not (root / "sdclr_splits" / "cifar10" / "split2_D_i.npy").exists()


# -- errors ----------------------------------------------------------------------------------------
def test_missing_cifar_names_path_and_remedy(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*download=True"):
        CIFAR10LT(root=str(tmp_path / "nowhere")).setup()
    with pytest.raises(FileNotFoundError, match="torchvision.datasets.CIFAR100"):
        CIFAR100LT(root=str(tmp_path)).setup()


def test_missing_sdclr_files_name_the_directory_and_option(tiny_cifar):
    root = tiny_cifar[0]
    with pytest.raises(FileNotFoundError, match=r"sdclr_splits/cifar10.*download=True"):
        CIFAR10LT(root=str(root), protocol="sdclr").setup()
    with pytest.raises(FileNotFoundError, match="set sdclr_dir"):
        CIFAR10LT(root=str(root), protocol="sdclr", sdclr_dir=str(root)).setup()


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="protocol"):
        CIFAR10LT(root=str(tmp_path), protocol="bbn")
    with pytest.raises(ValueError, match="1..5"):
        CIFAR10LT(root=str(tmp_path), sdclr_split=6)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            write_cifar10(Path(root), np.arange(100) % 10, np.arange(10))

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    dm = CIFAR10LT(root=str(tmp_path), download=True, imbalance_ratio=0.5)
    assert dm.class_counts.tolist() == [int(10 * 0.5 ** (c / 9)) for c in range(10)]
    assert calls and all(c[0] == str(tmp_path) and c[2] for c in calls)


# -- batch contract --------------------------------------------------------------------------------
def test_train_batch_contract_through_on_after_batch_transfer(tiny_cifar):
    root, labels, images = tiny_cifar
    dm = CIFAR10LT(root=str(root), imbalance_ratio=0.1, batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].dtype == torch.uint8 and batch[0].shape == (16, 3, 32, 32)
    views, target, index = dm.on_after_batch_transfer(batch, 0)
    assert isinstance(views, list) and len(views) == 2
    for v in views:
        assert v.dtype == torch.float32 and v.shape == (16, 3, 32, 32)
    assert target.dtype == torch.int64 and index.dtype == torch.int64
    # index is the position in the pre-training set; target and pixels agree with the source
    src = dm.source_indices[index.numpy()]
    np.testing.assert_array_equal(target.numpy(), labels[src])
    np.testing.assert_array_equal(batch[0].numpy(), images[src])
    image, target, index = next(iter(dm.probe_dataloader("full")))
    assert image.dtype == torch.float32 and image.shape[1:] == (3, 32, 32)
    assert index.tolist() == list(range(len(index)))
