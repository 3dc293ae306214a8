"""PNG plots of a sweep (matplotlib, Agg): per-class accuracy vs class frequency, many/medium/few
bars, the robustness gap vs sample size (Liu et al., ICLR 2022, Figures 1-2), and accuracy against
each numeric grid axis (a budget in epochs, a learning rate).

Every figure's title names the sweep, the probe and the run set; error bars are the sample std
over seeds (none with one seed, said in the title); the floors (RawPixels, RandomInit) are drawn
as grey reference lines; one small panel per method instead of many lines on one axis.

The same results give the same bytes: records are sorted before drawing (the order the result
files were read in does not matter) and the PNGs carry no ``Software`` (matplotlib version) entry.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from lightning_ssl.sweep.diagnosis import knn_metric  # noqa: E402
from lightning_ssl.sweep.record import RunRecord  # noqa: E402
from lightning_ssl.sweep.report import (  # noqa: E402
    DEFAULT_METRIC,
    FLOORS,
    GROUPS,
    REPLICATE_AXES,
    natural,
    probe_values,
    replicate,
    robustness_rows,
)

GROUP_COLOURS = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}
FLOOR_STYLE = {"RawPixels": {"color": "0.35", "ls": "--"}, "RandomInit": {"color": "0.6", "ls": ":"}}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


RUN_SET_AXES = ("dataset", "profile", "imbalance_ratio", "subsample", "balanced_twin")


def _run_sets(records: list[RunRecord]) -> dict[tuple, list[RunRecord]]:
    """Runs by (dataset, profile, ratio, subsample, twin): each figure shows one run set."""
    out: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        key = tuple(str(r.axes.get(k, "")) for k in RUN_SET_AXES[:4]) + (bool(r.axes.get("balanced_twin")),)
        out[key].append(r)
    return out


def _other_axes(record: RunRecord, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The axes that tell a run's row from the others of its run set (e.g. ``trainer.max_epochs``),
    beside the method: neither a replicate axis nor a run-set axis."""
    skip = {"method", *REPLICATE_AXES, *RUN_SET_AXES, *leave_out}
    return {k: record.axes[k] for k in sorted(record.axes) if k not in skip}


def row_label(record: RunRecord, leave_out: tuple[str, ...] = ()) -> str:
    """The method, and the other axes of its row: runs of one label are seeds of one setting."""
    return " ".join([str(record.method)] + [f"{k}={v}" for k, v in _other_axes(record, leave_out).items()])


def _set_name(key: tuple) -> str:
    dataset, profile, ratio, subsample, twin = key
    parts = [dataset] + [f"{n}={v}" for n, v in (("profile", profile), ("ratio", ratio), ("subsample", subsample)) if v]
    return " ".join(parts) + (" · balanced twin" if twin else " · long-tailed")


def seed_count(runs: list[RunRecord]) -> int:
    """Distinct seeds (replicates) of the methods' runs: the floors are drawn from their own runs and
    RawPixels has no seed at all, so neither adds one (a seedless replicate counted as a seed made
    the titles say one seed too many)."""
    methods = [r for r in runs if r.method not in FLOORS] or runs
    return len({replicate(r.axes) for r in methods if any(v is not None for v in replicate(r.axes))}) or 1


def _seeds_text(runs: list[RunRecord]) -> str:
    n = seed_count(runs)
    return f"{n} seed{'s' if n != 1 else ''}" + ("" if n > 1 else ", no error bars")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no version: same bytes
    plt.close(fig)
    tmp.replace(path)
    return path


def _log_axis(ax: Any) -> None:
    """Log x axis with plain numbers at a few major ticks and no minor labels (no overlap)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0), numticks=6))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _group_bands(ax: Any, counts: np.ndarray, groups: dict[str, list[int]]) -> None:
    """Shade the count range of each many/medium/few group."""
    for g in GROUPS:
        ids = groups.get(g) or []
        if len(ids):
            lo, hi = counts[ids].min(), counts[ids].max()
            ax.axvspan(lo / 1.08, hi * 1.08, color=GROUP_COLOURS[g], alpha=0.08, lw=0)
            ax.text(
                math.sqrt(lo * hi),
                0.02,
                g,
                transform=ax.get_xaxis_transform(),
                ha="center",
                fontsize=7,
                color=GROUP_COLOURS[g],
            )


def _by_method(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs by row label (the method, and its other axes: runs at 30 and 120 epochs are two rows,
    never one row's "seeds"), the rows in the order of their axis values (30 before 120)."""
    out: dict[str, list[RunRecord]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: [natural(v) for v in _other_axes(r).values()]):
        out[row_label(r)].append(r)
    return out


