"""Group rules against the group sizes of docs/protocols.md §4."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.groups import class_groups, group_rule_name
from datamodules.profiles import profile_counts


def sizes(groups: dict[str, np.ndarray]) -> tuple[int, int, int]:
    return len(groups["many"]), len(groups["medium"]), len(groups["few"])


def test_thirds_cifar10_major_is_four() -> None:
    counts = profile_counts(10, 5000.0, "exp", 0.01)
    g = class_groups(counts, "thirds")
    assert g["many"].tolist() == [0, 1, 2, 3]
    assert g["medium"].tolist() == [4, 5, 6] and g["few"].tolist() == [7, 8, 9]


@pytest.mark.parametrize(
    "ratio,thresholds,thirds",
    [(0.01, (35, 35, 30), (34, 33, 33)), (0.02, (41, 41, 18), (34, 33, 33)), (0.1, (69, 31, 0), (34, 33, 33))],
)
def test_cifar100_group_sizes(ratio: float, thresholds: tuple, thirds: tuple) -> None:
    counts = profile_counts(100, 500.0, "exp", ratio)
    assert sizes(class_groups(counts, "thresholds")) == thresholds
    assert sizes(class_groups(counts, "thirds")) == thirds


def test_thirds_follow_frequency_not_class_id() -> None:
    counts = np.array([5, 100, 50, 7, 80, 20])
    g = class_groups(counts, "thirds")
    assert g["many"].tolist() == [1, 4] and g["medium"].tolist() == [2, 5] and g["few"].tolist() == [0, 3]


def test_threshold_boundaries() -> None:
    g = class_groups([101, 100, 20, 19], "thresholds")
    assert g["many"].tolist() == [0] and g["medium"].tolist() == [1, 2] and g["few"].tolist() == [3]


def test_rule_names_and_bad_rule() -> None:
    assert group_rule_name("thresholds") == "thresholds>100/20-100/<20"
    with pytest.raises(ValueError, match="thirds, thresholds"):
        class_groups([1, 2, 3], "quartiles")
