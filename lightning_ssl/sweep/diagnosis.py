"""Why a method missed its floors, the methods ranked with ties, and the collapse diagnostics table
(docs/protocols.md §11).

For each method row (a run group: every axis but the seed) that does not beat RandomInit clearly or
does not beat RawPixels on the linear or kNN metric, :func:`diagnosis_lines` names the causes its
records show, each from a measure in the record (``diagnostics``, written by the runner):

* **collapsed**: the backbone features' RankMe under 10 % of their dimension, or the embedding's
  normalised std under 0.1 (1 is isotropic, 0 a single point);
* **under-trained**: in most seeds the training loss still fell by more than 2 % over the last
  quarter of the run (:func:`lightning_ssl.eval.diagnostics.loss_trend`);
* **unstable**: the seeds' accuracies spread by more than 2 points (sample std);
* otherwise **recipe**: not collapsed, converged and stable, so the views, learning rate or loss
  settings, not the budget, hold it at the floor; a record without RankMe or loss trend (written
  before they were recorded) is **not diagnosed**, never "recipe".

The thresholds are our choice (none of the papers defines a verdict); they are stated here and in
the report, so a reader can apply another.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from lightning_ssl.sweep.record import RunRecord
from lightning_ssl.sweep.report import (
    FLOORS,
    REPLICATE_AXES,
    _by_group,
    axes_order,
    floor_margins,
    fmt,
    markdown_table,
    mean_std,
    replicate,
    robustness_rows,
)

COLLAPSED_RANK = 0.10  # features RankMe / dim below this: dimensional collapse
COLLAPSED_STD = 0.10  # normalised std of the embedding below this: the embedding is (nearly) a point
UNSTABLE_STD = 0.02  # accuracy std over seeds above 2 points
REFERENCE = "Supervised"  # the method whose Δ the seed paper compares self-supervised ones against


def knn_metric(records: list[RunRecord]) -> str | None:
    """The kNN top-1 metric the records carry (``knn_k200_t0.1/acc_top1``), if any."""
    names = sorted({k for r in records for k in r.metrics if k.startswith("knn_") and k.endswith("/acc_top1")})
    return names[0] if names else None


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def group_diagnostics(members: list[RunRecord]) -> dict[str, float]:
    """Means over a run group's seeds of the recorded diagnostics; ``falling`` is the share of seeds
    whose loss still fell over the last quarter."""
    out = {
        f"{part}_{key}": _mean([r.diagnostic(part, key) for r in members])
        for part in ("features", "embedding")
        for key in ("rankme", "dim", "alignment", "uniformity", "std")
    }
    trends = [r.loss_trend for r in members if r.loss_trend]
    out["falling"] = float(np.mean([t["still_falling"] for t in trends])) if trends else float("nan")
    out["fall"] = _mean([t["fall_last_quarter"] for t in trends]) if trends else float("nan")
    return out


def follows_temperature_schedule(members: list[RunRecord]) -> bool:
    """Whether the runs trained under a temperature schedule (Kukleva et al., ICLR 2023): their
    InfoNCE loss rises and falls with the temperature, so its trend says nothing of the budget."""
    return any(r.config.get("model", {}).get("init_args", {}).get("temperature_schedule") for r in members)


def _loss_words(fall: float) -> str:
    """How the loss of a run group that is not under-trained ended (``fall``: the mean relative
    fall over the last quarter; most seeds fell by at most 2 %)."""
    if fall < 0:
        return f"loss rising (+{-100 * fall:.1f} % over the last quarter)"
    return f"loss no longer falling in most seeds (mean fall {100 * fall:.1f} % over the last quarter)"


def causes(members: list[RunRecord], metric: str) -> list[str]:
    """The causes the records of one run group show (see the module docstring)."""
    d = group_diagnostics(members)
    found = []
    scheduled = follows_temperature_schedule(members)
    if scheduled:
        d["falling"] = float("nan")
    measured = math.isfinite(d["features_rankme"]) and (scheduled or math.isfinite(d["falling"]))
    rank_share = d["features_rankme"] / d["features_dim"] if d["features_dim"] else float("nan")
    if rank_share < COLLAPSED_RANK or d["embedding_std"] < COLLAPSED_STD:
        found.append(
            f"collapsed (features RankMe {d['features_rankme']:.1f} of {d['features_dim']:.0f}, "
            f"embedding std {d['embedding_std']:.2f})"
        )
    if d["falling"] > 0.5:
        found.append(
            f"under-trained (the loss still fell {100 * d['fall']:.1f} % over the last quarter "
            f"in {100 * d['falling']:.0f} % of seeds)"
        )
    values = [r.metrics[metric] for r in members if metric in r.metrics]
    if len(values) > 1 and float(np.std(values, ddof=1)) > UNSTABLE_STD:
        found.append(f"unstable (seeds from {100 * min(values):.2f} to {100 * max(values):.2f} %)")
    if not found and not measured:
        missing = " and ".join(
            n for n, v in (("RankMe", d["features_rankme"]), ("loss trend", d["falling"])) if not math.isfinite(v)
        )
        found.append(f"not diagnosed: its records carry no {missing} (written before the suite recorded them)")
    if not found and scheduled:
        found.append(
            f"not collapsed (RankMe {d['features_rankme']:.1f} of {d['features_dim']:.0f}); its loss follows "
            "the temperature schedule, so the loss trend cannot tell under-training from the recipe"
        )
    if not found:
        found.append(
            f"recipe (not collapsed: RankMe {d['features_rankme']:.1f} of {d['features_dim']:.0f}; "
            f"{_loss_words(d['fall'])}; seeds agree): the views, learning rate or loss settings hold it, not the budget"
        )
    return found


BUDGET_AXES = ("trainer.max_epochs", "trainer.max_steps")


def budget_evidence(groups: dict[tuple, list[RunRecord]], key: tuple, metric: str) -> str | None:
    """What a budget axis of the sweep measured for this row: the same row at the next larger budget
    and its gain on ``metric``, or, at the largest budget, the gain from the one before (a falling
    loss only suggests that more steps help; this is the measurement). ``None`` without a budget axis."""
    axes = dict(key)
    for axis in BUDGET_AXES:
        if not isinstance(axes.get(axis), (int, float)):
            continue
        siblings = {}
        for other, members in groups.items():
            rest = dict(other)
            budget = rest.pop(axis, None)
            if rest == {k: v for k, v in axes.items() if k != axis} and isinstance(budget, (int, float)):
                values = [r.metrics[metric] for r in members if metric in r.metrics]
                if values:
                    siblings[budget] = float(np.mean(values))
        here = axes[axis]
        larger = sorted(b for b in siblings if b > here)
        smaller = sorted(b for b in siblings if b < here)
        if here not in siblings or not (larger or smaller):
            continue
        if larger:
            gain = 100 * (siblings[larger[0]] - siblings[here])
            return f"measured: at {axis}={larger[0]} it reads {100 * siblings[larger[0]]:.2f} % ({gain:+.2f} points)"
        gain = 100 * (siblings[here] - siblings[smaller[-1]])
        return f"measured: {axis}={smaller[-1]} → {here} gained {gain:+.2f} points"
    return None


def _where(axes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in axes.items() if k != "method")


def diagnosis_lines(records: list[RunRecord], metric: str) -> list[str]:
    """One line per method row that misses a floor on ``metric`` or on the kNN metric, with its causes;
    one line saying so when every row beats every floor."""
    metrics = [metric] + [m for m in [knn_metric(records)] if m and m != metric]
    groups = _by_group(records)
    lines = []
    for m in metrics:
        for key, entry in floor_margins(records, m).items():
            missed = [
                f for f in FLOORS if f in entry and (entry[f][0] <= 0 or (f == "RandomInit" and not entry.get("clear")))
            ]
            if not missed:
                continue
            axes = dict(key)
            margin = "; ".join(f"{fmt(*entry[f])} points vs {f}" for f in FLOORS if f in entry)
            evidence = budget_evidence(groups, key, m)
            lines.append(
                f"- **{axes.get('method')}** ({_where(axes)}) misses {' and '.join(missed)} on {m} ({margin}): "
                + "; ".join(causes(groups[key], m) + ([evidence] if evidence else []))
            )
    if not lines and any(dict(k).get("method") not in FLOORS for k in groups):
        lines.append(f"- every method beats both floors on {' and '.join(metrics)}")
    return lines or ["- no method has finished a run yet"]


def ranking_lines(records: list[RunRecord], metric: str) -> list[str]:
    """The methods ranked by mean ``metric`` within each setting (every axis but method and seed),
    floors left out; two methods whose means differ by less than twice the standard error of the
    difference are a tie, and said so."""
    settings: dict[tuple, list[tuple[str, list[float]]]] = defaultdict(list)
    for key, members in _by_group(records).items():
        axes = dict(key)
        if axes.get("method") in FLOORS:
            continue
        values = [r.metrics[metric] for r in members if metric in r.metrics]
        if values:
            rest = tuple((k, v) for k, v in key if k not in ("method", *REPLICATE_AXES))
            settings[rest].append((str(axes.get("method")), values))
    lines = []
    for rest, entries in sorted(settings.items(), key=lambda kv: axes_order(kv[0])):
        entries.sort(key=lambda e: -float(np.mean(e[1])))
        lines.append(f"- ranking on {metric}" + (f" ({_where(dict(rest))})" if rest else "") + ":")
        for i, (name, values) in enumerate(entries):
            ties = [other for j, (other, v) in enumerate(entries) if j != i and _tied(values, v)]
            mean, std = mean_std(values)
            tie = f"; tied with {', '.join(ties)}" if ties else ""
            lines.append(f"  {i + 1}. {name} {fmt(mean, std)} ({seed_count(len(values))}{tie})")
    return lines


def seed_count(n: int) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{n} seed" + ("" if n == 1 else "s")


def _se(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def _tied(a: list[float], b: list[float]) -> bool:
    """Means within 2 standard errors of their difference (unknown spread: a tie only when equal)."""
    se = math.hypot(_se(a), _se(b))
    gap = abs(float(np.mean(a)) - float(np.mean(b)))
    return gap <= 2 * se if math.isfinite(se) else gap == 0


def diagnostics_table(records: list[RunRecord]) -> str:
    """Markdown: per run group, the means over seeds of RankMe (features, embedding), alignment,
    uniformity, normalised std and the loss's fall over the last quarter; empty when no record has
    diagnostics."""
    if not any(r.diagnostics for r in records):
        return ""
    header = [
        "method",
        "setting",
        "seeds",
        "RankMe features",
        "RankMe embedding",
        "alignment",
        "uniformity",
        "std (×√d)",
        "loss fall, last quarter",
    ]
    body = []
    for key, members in sorted(_by_group(records).items(), key=lambda kv: axes_order(kv[0])):
        axes = dict(key)
        d = group_diagnostics(members)

        def num(value: float, digits: int = 2, suffix: str = "") -> str:
            return f"{value:.{digits}f}{suffix}" if math.isfinite(value) else "–"

        body.append(
            [
                str(axes.get("method")),
                _where(axes),
                str(len(members)),
                f"{num(d['features_rankme'], 1)} / {num(d['features_dim'], 0)}",
                f"{num(d['embedding_rankme'], 1)} / {num(d['embedding_dim'], 0)}",
                num(d["embedding_alignment"] if math.isfinite(d["embedding_alignment"]) else d["features_alignment"]),
                num(
                    d["embedding_uniformity"] if math.isfinite(d["embedding_uniformity"]) else d["features_uniformity"]
                ),
                num(d["embedding_std"] if math.isfinite(d["embedding_std"]) else d["features_std"]),
                num(100 * d["fall"], 1, " %"),
            ]
        )
    return markdown_table(header, body)


def headline_table(records: list[RunRecord], metric: str, expected: dict[tuple, int] | None = None) -> str:
    """The README's compact table: per method row, the seeds done, ``metric`` and the kNN top-1 (mean ±
    sample std), the few-group accuracy of ``metric``'s probe, the margins over both floors on
    ``metric`` and the verdict: ``finding`` (over RandomInit clearly and over RawPixels by more than
    2 standard errors on ``metric`` and kNN), what it misses, or above the floors within their
    noise. ``expected`` (group key -> seeds planned) marks rows still running as ``n/N seeds``."""
    knn = knn_metric(records)
    probe = metric.rsplit("/", 1)[0]
    margins = floor_margins(records, metric)
    knn_margins = floor_margins(records, knn) if knn else {}
    header = [
        "method",
        "setting",
        "seeds",
        metric,
        knn or "kNN",
        f"{probe} few",
        "− RawPixels",
        "− RandomInit",
        "verdict",
    ]
    body = []
    groups = _by_group(records)
    for key in sorted(set(groups) | set(expected or {}), key=lambda k: (_floor_first(k), axes_order(k))):
        axes, members = dict(key), groups.get(key, [])
        if not members:
            body.append(
                [str(axes.get("method")), _where(axes), f"0/{expected[key]}", *["–"] * 3, "", "", "not run yet"]
            )
            continue

        few = next((k for r in members for k in r.metrics if k.startswith(probe + "/") and k.endswith("/acc_few")), "")
        entry, knn_entry = margins.get(key, {}), knn_margins.get(key, {})
        seeds = str(len({replicate(r.axes) for r in members}))
        if expected and key in expected and expected[key] > int(seeds):
            seeds = f"{seeds}/{expected[key]}"
        body.append(
            [
                str(axes.get("method")),
                _where(axes),
                seeds,
                _stat(members, metric),
                _stat(members, knn) if knn else "–",
                _stat(members, few) if few else "–",
                fmt(*entry["RawPixels"]) if "RawPixels" in entry else "",
                fmt(*entry["RandomInit"]) if "RandomInit" in entry else "",
                "" if axes.get("method") in FLOORS else _verdict(entry, knn_entry),
            ]
        )
    return markdown_table(header, body)


def _stat(members: list[RunRecord], name: str) -> str:
    values = [r.metrics[name] for r in members if name in r.metrics]
    return fmt(*mean_std(values)) if values else "–"


def _floor_first(key: tuple) -> int:
    method = dict(key).get("method")
    return FLOORS.index(method) if method in FLOORS else len(FLOORS)


def _verdict(entry: dict[str, Any], knn_entry: dict[str, Any]) -> str:
    # an encoder under the untrained one has learnt nothing that probe can see: named before RawPixels
    missed = [
        f"RandomInit ({probe})" for probe, e in (("linear", entry), ("kNN", knn_entry)) if e.get("clear") is False
    ]
    missed += [
        f"RawPixels ({probe})"
        for probe, e in (("linear", entry), ("kNN", knn_entry))
        if e.get("RawPixels", (1,))[0] <= 0
    ]
    if missed:
        return "misses " + ", ".join(missed)
    entries = [e for e in (entry, knn_entry) if "RawPixels" in e]
    if all(e.get("raw_clear") for e in entries):
        return "finding"
    seeds = min(e.get("RawPixels_n", 0) for e in entries)
    if seeds < 2:
        return "above both floors, one seed: no spread yet"
    return f"above both floors, within 2 standard errors of RawPixels ({seeds} seeds)"


def direction_lines(records: list[RunRecord], metric: str) -> list[str]:
    """Whether the seed paper's direction reproduces (Liu et al., ICLR 2022: a self-supervised
    encoder's robustness gap Δ = (A_bal − A_LT) / A_bal is smaller than the supervised one's), one
    line per method with balanced twins and per evaluation: Δ smaller than Supervised's by more than
    2 standard errors of the difference is the paper's direction, larger is the opposite, otherwise
    a tie. A row whose long-tailed encoder does not beat RawPixels by more than 2 standard errors
    (2 seeds or more) is said to be no finding; empty without twins of Supervised and of another method."""
    rows = robustness_rows(records, metric)
    reference = {(g.evaluation, _where(g.axes)): g for g in rows if g.axes.get("method") == REFERENCE}
    lines = []
    for g in rows:
        ref = reference.get((g.evaluation, _where(g.axes)))
        if ref is None or g is ref:
            continue
        diff = ref.gap[0] - g.gap[0]
        se = math.hypot(ref.gap[1] / math.sqrt(ref.seeds), g.gap[1] / math.sqrt(g.seeds))
        if min(g.seeds, ref.seeds) < 2:
            verdict = "one seed, no verdict yet"
        elif abs(diff) <= 2 * se:
            verdict = "a tie within 2 standard errors: neither direction is shown"
        elif diff > 0:
            verdict = "smaller: the paper's direction"
        else:
            verdict = "larger: against the paper's direction"
        where = _where(g.axes)
        line = (
            f"- **{g.axes.get('method')}** ({g.evaluation}{', ' + where if where else ''}): Δ {fmt(*g.gap)} % "
            f"against {REFERENCE}'s {fmt(*ref.gap)} % ({seed_count(min(g.seeds, ref.seeds))}): {verdict}"
        )
        raw = g.floors.get("RawPixels")
        caveat = _raw_pixels_caveat(raw, g.seeds) if raw is not None else None
        if caveat:
            line += f"; its long-tailed encoder {caveat}, so this Δ is no finding"
        lines.append(line)
    return lines


def _raw_pixels_caveat(margin: tuple[float, float], seeds: int) -> str | None:
    """How a long-tailed encoder's margin over RawPixels (mean, std over ``seeds``) falls short of a
    clear win, or ``None`` when it wins by more than 2 standard errors (or one seed cannot say)."""
    mean, std = margin
    if round(100 * mean, 2) == 0:
        return "only ties RawPixels"
    if mean < 0:
        return f"is {fmt(-mean, std)} points under RawPixels"
    if seeds >= 2 and math.isfinite(std) and mean <= 2 * std / math.sqrt(seeds):
        return f"is {fmt(mean, std)} points above RawPixels, within 2 standard errors"
    return None
