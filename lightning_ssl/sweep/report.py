"""Tables from result JSONs: mean ± std over seeds, and the robustness gap of Liu et al. (ICLR 2022).

* The main table has one row per run group (every axis but the seed: method, dataset, imbalance
  ratio, ...) and, per probe (linear probes, kNN), all / many / medium / few accuracy and the
  population std of the three group accuracies (SDCLR's balancedness, PROTOCOLS.md §3), then the
  time per epoch and the peak memory. Accuracies are in %, final epoch (no best-epoch selection,
  ANCHORS.md §6). Across seeds we report mean ± sample std (``ddof=1``; our choice, the papers do
  not say which); one seed gives no std.
* The robustness table pairs each long-tailed run group with its balanced twin of the same size
  (METHODS.md §0.2) and gives A_bal, A_LT and the relative gap Δ = (A_bal − A_LT) / A_bal,
  computed per seed then averaged, for the in-domain probe and each transfer set, with the
  methods side by side (SSL with and without rwSAM vs supervised).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GROUPS = ("many", "medium", "few")
DEFAULT_METRIC = "linear_full/acc_top1"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (``ddof=1``) of the finite values; std is NaN for fewer than two."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def fmt(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "–"
    text = f"{scale * mean:.{digits}f}"
    return text if not math.isfinite(std) else f"{text} ± {scale * std:.{digits}f}"


def group_key(record: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The run group of a result: every axis except the seed."""
    return tuple(sorted((k, v) for k, v in record["axes"].items() if k != "seed"))


def probes_of(records: list[dict[str, Any]]) -> list[str]:
    """Probe names (``linear_full``, ``knn_k200_t0.1``, ...) in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        for name in r.get("per_class", {}):
            seen.setdefault(name, None)
    return list(seen)


def probe_values(metrics: dict[str, float], probe: str) -> dict[str, float | None]:
    """all / many / medium / few / std of one probe, whatever the group rule's name."""
    out: dict[str, float | None] = {"all": metrics.get(f"{probe}/acc_top1")}
    for key, value in metrics.items():
        if not key.startswith(probe + "/") or key.count("/") < 2:
            continue
        for g in GROUPS:
            if key.endswith(f"/acc_{g}"):
                out[g] = value
        if key.endswith("/std") and not key.endswith("std_class"):
            out["std"] = value
    return out


@dataclass
class Row:
    axes: dict[str, Any]
    seeds: list[int]
    cells: dict[str, tuple[float, float]]  # column -> (mean, std)


def summarize(records: list[dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """Rows (one per run group, sorted by dataset, method, other axes) and value columns."""
    probes = probes_of(records)
    columns = [f"{p}/{c}" for p in probes for c in ("all", *GROUPS, "std")] + ["time_per_epoch_s", "peak_memory_mib"]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[group_key(r)].append(r)
    rows = []
    for key, members in groups.items():
        samples: dict[str, list[float]] = defaultdict(list)
        for r in members:
            for p in probes:
                for c, v in probe_values(r["metrics"], p).items():
                    if v is not None:
                        samples[f"{p}/{c}"].append(v)
            samples["time_per_epoch_s"].append(r.get("train", {}).get("time_per_epoch_s") or math.nan)
            samples["peak_memory_mib"].append(r.get("peak_memory", {}).get("bytes", math.nan) / 2**20)
        rows.append(Row(dict(key), sorted(r["seed"] for r in members), {c: mean_std(samples[c]) for c in columns}))
    rows.sort(key=lambda row: tuple(str(row.axes.get(k, "")) for k in ("dataset", "method", *sorted(row.axes))))
    return rows, columns


def axis_names(rows: list[Row]) -> list[str]:
    names = {k for row in rows for k in row.axes}
    first = [k for k in ("method", "dataset") if k in names]
    return first + sorted(names - set(first))


def _cell(column: str, value: tuple[float, float]) -> str:
    if column == "time_per_epoch_s":
        return fmt(*value, scale=1.0, digits=2)
    if column == "peak_memory_mib":
        return fmt(*value, scale=1.0, digits=0)
    return fmt(*value)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def main_table(records: list[dict[str, Any]]) -> tuple[str, str]:
    """(Markdown, CSV) of the mean ± std table; the CSV has separate mean and std columns (in %
    for accuracies, seconds, MiB)."""
    rows, columns = summarize(records)
    axes = axis_names(rows)
    header = [*axes, "seeds", *columns]
    body = [[str(row.axes.get(a, "")) for a in axes] + [str(len(row.seeds))] + [_cell(c, row.cells[c]) for c in columns]
            for row in rows]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*axes, "seeds"] + [f"{c}_{s}" for c in columns for s in ("mean", "std")])
    for row in rows:
        values = []
        for c in columns:
            scale = 1.0 if c in ("time_per_epoch_s", "peak_memory_mib") else 100.0
            values += [f"{scale * v:.4f}" if math.isfinite(v) else "" for v in row.cells[c]]
        writer.writerow([row.axes.get(a, "") for a in axes] + [len(row.seeds)] + values)
    return markdown_table(header, body), buf.getvalue()


