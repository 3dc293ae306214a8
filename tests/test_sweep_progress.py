"""The sweep's progress lines and the silencing of other libraries' per-run noise."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import pytest
from rich.console import Console

from lightning_ssl.cli import quiet
from lightning_ssl.cli.progress import SweepProgress, checking, run_label
from lightning_ssl.sweep.spec import Run


def run(run_id: str, method: str = "SimCLR", **axes: object) -> Run:
    return Run(
        run_id=run_id,
        axes={"method": method, **axes},
        method=method,
        dataset="DigitsLT",
        seed=int(axes.get("seed", 0)),
        config={},
        evaluation={},
        transfer=[],
    )


def test_labels_name_the_method_and_axes() -> None:
    assert run_label(run("a", balanced_twin=True, seed=0)) == "SimCLR twin=true seed=0"
    assert run_label(run("b", "MoCoV2", imbalance_ratio=0.01)) == "MoCoV2 ratio=0.01 seed=0"
    assert run_label(run("c"), with_dataset=True) == "SimCLR DigitsLT seed=0"


def test_one_line_per_finished_run_with_its_result(tmp_path: Path) -> None:
    runs = [run("r1", balanced_twin=False), run("r2", "MoCoV2", balanced_twin=True)]
    (tmp_path / "r1.json").write_text(json.dumps({"metrics": {"linear_full/acc_top1": 0.7125}}))
    console = Console(record=True, width=200, force_terminal=False)
    with SweepProgress(runs, tmp_path, console=console) as progress:
        progress.start(runs[0])
        progress.end(runs[0], "done")
        progress.start(runs[1])
        progress.end(runs[1], "failed", error=ValueError("lr=-0.1 must be > 0\nmore detail"))
    lines = console.export_text().splitlines()
    assert lines[0].startswith("1/2 done        r1 SimCLR twin=false seed=0  linear_full/acc_top1 71.25%  (")
    assert lines[1].startswith("2/2 failed      r2 MoCoV2 twin=true seed=0  ValueError: lr=-0.1 must be > 0  (")
    assert len(lines) == 2  # no live bar away from a terminal
    assert progress.last == "last: linear_full/acc_top1 71.25%"


@pytest.fixture
def restored_levels():
    levels = {name: logging.getLogger(name).level for name in quiet.NOISY_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("verbose", [False, True])
def test_noise_is_silenced_unless_verbose(
    restored_levels: None, verbose: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_fabric.utilities.seed import seed_everything

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.configure(verbose)
        seed_everything()  # "No seed found, seed set to 0"
        warnings.warn(
            "The number of training batches (3) is smaller than the logging interval Trainer(log_every_n_steps=50).",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("checkpoint last.ckpt is corrupted or truncated", UserWarning, stacklevel=1)  # ours: kept
    messages = [str(w.message) for w in caught]
    assert "checkpoint last.ckpt is corrupted or truncated" in messages
    assert any(m.startswith("No seed found") for m in messages) == verbose
    assert any(m.startswith("The number of training batches") for m in messages) == verbose
    assert (logging.getLogger("pytorch_lightning").getEffectiveLevel() >= logging.WARNING) or verbose
    assert (logging.getLogger("faiss.loader").getEffectiveLevel() >= logging.WARNING) or verbose


@pytest.mark.parametrize("terminal", [False, True])
def test_the_pre_flight_checks_show_a_spinner_on_a_terminal_only(terminal: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=terminal)
    with checking("leaderboard", console=console):
        pass
    assert ("checking the runs of leaderboard" in out.getvalue()) is terminal
    if terminal:  # transient: the line is erased when the checks end, and the cursor shown again
        assert "\x1b[2K" in out.getvalue().rsplit("leaderboard", 1)[1]  # ANSI "erase line" after it
