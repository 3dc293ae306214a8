"""Long-tail profiles against the exact counts of docs/protocols.md §2.1 and the LDAM md5 checks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from datamodules.profiles import (
    LongTailProfile,
    head_to_tail_order,
    long_tail_indices,
    profile_counts,
)

CIFAR10_R100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CIFAR10_R50 = [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]
CIFAR10_R10 = [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]


def md5_12(idx: np.ndarray) -> str:
    return hashlib.md5(idx.astype(np.int64).tobytes()).hexdigest()[:12]


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


@pytest.mark.parametrize("ratio,expected", [(0.01, CIFAR10_R100), (0.02, CIFAR10_R50), (0.1, CIFAR10_R10)])
def test_exp_counts_cifar10(ratio: float, expected: list[int]) -> None:
    assert profile_counts(10, 5000.0, "exp", ratio).tolist() == expected


def test_exp_counts_cifar100_totals() -> None:
    assert profile_counts(100, 500.0, "exp", 0.01).sum() == 10_847
    assert profile_counts(100, 500.0, "exp", 0.02).sum() == 12_608
    assert profile_counts(100, 500.0, "exp", 0.1).sum() == 19_573
    head = profile_counts(100, 500.0, "exp", 0.01)[:5].tolist()
    assert head == [500, 477, 455, 434, 415]


def test_step_counts() -> None:
    assert profile_counts(10, 5000.0, "step", 0.01).tolist() == [5000] * 5 + [50] * 5
    assert profile_counts(10, 5000.0, "step", 0.1).sum() == 27_500
    assert profile_counts(100, 500.0, "step", 0.01).sum() == 25_250


def test_pareto_shape() -> None:
    counts = profile_counts(100, 1280.0, "pareto", 5 / 1280)
    assert counts[0] == 1280 and counts[-1] == 5
    assert np.all(np.diff(counts) <= 0)
    # a rank-size (Zipf) law: log count is linear in log rank, slope ln(ratio)/ln(C)
    slope = np.polyfit(np.log(np.arange(1, 101)), np.log(counts + 0.5), 1)[0]
    assert slope == pytest.approx(np.log(5 / 1280) / np.log(100), abs=0.02)
    # the steep head drop of ImageNet-100-LT (1280 -> 679): the second class has about half
    assert 0.4 < counts[1] / counts[0] < 0.6


def test_selection_follows_counts_and_order() -> None:
    labels = balanced_labels(10, 500)
    idx = long_tail_indices(labels, LongTailProfile("exp", 0.01))
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.tolist() == profile_counts(10, 500.0, "exp", 0.01).tolist()
    assert len(np.unique(idx)) == len(idx)
    # class blocks in class order
    assert np.all(np.diff(labels[idx]) >= 0)


def test_permuted_head_order_is_a_seeded_permutation() -> None:
    labels = balanced_labels(10, 500)
    order = head_to_tail_order(10, "permuted", seed=3)
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    counts = np.bincount(
        labels[long_tail_indices(labels, LongTailProfile(head_order="permuted", seed=3))], minlength=10
    )
    assert counts[order].tolist() == profile_counts(10, 500.0, "exp", 0.01).tolist()
    assert head_to_tail_order(10, "permuted", seed=3).tolist() == order.tolist()


def test_subsample_and_balanced_twin() -> None:
    labels = balanced_labels(10, 5000)
    lt = long_tail_indices(labels, LongTailProfile("exp", 0.01, subsample=0.5))
    assert np.bincount(labels[lt]).tolist() == [int(c * 0.5) for c in CIFAR10_R100]
    twin = long_tail_indices(labels, LongTailProfile("exp", 0.01, balanced_twin=True))
    assert np.bincount(labels[twin]).tolist() == [12_406 // 10] * 10


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_ratio_outside_unit_interval_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"imbalance_ratio=.* outside \(0, 1\]"):
        LongTailProfile("exp", ratio)


def test_empty_class_is_refused_with_numbers() -> None:
    with pytest.raises(ValueError, match=r"leaves class\(es\) \[8, 9\] empty"):
        long_tail_indices(balanced_labels(10, 50), LongTailProfile("exp", 0.01))  # 50 * 0.01 ** (8/9) = 0.83 -> 0


def test_unknown_profile_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="exp, step, pareto, balanced"):
        LongTailProfile("zipf")


def test_profile_larger_than_class_is_refused() -> None:
    with pytest.raises(ValueError, match="class 0 has 50 examples but the profile asks for 100"):
        long_tail_indices(balanced_labels(10, 50), LongTailProfile("exp", 0.5, img_max=100))


LDAM = {
    "cifar10": {
        0.01: (12_406, [4030, 38518, 48266, 45556, 6312], "2c6d68a4dc2c"),
        0.02: (13_996, None, "a8883e6578ef"),
        0.1: (20_431, None, "3e04b4b432eb"),
    },
    "cifar100": {
        0.01: (10_847, [9470, 27272, 30172, 43691, 45171], "8c380ca791fc"),
        0.02: (12_608, None, "94d575c2ea60"),
        0.1: (19_573, None, "d563a6a6a557"),
    },
}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("ratio", [0.01, 0.02, 0.1])
def test_ldam_indices_match_checksums(shared_data, name: str, ratio: float) -> None:
    labels = np.load(shared_data / "labels" / f"{name}_train_labels.npy")
    idx = long_tail_indices(labels, LongTailProfile("exp", ratio, seed=0))
    n, first, md5 = LDAM[name][ratio]
    assert len(idx) == n
    first = first or LDAM[name][0.01][1]
    assert idx[:5].tolist() == first
    assert md5_12(idx) == md5
