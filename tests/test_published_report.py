"""The `published` column (docs/methods.md §16): a spec's published numbers beside the measured ones,
marked as another setting, and the shipped specs carry the papers' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.sweep.published import parse_published, published_table
from lightning_ssl.sweep.record import RunRecord
from lightning_ssl.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]

BLOCK = [
    {
        "source": "BCL README",
        "setting": "CIFAR-100-LT split 1, ResNet-18, 2000 epochs",
        "values": {"SimCLR": {"linear_full/acc_top1": 50.7}, "BCL-D": {"linear_full/acc_top1": 58.7}},
    }
]


def record(method: str, seed: int, acc: float, **more: object) -> RunRecord:
    return RunRecord.from_json(
        {
            "run_id": f"{method}{seed}",
            "axes": {"method": method, "dataset": "DigitsLT", "seed": seed},
            "metrics": {"linear_full/acc_top1": acc},
            "per_class": {},
            "seed": seed,
            **more,
        }
    )


def test_the_table_has_a_published_column_and_the_difference() -> None:
    records = [record("SimCLR", 0, 0.60), record("SimCLR", 1, 0.62)]
    md, csv_text, notes = published_table(records, parse_published(BLOCK))
    header = md.splitlines()[0]
    assert "published (another setting)" in header and "measured − published" in header
    simclr = next(line for line in md.splitlines() if line.startswith("| SimCLR"))
    assert "61.00 ± 1.41" in simclr and "| 50.70 |" in simclr and "+10.30" in simclr
    bcl = next(line for line in md.splitlines() if line.startswith("| BCL-D"))
    assert "| 0 | – | 58.70 | – |" in bcl  # published, not run here
    assert "not the setting of this sweep" in notes[0] and "CIFAR-100-LT split 1" in notes[0]
    assert "10.3000" in csv_text.splitlines()[1]
    same = [{**BLOCK[0], "same_setting": True}]
    assert "| published |" in published_table(records, parse_published(same))[0].splitlines()[0]


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"source": "x"}, "must be a list"),
        ([{"source": "x", "values": {"A": {"m": 1.0}}}], "'setting' must say"),
        ([{"source": "x", "setting": "y", "values": {"A": {"m": 150.0}}}], r"in % \(0-100\)"),
        ([{"source": "x", "setting": "y", "values": {"A": {"m": 1.0}}, "year": 2022}], r"unknown key\(s\) \['year'\]"),
    ],
)
def test_a_malformed_entry_is_named(block: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_published(block)


def published_values(spec: str) -> dict[tuple[str, str], float]:
    entries = parse_published(load_spec(ROOT / "benchmarks" / spec).report.get("published"))
    return {(p.method, p.metric): p.value for p in entries}


def test_the_shipped_specs_carry_the_papers_numbers() -> None:
    bcl = {
        "SimCLR": (50.7, 46.3, 42.4),
        "SDCLR": (55.0, 49.7, 45.6),
        "BCL-I": (55.7, 50.1, 45.8),
        "BCL-D": (58.7, 52.6, 48.7),
    }
    sdclr = {"SimCLR": (78.18, 76.23, 71.37), "SDCLR": (86.44, 81.84, 76.23)}
    for spec in ("cifar100_lt_bcl.yaml", "lt_baselines_digits_cpu.yaml"):
        values = published_values(spec)
        for method, numbers in bcl.items():
            for probe, number in zip(("full", "100shot", "50shot"), numbers):
                assert values[(method, f"linear_{probe}/acc_top1")] == number
    for spec in ("cifar10_lt_sdclr.yaml", "lt_baselines_digits_cpu.yaml"):
        values = published_values(spec)
        for method, numbers in sdclr.items():
            for group, number in zip(("many", "medium", "few"), numbers):
                assert values[(method, f"linear_full/thirds/acc_{group}")] == number
    assert published_values("lt_baselines_digits_cpu.yaml")[("SimCLR+TS", "ts_knn1/acc_mean_class")] == 61.21


def test_write_report_adds_the_section_and_the_csv(tmp_path: Path) -> None:
    from lightning_ssl.sweep.publish import write_report

    records = [
        record("SimCLR", s, 0.6 + 0.01 * s, config={}, dataset="DigitsLT", finished=s, train={}, peak_memory={})
        for s in (0, 1)
    ]
    written = write_report(records, tmp_path, "t", plots=False, published=BLOCK)
    text = written["report.md"].read_text()
    assert "## Published numbers beside ours" in text and "published (another setting)" in text
    assert (tmp_path / "published.csv").is_file()
