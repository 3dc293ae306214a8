"""Long-tailed evaluation metrics: overall, per-class and many / medium / few accuracy.

Conventions (docs/protocols.md §4):

- every accuracy is a fraction in [0, 1];
- a group's accuracy is the **mean of the per-class accuracies** of its classes, as in SDCLR's
  ``exp_analyse.py`` (``np.mean(classWiseAcc[idxsMajor])``, Jiang et al. ICML 2021) and BCL/GH,
  which reuse it; on a balanced test set this equals the pooled accuracy of the group's samples;
- ``std`` is the population standard deviation ``np.std([many, medium, few])`` of the group
  accuracies (SDCLR's "GroupBalancenessList"); ``std_class`` is ``np.std`` of the per-class
  accuracies (SDCLR's "variance", confirmed by the author in SDCLR issue #2);
- a class with no test sample has accuracy NaN and is left out of means; an empty group (CIFAR-100
  ρ=10 has no class with < 20 images under the ImageNet-LT thresholds) has accuracy NaN, and then
  ``std`` over the groups is NaN too, because the paper's statistic is undefined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_stat_scores

ArrayLike = torch.Tensor | np.ndarray | Sequence[int]


def _as_labels(values: ArrayLike, name: str) -> torch.Tensor:
    """1-D int64 CPU tensor of labels; a 2-D array of scores is reduced by argmax over dim 1."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    tensor = tensor.detach().cpu()
    if tensor.ndim == 2:
        tensor = tensor.argmax(dim=1)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D labels or 2-D scores, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty: nothing to evaluate")
    if tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name} must hold integer class ids, got dtype {tensor.dtype}")
    return tensor.long()


def _check_labels(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in length: {pred.shape[0]} vs {target.shape[0]}")
    for name, t in (("pred", pred), ("target", target)):
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} holds class ids in [{lo}, {hi}], outside the valid range [0, {num_classes - 1}]")


def per_class_accuracy(pred: ArrayLike, target: ArrayLike, num_classes: int) -> np.ndarray:
    """Accuracy of each class (recall of its test samples), shape ``(num_classes,)``, float64.

    ``pred`` is a vector of predicted class ids or a ``N×C`` score matrix (arg-maxed). A class with
    no sample in ``target`` gets NaN (torchmetrics' ``MulticlassAccuracy`` would report 0, which
    reads as a failure). The ratio is taken in float64 from torchmetrics' integer counts.
    """
    pred_t, target_t = _as_labels(pred, "pred"), _as_labels(target, "target")
    _check_labels(pred_t, target_t, num_classes)
    # rows: classes; columns: tp, fp, tn, fn, support
    stats = multiclass_stat_scores(pred_t, target_t, num_classes=num_classes, average=None, validate_args=False).numpy()
    correct, support = stats[:, 0].astype(np.float64), stats[:, 4]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, correct / np.maximum(support, 1), np.nan)


def group_accuracy(per_class: np.ndarray, groups: Mapping[str, Sequence[int] | np.ndarray]) -> dict[str, float]:
    """Mean of the per-class accuracies inside each group (SDCLR convention); NaN if none is defined."""
    num_classes = per_class.shape[0]
    out: dict[str, float] = {}
    for name, ids in groups.items():
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids_arr.size and (ids_arr.min() < 0 or ids_arr.max() >= num_classes):
            raise ValueError(
                f"group {name!r} holds class ids in [{ids_arr.min()}, {ids_arr.max()}], outside "
                f"the valid range [0, {num_classes - 1}]"
            )
        values = per_class[ids_arr]
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if values.size else float("nan")
    return out


def rule_key(rule: str) -> str:
    """The group rule as one metric-name segment: ``/`` becomes ``_`` so loggers do not nest on it.

    ``"thresholds>100/20-100/<20"`` becomes ``"thresholds>100_20-100_<20"``.
    """
    if not rule:
        raise ValueError("rule must be a non-empty name of the group rule, e.g. 'thirds'")
    return rule.replace("/", "_")


def group_report(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    groups: Mapping[str, Sequence[int] | np.ndarray],
    rule: str,
    prefix: str,
) -> dict[str, float]:
    """Overall, per-class-mean and group accuracies of a set of predictions, as logger-ready names.

    Args:
        pred: predicted class ids (``N``) or scores (``N×C``).
        target: true class ids (``N``), all in ``[0, num_classes)``.
        num_classes: number of classes ``C``.
        groups: group name -> class ids, normally ``{"many", "medium", "few"}`` from the
            datamodule's ``class_groups`` (counts of the *pre-training* set, never of the balanced
            probe set: MTTV's released code makes that mistake, docs/protocols.md §4).
        rule: name of the rule that formed the groups ("thirds", "thresholds>100/20-100/<20").
        prefix: names the probe, e.g. ``"knn_k200_t0.1"`` or ``"online_linear"``.

    Returns:
        ``{prefix}/acc_top1`` (sample accuracy), ``{prefix}/acc_mean_class`` (mean per-class
        accuracy), ``{prefix}/std_class`` (population std of per-class accuracies), and, for the
        rule-dependent numbers, ``{prefix}/{rule}/acc_{group}`` for each group and
        ``{prefix}/{rule}/std`` = ``np.std`` of the group accuracies (population std). Values are
        fractions; see the module docstring for NaN cases.
    """
    if not prefix:
        raise ValueError("prefix must name the probe, e.g. 'knn_k200_t0.1', got ''")
    if not groups:
        raise ValueError("groups is empty: pass e.g. {'many': [...], 'medium': [...], 'few': [...]}")
    rule_name = rule_key(rule)
    pred_t, target_t = _as_labels(pred, "pred"), _as_labels(target, "target")
    per_class = per_class_accuracy(pred_t, target_t, num_classes)
    defined = per_class[~np.isnan(per_class)]
    report = {
        f"{prefix}/acc_top1": float((pred_t == target_t).double().mean()),
        f"{prefix}/acc_mean_class": float(defined.mean()),
        f"{prefix}/std_class": float(np.std(defined)),
    }
    by_group = group_accuracy(per_class, groups)
    for name, value in by_group.items():
        report[f"{prefix}/{rule_name}/acc_{name}"] = value
    report[f"{prefix}/{rule_name}/std"] = float(np.std(list(by_group.values())))
    return report
