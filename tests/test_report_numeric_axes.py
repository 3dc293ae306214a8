"""A sweep with a numeric grid axis (a budget study over ``trainer.max_epochs``): its values order by
number (30 before 120), its rows stay apart in the plots (two budgets are never one row's "seeds"),
and the report plots accuracy against the axis with the floors, from hand-computed means."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lightning_ssl.sweep.diagnosis import diagnosis_lines, headline_table, ranking_lines
from lightning_ssl.sweep.plots import _by_method, axis_series, numeric_axes, write_plots
from lightning_ssl.sweep.record import RunRecord
from lightning_ssl.sweep.report import floor_notes, main_table, natural, setting_lines

COUNTS = [40, 20, 10, 5]
GROUPS = {"many": [0, 1], "medium": [2], "few": [3]}
EPOCHS = "trainer.max_epochs"


def record(method: str, seed: int | None, epochs: int | None, linear: float, knn: float) -> RunRecord:
    axes: dict[str, Any] = {"method": method, "dataset": "DigitsLT"}
    if seed is not None:
        axes["seed"] = seed
    if epochs is not None:
        axes[EPOCHS] = epochs
    return RunRecord.from_json(
        {
            "run_id": f"{method}-{seed}-{epochs}",
            "method": method,
            "axes": axes,
            "config": {"trainer": {"max_epochs": epochs}},
            "metrics": {"linear_full/acc_top1": linear, "knn_k200_t0.1/acc_top1": knn},
            "per_class": {"linear_full": [linear] * 4},
            "evaluation": {"class_counts": COUNTS, "groups": GROUPS},
        }
    )


FLOORS = [record("RawPixels", None, None, 0.80, 0.78), record("RandomInit", 0, None, 0.60, 0.55)]
# SimCLR at 30 and 120 epochs, two seeds each; the 120-epoch runs listed first
RUNS = [
    record("SimCLR", 0, 120, 0.86, 0.83),
    record("SimCLR", 1, 120, 0.88, 0.81),
    record("SimCLR", 0, 30, 0.84, 0.79),
    record("SimCLR", 1, 30, 0.85, 0.80),
]


def test_numbers_sort_by_value_and_text_after() -> None:
    assert sorted([120, 30, 60], key=natural) == [30, 60, 120]
    assert sorted(["b", 2.5, True, 10], key=natural) == [2.5, 10, True, "b"]  # a bool sorts as the text "True"


def test_each_budget_is_its_own_row_in_axis_order() -> None:
    rows = _by_method(FLOORS + RUNS)
    assert list(rows) == ["RawPixels", "RandomInit", f"SimCLR {EPOCHS}=30", f"SimCLR {EPOCHS}=120"]
    assert [r.axes["seed"] for r in rows[f"SimCLR {EPOCHS}=120"]] == [0, 1]


def test_accuracy_against_the_axis_is_the_mean_and_sample_std_over_seeds() -> None:
    assert numeric_axes(FLOORS + RUNS) == [EPOCHS]
    assert numeric_axes(FLOORS + RUNS[:2]) == []  # one value: nothing to plot against
    series = axis_series(FLOORS + RUNS, EPOCHS, "knn_k200_t0.1/acc_top1")
    ((label, points),) = series.items()
    assert label == "SimCLR"
    (x30, m30, s30, n30), (x120, m120, s120, n120) = points
    assert (x30, n30, x120, n120) == (30.0, 2, 120.0, 2)
    assert m30 == pytest.approx(79.5) and s30 == pytest.approx(math.sqrt(0.5))  # 79 and 80
    assert m120 == pytest.approx(82.0) and s120 == pytest.approx(math.sqrt(2.0))  # 83 and 81
    (single,) = axis_series(FLOORS + RUNS[:1] + RUNS[2:3], EPOCHS, "linear_full/acc_top1").values()
    assert math.isnan(single[0][2]) and single[0][3] == 1  # one seed: no std


def test_the_report_orders_budgets_by_number_and_plots_them(tmp_path: Path) -> None:
    records = FLOORS + RUNS
    md, _ = main_table(records)
    lines = [line for line in md.splitlines() if line.startswith("| SimCLR |")]
    assert [line.split(" | ")[2] for line in lines] == ["30", "120"]
    headline = [line for line in headline_table(records, "linear_full/acc_top1").splitlines() if "SimCLR" in line]
    assert [EPOCHS + "=30" in headline[0], EPOCHS + "=120" in headline[1]] == [True, True]
    ranked = [line for line in ranking_lines(records, "linear_full/acc_top1") if line.startswith("- ranking")]
    assert [line.endswith(f"{EPOCHS}=30):") for line in ranked] == [True, False]
    assert "- epochs: 30, 120;" in "\n".join(setting_lines(records))
    written = {p.name for p in write_plots(records, tmp_path, title="budget")}
    assert f"{EPOCHS}_DigitsLT.png" in written and (tmp_path / f"{EPOCHS}_DigitsLT.png").stat().st_size > 0


def test_floors_without_a_finished_method_say_so() -> None:
    assert floor_notes(FLOORS) == ["- floors: no method's run has finished yet to compare with them"]
    assert "add `floors:`" in floor_notes(RUNS)[0]
    assert setting_lines(FLOORS)[0].startswith("- runs: 2 (2 floors)")


def test_a_row_under_its_floor_names_what_the_budget_axis_measured() -> None:
    # RawPixels' kNN at 84 %: both budgets miss it (79.5 % and 82.0 % over their two seeds)
    floors = [record("RawPixels", None, None, 0.80, 0.84), FLOORS[1]]
    knn = {
        line.split("(dataset=DigitsLT, ", 1)[1].split(")")[0]: line
        for line in diagnosis_lines(floors + RUNS, "linear_full/acc_top1")
        if "knn_" in line
    }
    assert knn[f"{EPOCHS}=30"].endswith(f"measured: at {EPOCHS}=120 it reads 82.00 % (+2.50 points)")
    assert knn[f"{EPOCHS}=120"].endswith(f"measured: {EPOCHS}=30 → 120 gained +2.50 points")
    alone = diagnosis_lines(floors + RUNS[:2], "linear_full/acc_top1")  # one budget: nothing measured
    assert not any("measured" in line for line in alone)