def eval_metrics(record: dict[str, Any], metric: str) -> dict[str, float]:
    """The accuracies the robustness table compares: in-domain ``metric`` and, per transfer set,
    the same ``metric``, else the transfer set's full-shot linear top-1 (its probe sets have their
    own names), else its fine-tuning top-1."""
    out = {"ID": record["metrics"].get(metric)}
    for name, result in (record.get("transfer") or {}).items():
        m = result.get("metrics", {})
        out[f"OOD:{name}"] = m.get(metric, m.get("linear_full/acc_top1", m.get("finetune/acc_top1")))
    return {k: v for k, v in out.items() if v is not None}


@dataclass
class GapRow:
    axes: dict[str, Any]  # the group's axes without balanced_twin and seed
    evaluation: str
    num_pretrain: float
    a_bal: tuple[float, float]
    a_lt: tuple[float, float]
    gap: tuple[float, float]
    seeds: int


def robustness_rows(records: list[dict[str, Any]], metric: str = DEFAULT_METRIC) -> list[GapRow]:
    """Pair long-tailed runs with their balanced twins (same axes and seed) and compute
    Δ = (A_bal − A_LT) / A_bal per seed (METHODS.md §0.2)."""
    twins: dict[tuple, dict[bool, dict[int, dict[str, Any]]]] = defaultdict(lambda: {True: {}, False: {}})
    for r in records:
        if "balanced_twin" not in r["axes"]:
            continue
        key = tuple(sorted((k, v) for k, v in r["axes"].items() if k not in ("seed", "balanced_twin")))
        twins[key][bool(r["axes"]["balanced_twin"])][r["seed"]] = r
    rows = []
    for key, pair in twins.items():
        seeds = sorted(set(pair[True]) & set(pair[False]))
        if not seeds:
            continue
        evals = eval_metrics(pair[False][seeds[0]], metric)
        for name in evals:
            bal, lt, gap = [], [], []
            for s in seeds:
                b, t = eval_metrics(pair[True][s], metric).get(name), eval_metrics(pair[False][s], metric).get(name)
                if b is None or t is None:
                    continue
                bal.append(b)
                lt.append(t)
                gap.append((b - t) / b if b else math.nan)
            n = float(np.mean([pair[False][s].get("num_pretrain", math.nan) for s in seeds]))
            rows.append(GapRow(dict(key), name, n, mean_std(bal), mean_std(lt), mean_std(gap), len(gap)))
    rows.sort(key=lambda g: (str(g.axes.get("dataset")), g.evaluation, str(g.axes.get("imbalance_ratio")),
                             str(g.axes.get("profile")), -g.num_pretrain, str(g.axes.get("method"))))
    return rows


