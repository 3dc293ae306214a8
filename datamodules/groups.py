"""Many / medium / few class groups, by a named rule.

* ``thirds`` (SDCLR ``exp_analyse.py``, BCL, GH; docs/protocols.md §4): classes sorted by pre-training
  frequency (ties by class id); few = the ``C // 3`` rarest, medium = the next ``C // 3``, many =
  the rest (CIFAR-10: many = 4 classes, 3, 3; CIFAR-100: 34 / 33 / 33).
* ``thresholds`` (Kang et al. 2020, the ImageNet-LT / Places-LT convention; docs/protocols.md §4):
  many ``> 100`` images, medium ``20..100``, few ``< 20``.
* ``none``: no groups (all three empty). A balanced pre-training set (every class the same count:
  ``imbalance_ratio=1.0``, ``profile="balanced"``, a balanced twin) has no frequent or rare class,
  so ``thirds``, which ranks classes by frequency, becomes ``none`` there instead of splitting
  equal classes by class id; the reported metrics are then ``{probe}/none/acc_many`` etc., NaN,
  and a report shows them as missing. ``thresholds`` counts absolute sizes and stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GROUP_RULES = ("thirds", "thresholds", "none")
GROUPS = ("many", "medium", "few")


def group_rule_name(rule: str, many_above: int = 100, few_below: int = 20) -> str:
    """The name under which metrics of this rule are reported (e.g. ``thresholds>100/20-100/<20``)."""
    if rule == "thresholds":
        return f"thresholds>{many_above}/{few_below}-{many_above}/<{few_below}"
    if rule in ("thirds", "none"):
        return rule
    raise ValueError(f"unknown group rule {rule!r}; valid rules: {', '.join(GROUP_RULES)}")


def effective_rule(rule: str, class_counts: Sequence[int] | np.ndarray) -> str:
    """``none`` for ``thirds`` over equal class counts (a balanced set has no many / few classes),
    else ``rule``."""
    counts = np.asarray(class_counts, dtype=np.int64)
    if rule == "thirds" and counts.size and counts.min() == counts.max():
        return "none"
    return rule


def class_groups(
    class_counts: Sequence[int] | np.ndarray,
    rule: str = "thirds",
    many_above: int = 100,
    few_below: int = 20,
) -> dict[str, np.ndarray]:
    """Class ids of the many / medium / few groups of a pre-training set's per-class counts
    (all empty for ``none``, and for ``thirds`` over equal counts: see :func:`effective_rule`)."""
    counts = np.asarray(class_counts, dtype=np.int64)
    group_rule_name(rule, many_above, few_below)  # validates the rule
    if effective_rule(rule, counts) == "none":
        return {g: np.zeros(0, dtype=np.int64) for g in GROUPS}
    if rule == "thresholds":
        return {
            "many": np.flatnonzero(counts > many_above),
            "medium": np.flatnonzero((counts >= few_below) & (counts <= many_above)),
            "few": np.flatnonzero(counts < few_below),
        }
    num = counts.size
    order = np.lexsort((np.arange(num), -counts))  # by count descending, ties by class id
    third = num // 3
    return {
        "many": np.sort(order[: num - 2 * third]),
        "medium": np.sort(order[num - 2 * third : num - third]),
        "few": np.sort(order[num - third :]),
    }
