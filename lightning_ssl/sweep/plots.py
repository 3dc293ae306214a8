"""PNG plots of a sweep (matplotlib, Agg): per-class accuracy vs class frequency, many/medium/few
bars, and the robustness gap vs sample size (Liu et al., ICLR 2022, Figures 1-2)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lightning_ssl.sweep.report import DEFAULT_METRIC, GROUPS, probe_values, robustness_rows  # noqa: E402


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _long_tailed(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Long-tailed runs (not balanced twins) by (dataset, profile, ratio, subsample)."""
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["axes"].get("balanced_twin"):
            continue
        key = tuple(str(r["axes"].get(k, "")) for k in ("dataset", "profile", "imbalance_ratio", "subsample"))
        out[key].append(r)
    return out


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def per_class_plot(records: list[dict[str, Any]], path: Path, probe: str) -> Path:
    """Per-class accuracy (mean over seeds) against the class's pre-training count, one line per method."""
    fig, ax = plt.subplots(figsize=(6, 4))
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if probe in r.get("per_class", {}):
            by_method[r["method"]].append(r)
    for method, runs in by_method.items():
        counts = np.asarray(runs[0]["evaluation"]["class_counts"], dtype=float)
        acc = np.mean([r["per_class"][probe] for r in runs], axis=0)
        order = np.argsort(-counts)
        ax.plot(counts[order], 100 * acc[order], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("pre-training images of the class")
    ax.set_ylabel(f"{probe} accuracy (%)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def group_bars(records: list[dict[str, Any]], path: Path, probe: str) -> Path:
    """Many / medium / few accuracy (mean over seeds) per method."""
    by_method: dict[str, list[dict[str, float | None]]] = defaultdict(list)
    for r in records:
        by_method[r["method"]].append(probe_values(r["metrics"], probe))
    methods = list(by_method)
    fig, ax = plt.subplots(figsize=(max(5, len(methods)), 4))
    width = 0.8 / len(GROUPS)
    for i, g in enumerate(GROUPS):
        means = [100 * np.nanmean([v.get(g) if v.get(g) is not None else np.nan for v in by_method[m]]) for m in methods]
        ax.bar(np.arange(len(methods)) + i * width, means, width, label=g)
    ax.set_xticks(np.arange(len(methods)) + width)
    ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{probe} accuracy (%)")
    ax.legend()
    return _save(fig, path)


def gap_plot(records: list[dict[str, Any]], path: Path, metric: str) -> Path | None:
    """Relative gap Δ against the pre-training size n, one line per method (and evaluation)."""
    rows = robustness_rows(records, metric)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for g in rows:
        label = f"{g.axes.get('method')} {g.evaluation} {g.axes.get('dataset', '')} r={g.axes.get('imbalance_ratio', '')}"
        lines[label].append((g.num_pretrain, 100 * g.gap[0], 100 * np.nan_to_num(g.gap[1])))
    for label, points in lines.items():
        points.sort()
        x, y, e = zip(*points)
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("pre-training set size n")
    ax.set_ylabel("relative gap Δ (%)")
    ax.legend(fontsize=6)
    return _save(fig, path)


def write_plots(records: list[dict[str, Any]], out_dir: str | Path, metric: str = DEFAULT_METRIC) -> list[Path]:
    out = Path(out_dir)
    probe = metric.split("/")[0]
    written = []
    for key, runs in _long_tailed(records).items():
        if not any(probe in r.get("per_class", {}) for r in runs):
            continue
        name = _slug("_".join(k for k in key if k))
        written.append(per_class_plot(runs, out / f"per_class_{name}.png", probe))
        written.append(group_bars(runs, out / f"groups_{name}.png", probe))
    gap = gap_plot(records, out / "gap_vs_n.png", metric)
    if gap is not None:
        written.append(gap)
    return written
