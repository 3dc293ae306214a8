"""`lssl report`: tables and plots from hand-made result JSONs with hand-computable numbers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lightning_ssl.cli.report import run as report_cli
from lightning_ssl.sweep.report import main_table, mean_std, robustness_rows, write_report
from lightning_ssl.sweep.runner import load_results

COUNTS = [100, 60, 40, 30, 20, 15, 12, 11, 10, 10]


def record(method: str, seed: int, twin: bool, acc: float, groups: tuple[float, float, float],
           n: int = 308, subsample: float = 1.0, transfer: float | None = None) -> dict:
    many, medium, few = groups
    metrics = {"linear_full/acc_top1": acc, "linear_full/acc_mean_class": acc, "linear_full/std_class": 0.1,
               "linear_full/thirds/acc_many": many, "linear_full/thirds/acc_medium": medium,
               "linear_full/thirds/acc_few": few, "linear_full/thirds/std": float(np.std(groups)),
               "knn_k200_t0.1/acc_top1": acc / 2}
    rec = {
        "run_id": f"{method}-{seed}-{twin}-{subsample}", "method": method, "dataset": "DigitsLT", "seed": seed,
        "axes": {"method": method, "dataset": "DigitsLT", "balanced_twin": twin, "subsample": subsample, "seed": seed},
        "config": {"model": {"init_args": {"backbone": "resnet_tiny"}}, "trainer": {"max_epochs": 3}},
        "metrics": metrics, "per_class": {"linear_full": [acc] * 10, "knn_k200_t0.1": [acc / 2] * 10},
        "evaluation": {"class_counts": COUNTS, "group_rule": "thirds"}, "num_pretrain": n,
        "train": {"time_per_epoch_s": 2.0 + seed, "global_batch": 128, "devices": 1},
        "peak_memory": {"bytes": (100 + 10 * seed) * 2**20, "kind": "peak_rss"}, "hardware": {"cpu": "test cpu"},
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


def test_mean_std_is_sample_std() -> None:
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))
    mean, std = mean_std([0.4])
    assert mean == 0.4 and math.isnan(std)


def test_main_table_numbers(tmp_path: Path) -> None:
    md, csv_text = main_table(records())
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
    rows = {(g.axes["method"], g.axes["subsample"], g.evaluation): g for g in robustness_rows(records())}
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
