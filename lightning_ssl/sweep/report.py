"""Tables from result JSONs: mean ± std over seeds, and the robustness gap of Liu et al. (ICLR 2022).

* The main table has one row per run group (every axis but the seed: method, dataset, imbalance
  ratio, ...) and, per probe (linear probes, kNN), all / many / medium / few accuracy and the
  population std of the three group accuracies (SDCLR's balancedness, docs/protocols.md §4), then the
  time per epoch and the peak memory. Accuracies are in %, final epoch (no best-epoch selection,
  docs/protocols.md §10). Across seeds we report mean ± sample std (``ddof=1``; our choice, the papers do
  not say which); one seed gives no std.
* The robustness table pairs each long-tailed run group with its balanced twin of the same size
  (docs/protocols.md §9) and gives A_bal, A_LT and the relative gap Δ = (A_bal − A_LT) / A_bal,
  computed per seed then averaged, for the in-domain probe and each transfer set, with the
  methods side by side (SSL with and without rwSAM vs supervised).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lightning_ssl.eval.floors import FLOORS
from lightning_ssl.sweep.identity import flatten
from lightning_ssl.sweep.record import DEFAULT_METRIC, RunRecord

GROUPS = ("many", "medium", "few")
# axes over which a row averages: the seed, and the long-tailed selection's seed (permuted head
# orders, docs/protocols.md §9.3); every other setting must be equal within a row
REPLICATE_AXES = ("seed", "data_seed")
REPLICATE_KEYS = ("seed_everything", "data.init_args.view_seed", "data.init_args.seed")
CLEAR_MARGIN = 0.01  # a method must beat RandomInit by >= 1 point and by > 2 standard errors


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


def group_key(axes: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The run group of a run's axes: every axis except the replicate axes (seed, data seed)."""
    return tuple(sorted((k, v) for k, v in axes.items() if k not in REPLICATE_AXES))


def natural(value: Any) -> tuple[int, float, str]:
    """Sort key of an axis value: numbers by value (30 before 120, not as text), then the rest as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def axes_order(key: tuple[tuple[str, Any], ...]) -> list[tuple[str, tuple[int, float, str]]]:
    """Sort key of a run group's ``((axis, value), ...)``: axis by axis, numbers by value."""
    return [(axis, natural(value)) for axis, value in key]


def replicate(axes: Mapping[str, Any]) -> tuple[Any, ...]:
    """The replicate a run is within its row: (seed, data seed), ``None`` for an axis the run has
    not got (RawPixels has no seed: nothing in it is random)."""
    return tuple(axes.get(a) for a in REPLICATE_AXES)


def _differing(records: list[RunRecord]) -> list[str]:
    """Settings keys (other than the replicate keys) whose values differ among ``records``."""
    flats = [flatten(r.settings) for r in records]
    keys = set().union(*flats)
    out = []
    for key in sorted(keys):
        if key in REPLICATE_KEYS:
            continue
        values = {json.dumps(f.get(key), sort_keys=True, default=str) for f in flats}
        if len(values) > 1:
            out.append(key)
    protocols = {json.dumps(list(r.protocols), sort_keys=True, default=str) for r in records}
    return out + (["evaluation protocol"] if len(protocols) > 1 else [])


def check_rows(records: list[RunRecord], skipped: list[str]) -> list[RunRecord]:
    """Records that may be averaged row by row: one per replicate (the newest of duplicates; the
    others are listed in ``skipped``). Records of one row that differ in anything but the
    replicate keys raise ``ValueError`` naming the row and the differing keys."""
    rows: dict[tuple, dict[tuple, RunRecord]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.finished):
        old = rows[group_key(r.axes)].get(replicate(r.axes))
        if old is not None:
            skipped.append(f"{old.run_id}: an older result of the same run group and seed as {r.run_id}")
        rows[group_key(r.axes)][replicate(r.axes)] = r
    for key, members in rows.items():
        keys = _differing(list(members.values()))
        if keys:
            raise ValueError(
                f"the results of run group {dict(key)} differ in {', '.join(keys)}, not only in the "
                "seed: they cannot be averaged; report one sweep (lssl report SPEC) or move the "
                "other results to another folder"
            )
    return [r for members in rows.values() for r in members.values()]


