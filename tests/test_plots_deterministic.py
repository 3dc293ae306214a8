"""Plots are a function of the results: the same records give the same PNG bytes whatever order the
result files are read in (so ``make bench`` and ``lssl report`` leave the committed PNGs as they
are), and the titles count the methods' seeds, not the seedless RawPixels replicate as one more."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np

from lightning_ssl.sweep.plots import _seeds_text, seed_count, write_plots
from lightning_ssl.sweep.record import RunRecord

COUNTS = [40, 20, 10, 5]
GROUPS = {"many": [0, 1], "medium": [2], "few": [3]}


def record(method: str, seed: int | None, shift: float) -> RunRecord:
    axes: dict[str, Any] = {"method": method, "dataset": "DigitsLT"}
    if seed is not None:
        axes["seed"] = seed
    per_class = np.clip(np.array([0.9, 0.8, 0.6, 0.5]) + shift, 0, 1)
    metrics = {"linear_full/acc_top1": float(per_class.mean())}
    metrics.update({f"linear_full/thirds/acc_{g}": float(per_class[ids].mean()) for g, ids in GROUPS.items()})
    return RunRecord.from_json(
        {
            "run_id": f"{method}-{seed}",
            "method": method,
            "axes": axes,
            "metrics": metrics,
            "per_class": {"linear_full": per_class.tolist()},
            "evaluation": {"class_counts": COUNTS, "groups": GROUPS},
        }
    )


RECORDS = [record("RawPixels", None, 0.05)] + [
    record(m, s, 0.01 * s + d) for s in (0, 1) for m, d in (("RandomInit", -0.3), ("SimCLR", 0.0), ("MoCoV2", -0.1))
]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def test_same_results_same_bytes_in_any_order(tmp_path: Path) -> None:
    write_plots(RECORDS, tmp_path / "a", title="t")
    shuffled = RECORDS[:]
    random.Random(1).shuffle(shuffled)
    write_plots(shuffled, tmp_path / "b", title="t")
    first = digests(tmp_path / "a")
    assert len(first) == 2 and first == digests(tmp_path / "b")
    assert b"Matplotlib version" not in (tmp_path / "a" / "groups_DigitsLT.png").read_bytes()  # no Software entry


def test_titles_count_the_methods_seeds_not_the_seedless_floor() -> None:
    assert seed_count(RECORDS) == 2
    assert _seeds_text(RECORDS) == "2 seeds"
    assert _seeds_text([r for r in RECORDS if r.axes.get("seed") in (None, 0)]) == "1 seed, no error bars"
