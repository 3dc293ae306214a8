"""``OUT/summary.md`` of ``benchmarks/gpu_check.py``, from the part JSONs alone (standard library only)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _throughput(r: dict[str, Any]) -> str:
    cells = []
    for run in r.get("runs", []):
        if run["status"] != "ok":
            cells.append(f"{run['name']}: {run['status']}" + (f" ({run['reason']})" if run.get("reason") else ""))
            continue
        suite, conv = run["suite"], run["conventional"]
        cells.append(
            f"{run['name']}: {suite['images_per_s']:,.0f} img/s vs DataLoader {conv['images_per_s']:,.0f} "
            f"({run['speedup']:.1f}x), MFU {_pct(suite['mfu'])}, peak {suite['peak_memory_mb'] / 1024:.2f} GiB"
        )
    return "; ".join(cells)


def _kernels(r: dict[str, Any]) -> str:
    cells = []
    if "knn" in r:
        k = r["knn"]
        cells.append(f"kNN {k['bank']}x{k['queries']}x{k['dim']}: {k['seconds']:.3f} s")
    if "kmeans" in r:
        k = r["kmeans"]
        cells.append(f"k-means {k['n']}x{k['dim']} -> K={k['k']} (torch): {k['seconds']['torch']:.2f} s")
    return "; ".join(cells)


def _run(name: str, r: dict[str, Any], floors: dict[str, float]) -> str:
    """One pre-training run; the accuracies read n/a when the part ended before its probe."""
    eps = "n/a" if r["epochs_per_s"] is None else f"{r['epochs_per_s']:.2f}"
    stopped = " (stopped by max_time)" if r["stopped_by_max_time"] else ""
    return (
        f"{name}: {r['epochs_done']}/{r['epochs_planned']} epochs{stopped} of {r['pretrain_images']:,} images in "
        f"{r['train_seconds']:.0f} s ({eps} epochs/s); linear {_pct(r.get('linear_acc'))} "
        f"(floor {_pct(floors['linear'])}), kNN {_pct(r.get('knn_acc'))} (floor {_pct(floors['knn'])})"
    )


def _learning(r: dict[str, Any]) -> str:
    cells = []
    if "long_tailed" in r:
        cells.append(_run("LT", r["long_tailed"], r["floors"]))
    twin = r.get("balanced_twin")
    if twin is not None:
        cells.append(
            _run("balanced twin", twin, r["floors"])
            if twin["status"] == "ok"
            else f"balanced twin: {twin['status']} ({twin['reason']})"
        )
    return "; ".join(cells)


def _nonfinite(r: dict[str, Any]) -> str:
    if "ratio_ignore_over_raise" not in r:
        return ""
    return (
        f"raise {r['raise_images_per_s']:,.0f} img/s, ignore {r['ignore_images_per_s']:,.0f} img/s: "
        f"ignore/raise {r['ratio_ignore_over_raise']:.3f} (the check costs {r['check_cost_percent']:.1f} %)"
    )


FIGURES: dict[str, Callable[[dict[str, Any]], str]] = {
    "throughput": _throughput,
    "kernels": _kernels,
    "learning": _learning,
    "nonfinite": _nonfinite,
}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def summary(out: Path, parts: Sequence[Any]) -> str:
    """The Markdown summary: environment, one row per part, the goals, then the errors."""
    env = _load(out / "environment.json") or {}
    smoke = env.get("smoke", False)
    lines = [
        f"# GPU check: {env.get('device', '?')}" + (" (--smoke: CPU, tiny sizes; not GPU figures)" if smoke else ""),
        "",
        f"torch {env.get('torch', '?')}, CUDA {env.get('cuda')}, Python {env.get('python', '?')}, "
        f"{env.get('cpu_count', '?')} CPUs; faiss importable: {env.get('faiss_importable')}, "
        f"wandb importable: {env.get('wandb_importable')}; k-means backend timed: torch; "
        f"budget {env.get('budget_s', '?')} s.",
        "",
        "| part | status | seconds | figures |",
        "|---|---|---|---|",
    ]
    goals, errors = [], []
    for part in parts:
        record = _load(out / f"{part.name}.json")
        if record is None:
            lines.append(f"| {part.name} | missing | | no {part.name}.json |")
            continue
        results = record.get("results") or {}
        try:
            figures = FIGURES[part.name](results)
        except (KeyError, TypeError) as err:  # a partial record: say what is missing, keep the table
            figures = f"(incomplete results: {type(err).__name__} {err})"
        seconds = "" if record.get("seconds") is None else f"{record['seconds']:.0f}"
        lines.append(f"| {part.name} | {record['status']} | {seconds} | {figures} |")
        goals += results.get("goals", [])
        if record.get("error"):
            errors.append(f"- **{part.name}**: {record['error']}")
    if goals:
        lines += ["", "| goal | value | target | met |", "|---|---|---|---|"]
        for g in goals:
            value = "n/a" if g["value"] is None else f"{g['value']:.4g}"
            met = {True: "yes", False: "NO", None: "n/a"}[g["met"]]
            lines.append(f"| {g['name']} | {value} | {g['op']} {g['target']:g} | {met} |")
    if errors:
        lines += ["", "Errors (tracebacks in the part JSONs and logs):", *errors]
    return "\n".join(lines) + "\n"