def per_class_plot(runs: list[RunRecord], path: Path, probe: str, title: str) -> Path:
    """Small multiples: per method, per-class accuracy (mean ± std over seeds) against the class's
    pre-training count, with the group bands and the floors' curves."""
    by_method = {m: rs for m, rs in _by_method(runs).items() if all(probe in r.per_class for r in rs)}
    floors = {m: by_method.pop(m) for m in FLOORS if m in by_method}
    methods = list(by_method) or list(floors)
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.6), sharex=True, sharey=True, squeeze=False
    )
    counts = np.asarray(runs[0].class_counts, dtype=float)
    groups = runs[0].groups
    order = np.argsort(-counts)
    for ax, method in zip(axes.flat, methods):
        _group_bands(ax, counts, groups)
        for name, floor_runs in floors.items():
            acc = np.mean([r.per_class[probe] for r in floor_runs], axis=0)
            ax.plot(counts[order], 100 * acc[order], lw=1, label=name, **FLOOR_STYLE[name])
        values = np.asarray([r.per_class[probe] for r in by_method.get(method, floors.get(method, []))])
        std = values.std(axis=0, ddof=1) if len(values) > 1 else None
        ax.errorbar(
            counts[order],
            100 * values.mean(axis=0)[order],
            yerr=None if std is None else 100 * std[order],
            marker="o",
            ms=3,
            capsize=2,
            lw=1.2,
            color="C0",
            label=method,
        )
        ax.set_title(method, fontsize=9)
        _log_axis(ax)
        ax.grid(alpha=0.3, lw=0.5)
    for ax in axes.flat[len(methods) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("pre-training images of the class")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    handles = [plt.Line2D([], [], lw=1, label=n, **FLOOR_STYLE[n]) for n in floors]
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=len(handles),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )
    fig.suptitle(
        f"{title}: per-class {probe} accuracy vs class frequency\n{_set_name(_key_of(runs))}, {_seeds_text(runs)}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path)


def _key_of(runs: list[RunRecord]) -> tuple:
    return next(iter(_run_sets(runs)))


def group_bars(runs: list[RunRecord], path: Path, probe: str, title: str) -> Path:
    """Many / medium / few accuracy per method (mean ± std over seeds); the floors' overall
    accuracy as reference lines."""
    by_method = _by_method(runs)
    floors = {m: by_method.pop(m) for m in FLOORS if m in by_method}
    methods = list(by_method)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(methods) + 2), 4))
    width = 0.8 / len(GROUPS)
    for i, g in enumerate(GROUPS):
        vals = [
            [v for v in (probe_values(r.metrics, probe).get(g) for r in by_method[m]) if v is not None] for m in methods
        ]
        means = [100 * np.mean(v) if v else np.nan for v in vals]
        stds = [100 * np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(
            np.arange(len(methods)) + (i - 1) * width,
            means,
            width,
            yerr=stds if any(stds) else None,
            capsize=2,
            label=g,
            color=GROUP_COLOURS[g],
        )
    for name, floor_runs in floors.items():
        overall = [probe_values(r.metrics, probe).get("all") for r in floor_runs]
        overall = [v for v in overall if v is not None]
        if overall:
            ax.axhline(100 * np.mean(overall), lw=1, label=f"{name} (all classes)", **FLOOR_STYLE[name])
    ax.set_xticks(np.arange(len(methods)))
    ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{probe} accuracy (%)")
    ax.set_xlabel("method")
    ax.set_title(
        f"{title}: {probe} accuracy by class group\n{_set_name(_key_of(runs))}, {_seeds_text(runs)}", fontsize=10
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    return _save(fig, path)


def gap_plot(records: list[RunRecord], path: Path, metric: str, title: str) -> Path | None:
    """Relative gap Δ against the pre-training size n: one panel per evaluation (in-domain, each
    transfer set), one line per method, error bars over seeds."""
    rows = robustness_rows(records, metric)
    if not rows:
        return None
    evaluations = list(dict.fromkeys(g.evaluation for g in rows))
    fig, axes = plt.subplots(1, len(evaluations), figsize=(4.2 * len(evaluations), 3.6), squeeze=False, sharey=True)
    seeds = max(g.seeds for g in rows)
    for ax, evaluation in zip(axes[0], evaluations):
        lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for g in rows:
            if g.evaluation == evaluation:
                lines[str(g.axes.get("method"))].append((g.num_pretrain, 100 * g.gap[0], 100 * np.nan_to_num(g.gap[1])))
        sizes = sorted({p[0] for points in lines.values() for p in points})
        for i, (method, points) in enumerate(sorted(lines.items())):
            points.sort()
            x, y, e = zip(*points)
            # one size: methods side by side; several: Δ against n on a log axis
            xs = [i] if len(sizes) == 1 else np.asarray(x) * (1 + 0.03 * (i - len(lines) / 2))
            ax.errorbar(xs, y, yerr=e, marker="o", capsize=3, label=method)
        ax.axhline(0, color="grey", lw=0.5)
        if len(sizes) == 1:
            ax.set_xticks(range(len(lines)))
            ax.set_xticklabels(sorted(lines), rotation=20, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(lines) - 0.5)
        else:
            _log_axis(ax)
        ax.set_title(
            "in-domain" if evaluation == "ID" else f"out of domain: {evaluation.split(':', 1)[-1]}", fontsize=9
        )
        ax.set_xlabel(f"method (n = {sizes[0]:,.0f})" if len(sizes) == 1 else "pre-training set size n")
        ax.grid(alpha=0.3, lw=0.5)
    axes[0][0].set_ylabel("relative gap Δ = (A_bal − A_LT) / A_bal (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    datasets = ", ".join(sorted({str(g.axes.get("dataset", "")) for g in rows}))
    fig.suptitle(f"{title}: balanced vs long-tailed gap ({metric}), {datasets}, up to {seeds} seeds", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def numeric_axes(runs: list[RunRecord]) -> list[str]:
    """The axes of the methods' rows whose values are numbers, with two or more of them (a budget
    in ``trainer.max_epochs``, a learning rate): each gets a plot of accuracy against it."""
    values: dict[str, set] = defaultdict(set)
    for r in runs:
        if r.method not in FLOORS:
            for k, v in _other_axes(r).items():
                values[k].add(v if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
    return [k for k, vs in sorted(values.items()) if len(vs) > 1 and None not in vs]


def axis_series(runs: list[RunRecord], axis: str, metric: str) -> dict[str, list[tuple[float, float, float, int]]]:
    """Per row (the method and its axes but ``axis``): ``(axis value, mean, sample std, seeds)`` of
    ``metric`` in % over seeds, in axis order; std is NaN with one seed."""
    points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.method not in FLOORS and axis in r.axes and metric in r.metrics:
            points[row_label(r, (axis,))][float(r.axes[axis])].append(100 * r.metrics[metric])
    return {
        label: [
            (x, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v))
            for x, v in sorted(by_x.items())
        ]
        for label, by_x in sorted(points.items())
    }


def axis_plot(runs: list[RunRecord], path: Path, axis: str, metrics: list[str], title: str) -> Path | None:
    """One panel per metric (the linear probe's, the kNN's): accuracy against a numeric axis, one line
    per row, error bars over seeds, the floors as grey lines."""
    series = {m: axis_series(runs, axis, m) for m in metrics}
    metrics = [m for m in metrics if series[m]]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        low, high = math.inf, -math.inf
        for label, points in series[metric].items():
            x, y, e, _ = zip(*points)
            e = np.nan_to_num(e)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
            low, high = min(low, *(np.asarray(y) - e)), max(high, *(np.asarray(y) + e))
        # the y range is the rows' and the floors' near them: a floor 20 points away (RandomInit)
        # would flatten the differences the plot is for; it is named in the legend with its value
        span = max(high - low, 2.0)
        for name in FLOORS:
            values = [r.metrics[metric] for r in runs if r.method == name and metric in r.metrics]
            if values:
                value = 100 * float(np.mean(values))
                near = low - span <= value <= high + span
                low, high = (min(low, value), max(high, value)) if near else (low, high)
                text = f"{name} {value:.2f} %" + ("" if near else " (off the axis)")
                ax.axhline(value, lw=1, label=text, **FLOOR_STYLE[name])
        pad = 0.15 * max(high - low, 1.0)
        ax.set_ylim(low - pad, high + pad)
        xs = sorted({p[0] for points in series[metric].values() for p in points})
        if xs[0] > 0 and xs[-1] / xs[0] >= 4:
            _log_axis(ax)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{metric.split('/')[0]} accuracy (%)")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, lw=0.5)
        ax.legend(fontsize=7, loc="best", frameon=False)  # per panel: the floors' values differ by metric
    fig.suptitle(f"{title}: accuracy vs {axis}\n{_set_name(_key_of(runs))}, {_seeds_text(runs)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _order(record: RunRecord) -> tuple[str, ...]:
    """A total order of result records (method, axes, replicate, run id), independent of the order
    the result files were listed in."""
    return (
        str(record.method),
        json.dumps(record.axes, sort_keys=True, default=str),
        str(replicate(record.axes)),
        str(record.run_id),
    )


def write_plots(
    records: list[RunRecord], out_dir: str | Path, metric: str = DEFAULT_METRIC, title: str = "sweep"
) -> list[Path]:
    """Per run set: the per-class and group plots; across run sets: the gap plot."""
    out = Path(out_dir)
    probe = metric.rsplit("/", 1)[0]
    records = sorted(records, key=_order)
    written = []
    for key, runs in _run_sets(records).items():
        if not any(probe in r.per_class for r in runs):
            continue
        name = _slug("_".join(str(k) for k in key[:4] if k) + ("_twin" if key[4] else ""))
        written.append(per_class_plot(runs, out / f"per_class_{name}.png", probe, title))
        written.append(group_bars(runs, out / f"groups_{name}.png", probe, title))
        for axis in numeric_axes(runs):
            knn = knn_metric(runs)
            metrics = [metric] + ([knn] if knn and knn != metric else [])
            plot = axis_plot(runs, out / f"{_slug(axis)}_{name}.png", axis, metrics, title)
            written += [plot] if plot is not None else []
    gap = gap_plot(records, out / "gap_vs_n.png", metric, title)
    if gap is not None:
        written.append(gap)
    return written
