"""`lssl report`: tables and plots from hand-made result JSONs with hand-computable numbers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lightning_ssl.cli.report import run as report_cli
from lightning_ssl.sweep.publish import write_report
from lightning_ssl.sweep.record import RunRecord, RunStatus
from lightning_ssl.sweep.report import main_table, mean_std, robustness_rows
from lightning_ssl.sweep.runner import load_results

COUNTS = [100, 60, 40, 30, 20, 15, 12, 11, 10, 10]


def record(
    method: str,
    seed: int,
    twin: bool,
    acc: float,
    groups: tuple[float, float, float],
    n: int = 308,
    subsample: float = 1.0,
    transfer: float | None = None,
) -> dict:
    many, medium, few = groups
    metrics = {
        "linear_full/acc_top1": acc,
        "linear_full/acc_mean_class": acc,
        "linear_full/std_class": 0.1,
        "linear_full/thirds/acc_many": many,
        "linear_full/thirds/acc_medium": medium,
        "linear_full/thirds/acc_few": few,
        "linear_full/thirds/std": float(np.std(groups)),
        "knn_k200_t0.1/acc_top1": acc / 2,
    }
    rec = {
        "run_id": f"{method}-{seed}-{twin}-{subsample}",
        "method": method,
        "dataset": "DigitsLT",
        "seed": seed,
        "axes": {"method": method, "dataset": "DigitsLT", "balanced_twin": twin, "subsample": subsample, "seed": seed},
        "config": {"model": {"init_args": {"backbone": "resnet_tiny"}}, "trainer": {"max_epochs": 3}},
        "metrics": metrics,
        "per_class": {"linear_full": [acc] * 10, "knn_k200_t0.1": [acc / 2] * 10},
        "evaluation": {"class_counts": COUNTS, "group_rule": "thirds"},
        "num_pretrain": n,
        "train": {"time_per_epoch_s": 2.0 + seed, "global_batch": 128, "devices": 1},
        "peak_memory": {"bytes": (100 + 10 * seed) * 2**20, "kind": "peak_rss"},
        "hardware": {"cpu": "test cpu"},
        "transfer": {},
    }
    if transfer is not None:
        rec["transfer"] = {"stl": {"metrics": {"linear_full/acc_top1": transfer}}}
    return rec


def records() -> list[dict]:
    return [
        record("SimCLR", 0, False, 0.5, (0.6, 0.5, 0.4), transfer=0.3),
        record("SimCLR", 1, False, 0.7, (0.8, 0.7, 0.5), transfer=0.5),
        record("SimCLR", 0, True, 0.8, (0.8, 0.8, 0.8), transfer=0.6),
        record("SimCLR", 1, True, 0.8, (0.8, 0.8, 0.8), transfer=0.5),
        record("Supervised", 0, False, 0.4, (0.7, 0.4, 0.1)),
        record("Supervised", 0, True, 0.8, (0.8, 0.8, 0.8)),
        record("SimCLR", 0, False, 0.3, (0.3, 0.3, 0.3), n=154, subsample=0.5),
        record("SimCLR", 0, True, 0.6, (0.6, 0.6, 0.6), n=154, subsample=0.5),
    ]


def typed(recs: list[dict]) -> list[RunRecord]:
    """Result JSONs as the report reads them."""
    return [RunRecord.from_json(r) for r in recs]


def test_mean_std_is_sample_std() -> None:
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))
    mean, std = mean_std([0.4])
    assert mean == 0.4 and math.isnan(std)


def test_main_table_numbers(tmp_path: Path) -> None:
    md, csv_text = main_table(typed(records()))
    # SimCLR LT: acc 50 / 70 -> 60 ± 14.14 (sample std); many 60/80 -> 70 ± 14.14; few 40/50 -> 45 ± 7.07
    line = next(row for row in md.splitlines() if row.startswith("| SimCLR | DigitsLT | False | 1.0 |"))
    assert "| 2 | 60.00 ± 14.14 | 70.00 ± 14.14 | 60.00 ± 14.14 | 45.00 ± 7.07 |" in line
    assert "| 2.50 ± 0.71 | 105 ± 7 |" in line  # time per epoch 2 / 3 s, peak memory 100 / 110 MiB
    rows = list(csv.DictReader(csv_text.splitlines()))
    sup = next(r for r in rows if r["method"] == "Supervised" and r["balanced_twin"] == "False")
    assert float(sup["linear_full/all_mean"]) == pytest.approx(40.0)
    assert sup["linear_full/all_std"] == ""  # one seed: no std
    assert float(sup["linear_full/std_mean"]) == pytest.approx(100 * np.std([0.7, 0.4, 0.1]), abs=1e-3)
    assert float(sup["knn_k200_t0.1/all_mean"]) == pytest.approx(20.0)


def test_robustness_gap_per_seed() -> None:
    rows = {(g.axes["method"], g.axes["subsample"], g.evaluation): g for g in robustness_rows(typed(records()))}
    simclr = rows[("SimCLR", 1.0, "ID")]
    # per seed: (0.8-0.5)/0.8 = 0.375, (0.8-0.7)/0.8 = 0.125 -> 0.25 ± 0.1768
    assert simclr.gap == pytest.approx((0.25, math.sqrt(2 * 0.125**2)))
    assert simclr.a_bal[0] == pytest.approx(0.8) and simclr.a_lt[0] == pytest.approx(0.6)
    assert rows[("Supervised", 1.0, "ID")].gap[0] == pytest.approx(0.5)
    assert rows[("SimCLR", 0.5, "ID")].gap[0] == pytest.approx(0.5) and rows[("SimCLR", 0.5, "ID")].num_pretrain == 154
    ood = rows[("SimCLR", 1.0, "OOD:stl")]  # (0.6-0.3)/0.6 = 0.5, (0.5-0.5)/0.5 = 0
    assert ood.gap[0] == pytest.approx(0.25)


def test_report_cli_writes_tables_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "results" / "demo"
    folder.mkdir(parents=True)
    for rec in records():
        (folder / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    (folder / "x.failed.json").write_text(json.dumps({"run_id": "x", "error": "boom"}))  # skipped
    assert len(load_results(folder)) == len(records())
    assert report_cli([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Robustness" in out and "Δ SimCLR (%)" in out and "25.00 ± 17.68" in out
    for name in ("report.md", "summary.csv", "robustness.csv", "gap_vs_n.png"):
        assert (folder / name).is_file(), name
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert any(p.startswith("per_class_") for p in pngs) and any(p.startswith("groups_") for p in pngs)
    assert all((folder / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not list(folder.glob(".*tmp*"))


def test_report_of_empty_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no finished results"):
        write_report([], tmp_path)
    assert report_cli([str(tmp_path)]) == 2


def floor(method: str, seed: int, twin: bool, acc: float, per_class: list[float] | None = None) -> dict:
    rec = record(method, seed, twin, acc, (acc, acc, acc))
    rec["axes"] = {k: v for k, v in rec["axes"].items() if k != "seed" or method == "RandomInit"}
    if per_class is not None:
        rec["per_class"]["linear_full"] = per_class
    return rec


def test_floors_margins_and_the_not_trained_flag() -> None:
    from lightning_ssl.sweep.report import floor_margins, floor_notes

    recs = typed(
        records()
        + [floor("RawPixels", 0, False, 0.55), floor("RandomInit", 0, False, 0.45), floor("RandomInit", 1, False, 0.46)]
    )
    margins = {
        dict(k)["method"]: v
        for k, v in floor_margins(recs).items()
        if not dict(k)["balanced_twin"] and dict(k)["subsample"] == 1.0
    }
    # SimCLR LT: 0.5 / 0.7 against RandomInit 0.45 / 0.46 (paired by seed) -> +0.05, +0.24
    assert margins["SimCLR"]["RandomInit"] == pytest.approx((0.145, math.sqrt(2 * 0.095**2)))
    # RawPixels has one replicate (nothing random): it serves both seeds: -0.05, +0.15
    assert margins["SimCLR"]["RawPixels"][0] == pytest.approx(0.05)
    # mean 14.5 points but 2 standard errors = 2 * 0.134 / sqrt(2) = 0.19: not clearly above
    assert margins["SimCLR"]["clear"] is False
    assert margins["Supervised"]["RandomInit"][0] == pytest.approx(-0.05) and margins["Supervised"]["clear"] is False
    notes = floor_notes(recs)
    assert any("**Supervised**" in n and "not been trained yet" in n for n in notes)
    md, _ = main_table(recs)
    lines = md.splitlines()
    first = [i for i, row in enumerate(lines) if row.startswith("| RawPixels | DigitsLT | False | 1.0 |")]
    assert first and first[0] < next(
        i for i, row in enumerate(lines) if row.startswith("| SimCLR | DigitsLT | False | 1.0 |")
    )
    assert "**no: not trained yet**" in next(row for row in lines if row.startswith("| Supervised | DigitsLT | False"))


def test_a_row_level_with_or_under_raw_pixels_is_named() -> None:
    from lightning_ssl.sweep.report import floor_notes

    recs = typed(
        [floor("RawPixels", 0, False, 0.55), floor("RandomInit", 0, False, 0.30), floor("RandomInit", 1, False, 0.31)]
        + [record("SimCLR", s, False, 0.55, (0.5,) * 3) for s in (0, 1)]
        + [record("Supervised", s, False, 0.50, (0.5,) * 3) for s in (0, 1)]
    )
    notes = "\n".join(floor_notes(recs))
    assert "**SimCLR** (balanced_twin=False, dataset=DigitsLT, subsample=1.0) only ties RawPixels on" in notes
    assert (
        "**Supervised** (balanced_twin=False, dataset=DigitsLT, subsample=1.0) is 5.00 points below RawPixels" in notes
    )
    assert "-0.00" not in notes


def test_per_class_gap_is_relative_to_the_twin_per_class_then_grouped() -> None:
    from lightning_ssl.sweep.report import per_class_gap_rows

    lt = record("SimCLR", 0, False, 0.5, (0.5, 0.5, 0.5))
    bal = record("SimCLR", 0, True, 0.8, (0.8, 0.8, 0.8))
    lt["per_class"]["linear_full"] = [0.9, 0.8, 0.4, 0.2]
    bal["per_class"]["linear_full"] = [0.9, 1.0, 0.5, 0.4]
    lt["evaluation"]["groups"] = {"many": [0, 1], "medium": [2], "few": [3]}
    (row,) = per_class_gap_rows(typed([lt, bal]))
    # per class: 0, 0.2, 0.2, 0.5 -> many 0.1, medium 0.2, few 0.5, all 0.225
    assert row.gaps["many"][0] == pytest.approx(0.1) and row.gaps["medium"][0] == pytest.approx(0.2)
    assert row.gaps["few"][0] == pytest.approx(0.5) and row.gaps["all"][0] == pytest.approx(0.225)


def test_rows_count_distinct_seeds_and_refuse_to_average_different_settings(tmp_path: Path) -> None:
    from lightning_ssl.sweep.report import check_rows

    a, b = record("SimCLR", 0, False, 0.5, (0.5,) * 3), record("SimCLR", 0, False, 0.6, (0.6,) * 3)
    a["finished"], b["finished"] = 1.0, 2.0
    b["run_id"] = "newer"
    skipped: list[str] = []
    kept = check_rows(typed([a, b]), skipped)
    assert [r.run_id for r in kept] == ["newer"] and "same run group and seed" in skipped[0]
    md, _ = main_table(kept)
    assert "| SimCLR | DigitsLT | False | 1.0 | 1 | 60.00 |" in md  # one distinct seed, not two
    c = record("SimCLR", 1, False, 0.7, (0.7,) * 3)
    c["config"] = {**c["config"], "trainer": {"max_epochs": 9}}
    with pytest.raises(ValueError, match=r"differ in trainer\.max_epochs, not only in the seed"):
        check_rows(typed([a, c]), [])


def test_report_skips_an_unreadable_result_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    for rec in records():
        (folder / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    (folder / "broken.json").write_text('{"run_id": "broken", "metr')
    assert report_cli([str(folder), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 result(s)" in captured.err
    assert "broken.json: not a readable result" in (folder / "report.md").read_text()
    assert (folder / "broken.json").read_text() == '{"run_id": "broken", "metr'  # left as it was


def test_a_missing_floor_seed_is_not_filled_in_by_another_seed() -> None:
    from lightning_ssl.sweep.report import floor_margins

    # RandomInit finished for seed 0 only: seed 1 of SimCLR has no floor to be paired with
    recs = typed(records() + [floor("RandomInit", 0, False, 0.45)])
    margin = next(
        v
        for k, v in floor_margins(recs).items()
        if dict(k)["method"] == "SimCLR" and not dict(k)["balanced_twin"] and dict(k)["subsample"] == 1.0
    )
    assert margin["RandomInit_n"] == 1 and margin["RandomInit"][0] == pytest.approx(0.05)


def test_a_record_reads_the_json_and_names_a_missing_key() -> None:
    rec = record("SimCLR", 0, False, 0.5, (0.6, 0.5, 0.4))
    typed_rec = RunRecord.from_json(rec)
    assert typed_rec.raw is rec and typed_rec.settings == rec["config"]  # no settings recorded: the config
    assert (typed_rec.time_per_epoch_s, typed_rec.peak_memory_mib, typed_rec.machine) == (2.0, 100.0, "test cpu")
    assert math.isnan(RunRecord.from_json({"run_id": "x", "axes": {}, "metrics": {}}).peak_memory_mib)
    with pytest.raises(ValueError, match="a result record needs metrics"):
        RunRecord.from_json({"run_id": "x", "axes": {}})


def test_a_status_is_its_name_wherever_a_string_is_expected() -> None:
    outcome = {RunStatus.DONE: ["a"], "failed": ["b"]}
    assert outcome["done"] == ["a"] and outcome[RunStatus.FAILED] == ["b"]
    assert f"{RunStatus.STALE:<7}|{RunStatus.PENDING}" == "stale  |pending"
    assert json.dumps([RunStatus.INTERRUPTED]) == '["interrupted"]' and RunStatus("locked") is RunStatus.LOCKED