def robustness_tables(records: list[dict[str, Any]], metric: str = DEFAULT_METRIC) -> tuple[str, str, str]:
    """(long Markdown, side-by-side Markdown of Δ per method, CSV); empty strings without twins."""
    rows = robustness_rows(records, metric)
    if not rows:
        return "", "", ""
    axes = sorted({k for g in rows for k in g.axes} - {"method"})
    header = ["method", *axes, "eval", "n", "seeds", "A_bal", "A_LT", "Δ (%)"]
    body = [[str(g.axes.get("method"))] + [str(g.axes.get(a, "")) for a in axes] +
            [g.evaluation, f"{g.num_pretrain:.0f}", str(g.seeds), fmt(*g.a_bal), fmt(*g.a_lt), fmt(*g.gap)]
            for g in rows]
    methods = list(dict.fromkeys(str(g.axes.get("method")) for g in rows))
    wide: dict[tuple, dict[str, str]] = defaultdict(dict)
    for g in rows:
        key = tuple(str(g.axes.get(a, "")) for a in axes) + (g.evaluation, f"{g.num_pretrain:.0f}")
        wide[key][str(g.axes.get("method"))] = fmt(*g.gap)
    side = markdown_table([*axes, "eval", "n", *[f"Δ {m} (%)" for m in methods]],
                          [[*k, *[cells.get(m, "–") for m in methods]] for k, cells in wide.items()])
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", *axes, "eval", "n", "seeds", "A_bal_mean", "A_bal_std", "A_LT_mean", "A_LT_std",
                     "gap_mean", "gap_std"])
    for g in rows:
        writer.writerow([g.axes.get("method")] + [g.axes.get(a, "") for a in axes] +
                        [g.evaluation, g.num_pretrain, g.seeds, *g.a_bal, *g.a_lt, *g.gap])
    return markdown_table(header, body), side, buf.getvalue()


def setting_lines(records: list[dict[str, Any]]) -> list[str]:
    """What every table must state (ANCHORS.md §6): data, backbone, epochs, batch, devices, hardware."""
    def values(get: Any) -> str:
        found = sorted({str(get(r)) for r in records})
        return ", ".join(found)

    return [
        f"- runs: {len(records)}; seeds: {values(lambda r: r['seed'])}",
        f"- datasets: {values(lambda r: r['dataset'])}",
        f"- backbone: {values(lambda r: r['config'].get('model', {}).get('init_args', {}).get('backbone'))}",
        f"- epochs: {values(lambda r: r['config'].get('trainer', {}).get('max_epochs'))}; global batch: "
        f"{values(lambda r: r.get('train', {}).get('global_batch'))}; devices: "
        f"{values(lambda r: r.get('train', {}).get('devices'))}",
        f"- hardware: {values(lambda r: r.get('hardware', {}).get('gpu') or r.get('hardware', {}).get('cpu'))}",
        f"- group rule: {values(lambda r: r.get('evaluation', {}).get('group_rule'))}; accuracies in %, final "
        "epoch, mean ± sample std over seeds",
    ]


def write_report(records: list[dict[str, Any]], out_dir: str | Path, title: str = "sweep",
                 metric: str = DEFAULT_METRIC, plots: bool = True) -> dict[str, Path]:
    """Write ``report.md``, ``summary.csv``, ``robustness.csv`` (when there are balanced twins) and
    the PNG plots into ``out_dir``; returns the written paths by name."""
    from lightning_ssl.io import atomic_write_text

    if not records:
        raise ValueError(f"no finished results to report for {title!r} (run `lssl sweep` first)")
    out = Path(out_dir)
    md, csv_text = main_table(records)
    long_md, side_md, gap_csv = robustness_tables(records, metric)
    parts = [f"# {title}", "", *setting_lines(records), "", "## Results", "", md, ""]
    written = {"summary.csv": atomic_write_text(out / "summary.csv", csv_text)}
    if long_md:
        parts += [f"## Robustness: balanced vs long-tailed at equal n ({metric})", "",
                  "Δ = (A_bal − A_LT) / A_bal (Liu et al., ICLR 2022, METHODS.md §0.2)", "", side_md, "", long_md, ""]
        written["robustness.csv"] = atomic_write_text(out / "robustness.csv", gap_csv)
    if plots:
        from lightning_ssl.sweep.plots import write_plots

        pngs = write_plots(records, out, metric)
        written.update({p.name: p for p in pngs})
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    written["report.md"] = atomic_write_text(out / "report.md", "\n".join(parts))
    return written
