"""Published numbers beside the measured ones: a spec's ``report.published`` entries and the
report's table with a ``published`` column and ``measured − published`` (docs/methods.md §16).

A spec carries them under ``report:``, each entry with its source and the setting it was measured
in (so a reader never mistakes a CIFAR-100 number for one measured on the spec's own data)::

    report:
      published:
        - source: "BCL README, 'Results and Pretrained Models' (MediaBrain-SJTU/BCL)"
          setting: "CIFAR-100-LT split 1, ResNet-18, 2000 epochs, Adam feature probe"
          same_setting: false          # default: the published column is marked as another setting
          dataset: CIFAR100LT-SDCLR    # optional: only rows of this dataset label
          values:                      # method label (as in the grid) -> metric -> value in %
            SimCLR: {linear_full/acc_top1: 50.7, linear_100shot/acc_top1: 46.3}

Metric names are the result records' (``linear_full/acc_top1``, ``linear_full/thirds/acc_many``,
``ts_knn1/acc_mean_class``, ...); the measured value is the mean ± sample std over the row's seeds.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

from lightning_ssl.sweep.record import RunRecord
from lightning_ssl.sweep.report import fmt, group_key, markdown_table, mean_std

ENTRY_KEYS = ("source", "setting", "same_setting", "dataset", "values")


@dataclass(frozen=True)
class Published:
    """One published number: ``value`` (%) of ``metric`` for the ``method`` label, from ``source``."""

    method: str
    metric: str
    value: float
    source: str
    setting: str
    same_setting: bool = False
    dataset: str | None = None


def parse_published(block: Any) -> list[Published]:
    """The entries of a spec's ``report.published`` list; a malformed entry is a one-line ValueError."""
    if block is None:
        return []
    if not isinstance(block, list):
        raise ValueError(
            f"report.published must be a list of entries ({', '.join(ENTRY_KEYS)}), got {type(block).__name__}"
        )
    out = []
    for i, entry in enumerate(block):
        where = f"report.published[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a mapping with keys {', '.join(ENTRY_KEYS)}")
        bad = sorted(set(entry) - set(ENTRY_KEYS))
        if bad:
            raise ValueError(f"{where}: unknown key(s) {bad}; valid keys: {', '.join(ENTRY_KEYS)}")
        for key in ("source", "setting"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(
                    f"{where}: '{key}' must say where the numbers come from and in which setting "
                    "they were measured (a non-empty string)"
                )
        values = entry.get("values")
        if not isinstance(values, dict) or not values:
            raise ValueError(f"{where}: 'values' must map method labels to {{metric: value in %}}")
        for method, metrics in values.items():
            if not isinstance(metrics, dict) or not metrics:
                raise ValueError(f"{where}.values.{method}: give {{metric: value in %}}, got {metrics!r}")
            for metric, value in metrics.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                    raise ValueError(f"{where}.values.{method}.{metric}={value!r}: a published accuracy in % (0-100)")
                out.append(
                    Published(
                        str(method),
                        str(metric),
                        float(value),
                        entry["source"],
                        entry["setting"],
                        bool(entry.get("same_setting", False)),
                        entry.get("dataset"),
                    )
                )
    return out


@dataclass(frozen=True)
class PublishedRow:
    """A published number beside the run group it names: the measured mean and std (fractions) over
    ``seeds`` seeds; NaN and 0 seeds when no run group matches."""

    published: Published
    dataset: str
    measured: tuple[float, float]
    seeds: int


def published_rows(records: list[RunRecord], published: list[Published]) -> list[PublishedRow]:
    """One row per published number and matching run group (method label, and dataset label when the
    entry names one): the measured mean ± std over the group's seeds, in %, and the difference of the
    means. A published number with no run group gets a row with nothing measured."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(group_key(r.axes), []).append(r)
    rows = []
    for p in published:
        matched = [
            (dict(key), members)
            for key, members in groups.items()
            if dict(key).get("method") == p.method and (p.dataset is None or dict(key).get("dataset") == p.dataset)
        ]
        if not matched:
            rows.append(PublishedRow(p, p.dataset or "", (math.nan, math.nan), 0))
        for axes, members in matched:
            values = [r.metrics.get(p.metric) for r in members]
            rows.append(
                PublishedRow(
                    p,
                    axes.get("dataset", ""),
                    mean_std([v for v in values if v is not None]),
                    sum(v is not None for v in values),
                )
            )
    return rows


def published_table(records: list[RunRecord], published: list[Published]) -> tuple[str, str, list[str]]:
    """(Markdown, CSV, notes) of the published numbers beside the measured ones. The ``published``
    column is headed as another setting unless every entry says ``same_setting: true``; the notes
    name each source and its setting."""
    rows = published_rows(records, published)
    if not rows:
        return "", "", []
    same = all(p.same_setting for p in published)
    head = "published" if same else "published (another setting)"
    sources = list(dict.fromkeys((p.source, p.setting, p.same_setting) for p in published))
    refs = {s: f"[{i + 1}]" for i, s in enumerate(sources)}
    body, buf = [], io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "method",
            "dataset",
            "metric",
            "seeds",
            "measured_mean",
            "measured_std",
            "published",
            "measured_minus_published",
            "same_setting",
            "source",
        ]
    )
    for row in rows:
        p, (mean, std) = row.published, row.measured
        diff = 100 * mean - p.value if math.isfinite(mean) else math.nan
        body.append(
            [
                p.method,
                str(row.dataset),
                f"`{p.metric}`",
                str(row.seeds),
                fmt(mean, std),
                f"{p.value:.2f}",
                f"{diff:+.2f}" if math.isfinite(diff) else "–",
                refs[(p.source, p.setting, p.same_setting)],
            ]
        )
        writer.writerow(
            [
                p.method,
                row.dataset,
                p.metric,
                row.seeds,
                f"{100 * mean:.4f}" if math.isfinite(mean) else "",
                f"{100 * std:.4f}" if math.isfinite(std) else "",
                p.value,
                f"{diff:.4f}" if math.isfinite(diff) else "",
                p.same_setting,
                p.source,
            ]
        )
    md = markdown_table(
        ["method", "dataset", "metric", "seeds", "measured", head, "measured − published", "source"], body
    )
    notes = [
        f"- {refs[s]} {s[0]}; measured in: {s[1]}"
        + (
            ""
            if s[2]
            else " — **not the setting of this sweep**: the difference says how far this run is from "
            "the paper's setting, not whether the method was reproduced"
        )
        for s in sources
    ]
    return md, buf.getvalue(), notes