def probes_of(records: list[RunRecord]) -> list[str]:
    """Probe names (``linear_full``, ``knn_k200_t0.1``, ...) in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        for name in r.per_class:
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
    seeds: list[Any]  # distinct replicates
    cells: dict[str, tuple[float, float]]  # column -> (mean, std)
    stale: bool = False


def summarize(records: list[RunRecord]) -> tuple[list[Row], list[str]]:
    """Rows (one per run group, sorted by dataset, method, other axes) and value columns."""
    probes = probes_of(records)
    columns = [f"{p}/{c}" for p in probes for c in ("all", *GROUPS, "std")] + ["time_per_epoch_s", "peak_memory_mib"]
    rows = []
    for key, members in _by_group(records).items():
        samples: dict[str, list[float]] = defaultdict(list)
        for r in members:
            for p in probes:
                for c, v in probe_values(r.metrics, p).items():
                    if v is not None:
                        samples[f"{p}/{c}"].append(v)
            samples["time_per_epoch_s"].append(r.time_per_epoch_s)
            samples["peak_memory_mib"].append(r.peak_memory_mib)
        reps = sorted({replicate(r.axes) for r in members}, key=str)
        rows.append(
            Row(dict(key), reps, {c: mean_std(samples[c]) for c in columns}, stale=any(r.stale for r in members))
        )

    def order(row: Row) -> tuple:
        method = str(row.axes.get("method", ""))
        floor = FLOORS.index(method) if method in FLOORS else len(FLOORS)  # floors first
        rest = tuple(natural(row.axes.get(k, "")) for k in sorted(row.axes) if k != "method")
        return (str(row.axes.get("dataset", "")), rest, floor, method)

    rows.sort(key=order)
    return rows, columns


def floor_margins(records: list[RunRecord], metric: str = DEFAULT_METRIC) -> dict[tuple, dict[str, Any]]:
    """For each method's run group: its margin over each floor on ``metric`` (paired by replicate;
    mean and std of the per-replicate differences), whether it beats ``RandomInit`` clearly
    (``clear``: by >= :data:`CLEAR_MARGIN` and by more than 2 standard errors when there are >= 2
    replicates) and whether it beats ``RawPixels`` by more than 2 standard errors (``raw_clear``:
    needs >= 2 replicates; one seed shows no spread)."""
    floors: dict[str, dict[tuple, dict[tuple, float]]] = {f: defaultdict(dict) for f in FLOORS}
    for r in records:
        if r.axes.get("method") in FLOORS and metric in r.metrics:
            key = tuple(sorted((k, v) for k, v in r.axes.items() if k not in (*REPLICATE_AXES, "method")))
            floors[r.axes["method"]][key][replicate(r.axes)] = r.metrics[metric]
    out: dict[tuple, dict[str, Any]] = {}
    for key, members in _by_group(records).items():
        axes = dict(key)
        if axes.get("method") in FLOORS:
            continue
        entry: dict[str, Any] = {}
        for floor in FLOORS:
            # the floor's axes are the method's without the model/trainer axes
            match = next((v for k, v in floors[floor].items() if set(k) <= set(key)), None)
            if not match:
                continue
            diffs = [
                r.metrics[metric] - _floor_value(match, replicate(r.axes))
                for r in members
                if metric in r.metrics and _floor_value(match, replicate(r.axes)) is not None
            ]
            if diffs:
                entry[floor] = mean_std(diffs)
                entry[f"{floor}_n"] = len(diffs)
        if "RandomInit" in entry:
            mean, std = entry["RandomInit"]
            n = entry["RandomInit_n"]
            entry["clear"] = bool(
                mean >= CLEAR_MARGIN and (n < 2 or not math.isfinite(std) or mean > 2 * std / math.sqrt(n))
            )
        if "RawPixels" in entry:
            mean, std = entry["RawPixels"]
            n = entry["RawPixels_n"]
            entry["raw_clear"] = bool(n >= 2 and math.isfinite(std) and mean > 2 * std / math.sqrt(n))
        out[key] = entry
    return out


def _floor_value(match: dict[tuple, Any], rep: tuple) -> Any:
    """A floor's value for a replicate: the floor of the same seed and data seed, else a seedless
    floor (RawPixels) of the same data seed; a seeded floor whose seed is missing serves no one."""
    if rep in match:
        return match[rep]
    return match.get((None, *rep[1:]))


def _by_group(records: list[RunRecord]) -> dict[tuple, list[RunRecord]]:
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[group_key(r.axes)].append(r)
    return groups


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


def _margin_cells(entry: dict[str, Any] | None) -> list[str]:
    if entry is None:
        return ["", "", ""]
    cells = [fmt(*entry[f]) if f in entry else "–" for f in FLOORS]
    flag = "" if "clear" not in entry else ("yes" if entry["clear"] else "**no: not trained yet**")
    return [*cells, flag]


def main_table(records: list[RunRecord], metric: str = DEFAULT_METRIC) -> tuple[str, str]:
    """(Markdown, CSV) of the mean ± std table; the CSV has separate mean and std columns (in %
    for accuracies, seconds, MiB). Each method's row carries its margin over the floors on
    ``metric`` (points) and whether it beats RandomInit clearly; a stale row is marked ``†``."""
    rows, columns = summarize(records)
    margins = floor_margins(records, metric)
    axes = axis_names(rows)
    margin_cols = [f"{metric} − RawPixels", f"{metric} − RandomInit", "beats RandomInit"]
    header = [*axes, "seeds", *columns, *margin_cols]

    def axis_cells(row: Row) -> list[str]:
        cells = [str(row.axes.get(a, "")) for a in axes]
        if row.stale and cells:
            cells[0] += " †"
        return cells

    body = [
        axis_cells(row)
        + [str(len(row.seeds))]
        + [_cell(c, row.cells[c]) for c in columns]
        + _margin_cells(margins.get(tuple(sorted(row.axes.items()))))
        for row in rows
    ]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [*axes, "seeds"]
        + [f"{c}_{s}" for c in columns for s in ("mean", "std")]
        + ["margin_rawpixels_mean", "margin_randominit_mean", "beats_randominit", "stale"]
    )
    for row in rows:
        values = []
        for c in columns:
            scale = 1.0 if c in ("time_per_epoch_s", "peak_memory_mib") else 100.0
            values += [f"{scale * v:.4f}" if math.isfinite(v) else "" for v in row.cells[c]]
        entry = margins.get(tuple(sorted(row.axes.items()))) or {}
        extra = [f"{100 * entry[f][0]:.4f}" if f in entry else "" for f in FLOORS] + [entry.get("clear", ""), row.stale]
        writer.writerow([row.axes.get(a, "") for a in axes] + [len(row.seeds)] + values + extra)
    return markdown_table(header, body), buf.getvalue()


def floor_notes(records: list[RunRecord], metric: str = DEFAULT_METRIC) -> list[str]:
    """One line per method row that does not beat RandomInit clearly, or one line saying all do."""
    margins = floor_margins(records, metric)
    if not margins or not any("clear" in e for e in margins.values()):
        if not any(r.axes.get("method") in FLOORS for r in records):
            return ["- floors: no RawPixels/RandomInit results to compare with (add `floors:` to the spec)"]
        return ["- floors: no method's run has finished yet to compare with them"]

    def where(axes: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in axes.items() if k != "method")

    bad = [dict(k) for k, e in margins.items() if e.get("clear") is False]
    lines = [
        f"- **{b.get('method')}** ({where(b)}) does not beat RandomInit by a clear margin on {metric}: it "
        "has not been trained yet at this budget, not a finding"
        for b in bad
    ]
    if not bad:
        lines.append(
            f"- every method beats RandomInit on {metric} by a clear margin (>= {100 * CLEAR_MARGIN:.0f} "
            "point and > 2 standard errors over seeds)"
        )
    below = [(dict(k), e["RawPixels"][0]) for k, e in margins.items() if "RawPixels" in e and e["RawPixels"][0] <= 0]
    lines += [
        f"- **{b.get('method')}** ({where(b)}) "
        + ("only ties" if round(100 * m, 2) == 0 else f"is {100 * -m:.2f} points below")
        + f" RawPixels on {metric}: an encoder that does not beat raw pixels has not been trained enough yet; "
        "its numbers are not a finding"
        for b, m in below
    ]
    return lines


def eval_metrics(record: RunRecord, metric: str) -> dict[str, float]:
    """The accuracies the robustness table compares: in-domain ``metric`` and, per transfer set,
    the same ``metric``, else the transfer set's full-shot linear top-1 (its probe sets have their
    own names), else its fine-tuning top-1."""
    out = {"ID": record.metrics.get(metric)}
    for name, m in record.transfer_metrics().items():
        out[f"OOD:{name}"] = m.get(metric, m.get("linear_full/acc_top1", m.get("finetune/acc_top1")))
    return {k: v for k, v in out.items() if v is not None}


@dataclass
class GapRow:
    axes: dict[str, Any]  # the group's axes without balanced_twin and the replicate axes
    evaluation: str
    num_pretrain: float
    a_bal: tuple[float, float]
    a_lt: tuple[float, float]
    gap: tuple[float, float]
    seeds: int
    floors: dict[str, tuple[float, float]] = field(default_factory=dict)  # A_LT − floor, per replicate


def _twin_pairs(records: list[RunRecord]) -> dict[tuple, dict[bool, dict[tuple, RunRecord]]]:
    twins: dict[tuple, dict[bool, dict[tuple, RunRecord]]] = defaultdict(lambda: {True: {}, False: {}})
    for r in records:
        if "balanced_twin" not in r.axes:
            continue
        key = tuple(sorted((k, v) for k, v in r.axes.items() if k not in (*REPLICATE_AXES, "balanced_twin")))
        twins[key][bool(r.axes["balanced_twin"])][replicate(r.axes)] = r
    return twins


def robustness_rows(records: list[RunRecord], metric: str = DEFAULT_METRIC) -> list[GapRow]:
    """Pair long-tailed runs with their balanced twins (same axes and replicate) and compute
    Δ = (A_bal − A_LT) / A_bal per replicate (docs/protocols.md §9); with each method's margin
    A_LT − floor over the floors of the same long-tailed data."""
    twins = _twin_pairs(records)
    floor_lt = {
        f: {tuple(x for x in k if x[0] != "method"): v[False] for k, v in twins.items() if dict(k).get("method") == f}
        for f in FLOORS
    }
    rows = []
    for key, pair in twins.items():
        if dict(key).get("method") in FLOORS:
            continue
        seeds = sorted(set(pair[True]) & set(pair[False]), key=str)
        if not seeds:
            continue
        evals = eval_metrics(pair[False][seeds[0]], metric)
        data_key = tuple(x for x in key if x[0] != "method")
        for name in evals:
            bal, lt, gap = [], [], []
            margins: dict[str, list[float]] = defaultdict(list)
            for s in seeds:
                b, t = eval_metrics(pair[True][s], metric).get(name), eval_metrics(pair[False][s], metric).get(name)
                if b is None or t is None:
                    continue
                bal.append(b)
                lt.append(t)
                gap.append((b - t) / b if b else math.nan)
                for f in FLOORS:
                    match = next((v for k, v in floor_lt[f].items() if set(k) <= set(data_key)), {})
                    record = _floor_value(match, s)
                    value = eval_metrics(record, metric).get(name) if record is not None else None
                    if value is not None:
                        margins[f].append(t - value)
            n = float(np.mean([pair[False][s].num_pretrain for s in seeds]))
            rows.append(
                GapRow(
                    dict(key),
                    name,
                    n,
                    mean_std(bal),
                    mean_std(lt),
                    mean_std(gap),
                    len(gap),
                    {f: mean_std(v) for f, v in margins.items()},
                )
            )
    rows.sort(
        key=lambda g: (
            str(g.axes.get("dataset")),
            g.evaluation,
            str(g.axes.get("imbalance_ratio")),
            str(g.axes.get("profile")),
            -g.num_pretrain,
            str(g.axes.get("method")),
        )
    )
    return rows


def robustness_tables(records: list[RunRecord], metric: str = DEFAULT_METRIC) -> tuple[str, str, str]:
    """(long Markdown, side-by-side Markdown of Δ per method, CSV); empty strings without twins."""
    rows = robustness_rows(records, metric)
    if not rows:
        return "", "", ""
    axes = sorted({k for g in rows for k in g.axes} - {"method"})
    header = ["method", *axes, "eval", "n", "seeds", "A_bal", "A_LT", "Δ (%)", "A_LT − RawPixels", "A_LT − RandomInit"]
    body = [
        [str(g.axes.get("method"))]
        + [str(g.axes.get(a, "")) for a in axes]
        + [g.evaluation, f"{g.num_pretrain:.0f}", str(g.seeds), fmt(*g.a_bal), fmt(*g.a_lt), fmt(*g.gap)]
        + [fmt(*g.floors[f]) if f in g.floors else "–" for f in FLOORS]
        for g in rows
    ]
    methods = list(dict.fromkeys(str(g.axes.get("method")) for g in rows))
    wide: dict[tuple, dict[str, str]] = defaultdict(dict)
    for g in rows:
        key = tuple(str(g.axes.get(a, "")) for a in axes) + (g.evaluation, f"{g.num_pretrain:.0f}")
        wide[key][str(g.axes.get("method"))] = fmt(*g.gap)
    side = markdown_table(
        [*axes, "eval", "n", *[f"Δ {m} (%)" for m in methods]],
        [[*k, *[cells.get(m, "–") for m in methods]] for k, cells in wide.items()],
    )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "method",
            *axes,
            "eval",
            "n",
            "seeds",
            "A_bal_mean",
            "A_bal_std",
            "A_LT_mean",
            "A_LT_std",
            "gap_mean",
            "gap_std",
            "margin_rawpixels_mean",
            "margin_randominit_mean",
        ]
    )
    for g in rows:
        writer.writerow(
            [g.axes.get("method")]
            + [g.axes.get(a, "") for a in axes]
            + [g.evaluation, g.num_pretrain, g.seeds, *g.a_bal, *g.a_lt, *g.gap]
            + [g.floors[f][0] if f in g.floors else "" for f in FLOORS]
        )
    return markdown_table(header, body), side, buf.getvalue()


@dataclass
class ClassGapRow:
    """Per-class Δ of one long-tailed run group against its balanced twin: ``gaps`` holds, for
    ``all`` classes and each group (many / medium / few), the mean ± std over replicates."""

    axes: dict[str, Any]
    n: float  # images in the long-tailed pre-training set (mean over replicates)
    replicates: int
    gaps: dict[str, tuple[float, float]]


def per_class_gap_rows(records: list[RunRecord], metric: str = DEFAULT_METRIC) -> list[ClassGapRow]:
    """Per-class Δ_c = (a_bal,c − a_LT,c) / a_bal,c of each class against the balanced-twin encoder
    on the same class (docs/protocols.md §9.2), averaged over the classes of each group of the
    long-tailed set (and over all classes), per replicate, then mean ± std over replicates (seeds
    and permuted head orders). Unlike the group accuracies it does not inherit class difficulty."""
    probe = metric.rsplit("/", 1)[0]
    twins = _twin_pairs([r for r in records if probe in r.per_class and r.axes.get("method") not in FLOORS])
    rows = []
    for key, pair in twins.items():
        reps = sorted(set(pair[True]) & set(pair[False]), key=str)
        if not reps:
            continue
        values: dict[str, list[float]] = defaultdict(list)
        for rep in reps:
            bal = np.asarray(pair[True][rep].per_class[probe], dtype=np.float64)
            lt = np.asarray(pair[False][rep].per_class[probe], dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                gap = np.where(bal > 0, (bal - lt) / bal, np.nan)
            values["all"].append(float(np.nanmean(gap)))
            for g, ids in pair[False][rep].groups.items():
                if len(ids):
                    values[g].append(float(np.nanmean(gap[np.asarray(ids, dtype=int)])))
        n = float(np.mean([pair[False][rep].num_pretrain for rep in reps]))
        rows.append(ClassGapRow(dict(key), n, len(reps), {g: mean_std(v) for g, v in values.items()}))
    rows.sort(key=lambda g: (str(g.axes.get("dataset")), -g.n, str(g.axes.get("method"))))
    return rows


def per_class_gap_table(records: list[RunRecord], metric: str = DEFAULT_METRIC) -> str:
    rows = per_class_gap_rows(records, metric)
    if not rows:
        return ""
    axes = sorted({k for g in rows for k in g.axes} - {"method"})
    header = ["method", *axes, "n", "seeds", "Δ per class, mean (%)", *[f"Δ {g} (%)" for g in GROUPS]]
    body = [
        [str(g.axes.get("method"))]
        + [str(g.axes.get(a, "")) for a in axes]
        + [f"{g.n:.0f}", str(g.replicates), fmt(*g.gaps["all"])]
        + [fmt(*g.gaps[grp]) if grp in g.gaps else "–" for grp in GROUPS]
        for g in rows
    ]
    return markdown_table(header, body)


def setting_lines(records: list[RunRecord]) -> list[str]:
    """What every table must state (docs/protocols.md §10): data, backbone, epochs, batch, devices, hardware."""
    methods = [r for r in records if r.axes.get("method") not in FLOORS]
    floors = len(records) - len(methods)
    methods = methods or records  # only floors finished: describe them

    def values(get: Any, among: list[RunRecord] = methods) -> str:
        found = {str(get(r)): get(r) for r in among}
        return ", ".join(sorted(found, key=lambda text: natural(found[text])))

    return [
        f"- runs: {len(records)} ({floors} floors); distinct seeds: {values(lambda r: r.seed)}",
        f"- linear probe: {values(_probe_recipe, records)}",
        f"- datasets: {values(lambda r: r.dataset)}",
        f"- backbone: {values(lambda r: r.backbone)}",
        f"- epochs: {values(lambda r: r.max_epochs)}; global batch: {values(lambda r: r.train.get('global_batch'))}; "
        f"devices: {values(lambda r: r.train.get('devices'))}",
        f"- hardware: {values(lambda r: r.machine)}",
        f"- group rule: {values(lambda r: r.group_rule)}; accuracies in %, final epoch, mean ± sample std over seeds",
    ]


def _probe_recipe(record: RunRecord) -> str:
    """The probe recipe of a result, and where it did not meet its tolerance within its budget."""
    runs = record.linear_probe.get("runs") or {}
    converged = all(v.get("converged", True) for v in runs.values())
    name = record.linear_probe.get("recipe", "not recorded")
    return name if converged else f"{name} (budget spent before the tolerance: {record.axes.get('method')})"
