"""Group metrics against hand-counted predictions (SDCLR conventions, docs/protocols.md §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_ssl.eval.metrics import group_accuracy, group_report, per_class_accuracy, rule_key

# 6 classes, 14 test samples. Per class (correct / samples):
#   0: preds 0 0 0 1 -> 3/4    1: preds 1 1 -> 2/2    2: preds 2 0 -> 1/2
#   3: preds 0 0 -> 0/2        4: preds 4 -> 1/1      5: preds 5 4 3 -> 1/3
TARGET = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 5, 5]
PRED = [0, 0, 0, 1, 1, 1, 2, 0, 0, 0, 4, 5, 4, 3]
GROUPS = {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
PER_CLASS = [3 / 4, 1.0, 1 / 2, 0.0, 1.0, 1 / 3]


def test_per_class_accuracy_hand_counted() -> None:
    np.testing.assert_allclose(per_class_accuracy(PRED, TARGET, 6), PER_CLASS)


def test_group_report_hand_counted() -> None:
    report = group_report(torch.tensor(PRED), torch.tensor(TARGET), 6, GROUPS, "thirds", "knn_k200_t0.1")
    # many = mean(3/4, 1) = 7/8 (the pooled accuracy of its 6 samples, 5/6, would be wrong);
    # medium = mean(1/2, 0) = 1/4; few = mean(1, 1/3) = 2/3; their mean is 43/72 and the squared
    # deviations in 72nds are 20², 25², 5², so the population std is sqrt(1050 / 3) / 72.
    expected = {
        "knn_k200_t0.1/acc_top1": 8 / 14,
        "knn_k200_t0.1/acc_mean_class": 43 / 72,
        # per-class deviations from 43/72 in 72nds: 11, 29, -7, -43, 29, -19 -> sum of squares 4062
        "knn_k200_t0.1/std_class": math.sqrt(4062 / 6) / 72,
        "knn_k200_t0.1/thirds/acc_many": 7 / 8,
        "knn_k200_t0.1/thirds/acc_medium": 1 / 4,
        "knn_k200_t0.1/thirds/acc_few": 2 / 3,
        "knn_k200_t0.1/thirds/std": math.sqrt(1050 / 3) / 72,
    }
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-12), key


def test_scores_numpy_and_tensor_inputs_agree() -> None:
    scores = torch.nn.functional.one_hot(torch.tensor(PRED), 6).float() * 3.0
    a = group_report(scores, np.array(TARGET), 6, GROUPS, "thirds", "p")
    b = group_report(np.array(PRED), torch.tensor(TARGET), 6, GROUPS, "thirds", "p")
    assert a == b


def test_class_without_samples_is_nan_and_left_out_of_means() -> None:
    per_class = per_class_accuracy([0, 1, 1], [0, 1, 0], 3)  # class 2 never appears
    assert per_class[0] == 0.5 and per_class[1] == 1.0 and np.isnan(per_class[2])
    report = group_report([0, 1, 1], [0, 1, 0], 3, {"many": [0], "few": [1, 2]}, "thirds", "p")
    assert report["p/acc_mean_class"] == pytest.approx(0.75)
    assert report["p/thirds/acc_few"] == pytest.approx(1.0)  # mean over class 1 only


def test_empty_group_gives_nan_not_a_crash() -> None:
    # CIFAR-100 rho=10 under the ImageNet-LT thresholds has no class with < 20 images.
    groups = {"many": [0, 1, 2], "medium": [3, 4, 5], "few": []}
    report = group_report(PRED, TARGET, 6, groups, "thresholds>100/20-100/<20", "linear")
    assert math.isnan(report["linear/thresholds>100_20-100_<20/acc_few"])
    assert math.isnan(report["linear/thresholds>100_20-100_<20/std"])
    assert report["linear/thresholds>100_20-100_<20/acc_many"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)


def test_group_accuracy_is_mean_of_per_class() -> None:
    acc = group_accuracy(np.array(PER_CLASS), GROUPS)
    assert acc == pytest.approx({"many": 7 / 8, "medium": 1 / 4, "few": 2 / 3})


def test_rule_key() -> None:
    assert rule_key("thirds") == "thirds"
    assert rule_key("thresholds>100/20-100/<20") == "thresholds>100_20-100_<20"
    with pytest.raises(ValueError, match="rule"):
        rule_key("")


@pytest.mark.parametrize(
    ("pred", "target", "num_classes", "groups", "match"),
    [
        ([0, 6], [0, 1], 6, GROUPS, r"pred holds class ids in \[0, 6\]"),
        ([0, 1], [0, -1], 6, GROUPS, r"target holds class ids in \[-1, 0\]"),
        ([0, 1, 2], [0, 1], 6, GROUPS, "differ in length"),
        ([0.5, 1.0], [0, 1], 6, GROUPS, "integer class ids"),
        ([0, 1], [0, 1], 6, {"many": [0, 9]}, r"group 'many' holds class ids in \[0, 9\]"),
        ([0, 1], [0, 1], 6, {}, "groups is empty"),
        ([], [], 6, GROUPS, "pred is empty"),
    ],
)
def test_bad_input_raises(pred, target, num_classes, groups, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        group_report(pred, target, num_classes, groups, "thirds", "p")
