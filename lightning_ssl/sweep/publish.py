"""A sweep's report on disk: ``report.md`` (settings, floors, tables), CSVs and PNG plots.

Lives above :mod:`lightning_ssl.sweep.report` (tables) and :mod:`lightning_ssl.sweep.plots`
(figures), which do not import each other's writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_ssl.io import atomic_write_text
from lightning_ssl.sweep.diagnosis import (
    COLLAPSED_RANK,
    COLLAPSED_STD,
    REFERENCE,
    UNSTABLE_STD,
    diagnosis_lines,
    diagnostics_table,
    direction_lines,
    headline_table,
    ranking_lines,
)
from lightning_ssl.sweep.plots import write_plots
from lightning_ssl.sweep.published import parse_published, published_table
from lightning_ssl.sweep.record import RunRecord
from lightning_ssl.sweep.report import (
    DEFAULT_METRIC,
    check_rows,
    floor_notes,
    group_key,
    main_table,
    per_class_gap_table,
    replicate,
    robustness_tables,
    setting_lines,
)


def planned_seeds(runs: list[Any]) -> dict[tuple, int]:
    """Seeds (replicates) a spec plans per run group, from its expanded runs."""
    counts: dict[tuple, set] = {}
    for run in runs:
        counts.setdefault(group_key(run.axes), set()).add(replicate(run.axes))
    return {k: len(v) for k, v in counts.items()}


def write_report(
    records: list[RunRecord],
    out_dir: str | Path,
    title: str = "sweep",
    metric: str = DEFAULT_METRIC,
    plots: bool = True,
    skipped: list[str] | None = None,
    published: Any = None,
    expected: dict[tuple, int] | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``summary.csv``, ``robustness.csv`` (when there are balanced twins) and
    the PNG plots into ``out_dir``; returns the written paths by name. ``skipped`` lines (results
    left out, and why) are listed in the report; duplicates of a replicate are added to them.
    ``published``: the spec's ``report.published`` entries, shown beside the measured numbers
    (``published.csv``, :mod:`lightning_ssl.sweep.published`). ``expected``: seeds planned per run
    group (:func:`planned_seeds`), so that rows still running say ``n/N seeds``."""
    skipped = list(skipped or [])
    records = check_rows(records, skipped)
    if not records:
        raise ValueError(f"no finished results to report for {title!r} (run `lssl sweep` first)")
    out = Path(out_dir)
    md, csv_text = main_table(records, metric)
    long_md, side_md, gap_csv = robustness_tables(records, metric)
    parts = [f"# {title}", "", *setting_lines(records), *floor_notes(records, metric)]
    if any(r.stale for r in records):
        parts.append(
            "- † stale: computed by other code or settings than the current code would use "
            "(`lssl sweep SPEC --rerun-stale` recomputes them)"
        )
    if skipped:
        parts.append(f"- skipped {len(skipped)} result(s):")
        parts += [f"  - {line}" for line in skipped]
    parts += ["", "## Headline", "", headline_table(records, metric, expected), ""]
    direction = direction_lines(records, metric)
    if direction:
        parts += [
            f"Does the robustness gap Δ = (A_bal − A_LT) / A_bal on {metric} of self-supervised encoders come "
            f"out smaller than {REFERENCE}'s, as Liu et al. (ICLR 2022) found?",
            "",
            *direction,
            "",
        ]
    parts += ["## Results", "", md, ""]
    pub_md, pub_csv, pub_notes = published_table(records, parse_published(published))
    if pub_md:
        parts += ["## Published numbers beside ours", "", pub_md, "", *pub_notes, ""]
    parts += [
        "## Ranking and diagnosis",
        "",
        *ranking_lines(records, metric),
        "",
        "Rows that miss a floor, and why (docs/protocols.md §11.1: collapsed = features RankMe under "
        f"{100 * COLLAPSED_RANK:.0f} % of their dimension or embedding std under {COLLAPSED_STD}; under-trained = "
        "the loss still fell over 2 % in the last quarter in most seeds; unstable = seeds spread over "
        f"{100 * UNSTABLE_STD:.0f} points; otherwise the recipe):",
        "",
        *diagnosis_lines(records, metric),
        "",
    ]
    table = diagnostics_table(records)
    if table:
        parts += [
            "### Collapse diagnostics (means over seeds)",
            "",
            "RankMe (Garrido et al. 2023) of the backbone features and of the embedding on 2,048 training "
            "images seen as two views; alignment and uniformity (Wang & Isola 2020) and the std of the "
            "normalised embedding × √d (SimSiam; 1 isotropic, 0 collapsed) of the embedding (of the "
            "features for methods without one); the training loss's fall over the run's last quarter.",
            "",
            table,
            "",
        ]
    written = {"summary.csv": atomic_write_text(out / "summary.csv", csv_text)}
    if pub_csv:
        written["published.csv"] = atomic_write_text(out / "published.csv", pub_csv)
    if long_md:
        parts += [
            f"## Robustness: balanced vs long-tailed at equal n ({metric})",
            "",
            "Δ = (A_bal − A_LT) / A_bal (Liu et al., ICLR 2022, docs/protocols.md §9)",
            "",
            side_md,
            "",
            long_md,
            "",
        ]
        written["robustness.csv"] = atomic_write_text(out / "robustness.csv", gap_csv)
        per_class = per_class_gap_table(records, metric)
        if per_class:
            parts += [
                "### Per-class Δ against the balanced-twin encoder",
                "",
                "Δ_c = (a_bal,c − a_LT,c) / a_bal,c per class, averaged over each group's classes, then "
                "over seeds (docs/protocols.md §9.2): free of the class-difficulty confound of the group "
                "accuracies.",
                "",
                per_class,
                "",
            ]
    if plots:
        pngs = write_plots(records, out, metric, title)
        written.update({p.name: p for p in pngs})
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    written["report.md"] = atomic_write_text(out / "report.md", "\n".join(parts))
    return written
