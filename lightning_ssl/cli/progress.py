"""The progress display of ``lssl sweep`` / ``lssl bench``: a spinner while the runs are checked, a
rich bar (run i/N, the run's axes, elapsed, ETA, last result) and one line per finished run.

On a terminal the spinner and the bar are live and disappear when done; elsewhere (a log file, CI) only the
per-run lines are written, so a log stays one line per run.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lightning_ssl.sweep.record import RunStatus
from lightning_ssl.sweep.spec import Run

SHORT_AXES = {"balanced_twin": "twin", "imbalance_ratio": "ratio", "data_seed": "data_seed"}


@contextlib.contextmanager
def checking(spec_name: str, console: Console | None = None) -> Iterator[None]:
    """A spinner while a sweep's runs are resolved and checked before the first one trains (half a
    minute for a spec of 500 runs); rich draws it on a terminal only (a log gets nothing), and it is
    gone when the checks end."""
    console = console or Console(stderr=True)
    with console.status(f"checking the runs of {spec_name} (every config through the lssl fit parser)"):
        yield


def run_label(run: Run, with_dataset: bool = False) -> str:
    """``SimCLR twin=true seed=0``: the method, then every other axis (``dataset`` only when
    ``with_dataset``: it is an axis of the sweep), booleans in lower case."""

    def show(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    parts = [run.method] + ([run.dataset] if with_dataset else [])
    parts += [f"{SHORT_AXES.get(k, k)}={show(v)}" for k, v in run.axes.items() if k not in ("method", "dataset")]
    if "seed" not in run.axes:
        parts.append(f"seed={run.seed}")
    return " ".join(parts)


def headline(result_path: Path, metric: str) -> str:
    """``linear_full/acc_top1 71.25%`` from a finished result file ('' when it has no such metric)."""
    try:
        value = json.loads(result_path.read_text()).get("metrics", {}).get(metric)
    except (OSError, ValueError):
        return ""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    return f"{metric} {100 * value:.2f}%"


class SweepProgress:
    """Context manager fed by :func:`lightning_ssl.sweep.launchers.run_local` (``start(run)``,
    ``end(run, status)``).

    Args:
        runs: the runs this call will go through (the N of "run i/N").
        results: the sweep's results folder (``<results>/<sweep>``), read for the last result.
        metric: the accuracy shown per run (the spec's ``report.metric``).
        console: where to write (default: standard error; tests pass a recording console).
    """

    def __init__(
        self, runs: list[Run], results: Path, metric: str = "linear_full/acc_top1", console: Console | None = None
    ) -> None:
        self.total = len(runs)
        self.results = Path(results)
        self.metric = metric
        self.console = console or Console(stderr=True)
        self.with_dataset = len({r.dataset for r in runs}) > 1
        self.last = ""
        self._started = 0.0
        self._index = 0
        self._progress = Progress(
            TextColumn("[bold]run {task.completed}/{task.total}[/] {task.fields[label]}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[last]}"),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )
        self._task = self._progress.add_task("sweep", total=self.total, label="", last="")

    def __enter__(self) -> SweepProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, run: Run) -> None:
        self._index += 1
        self._started = time.perf_counter()
        self._progress.update(self._task, label=run_label(run, self.with_dataset), last=self.last)

    def end(self, run: Run, status: RunStatus, error: BaseException | None = None) -> None:
        seconds = time.perf_counter() - self._started
        detail = ""
        if status == RunStatus.DONE:
            detail = headline(self.results / f"{run.run_id}.json", self.metric)
            self.last = detail and f"last: {detail}"
        elif status == RunStatus.FAILED:
            detail = f"{type(error).__name__}: {error}".splitlines()[0] if error is not None else ""
        elif status == RunStatus.INTERRUPTED:
            detail = "preempted; its checkpoint is saved, run the sweep again to resume"
        line = f"{self._index}/{self.total} {RunStatus(status):<11} {run.run_id} {run_label(run, self.with_dataset)}"
        line += f"  {detail}" if detail else ""
        if status in (RunStatus.DONE, RunStatus.FAILED, RunStatus.INTERRUPTED):
            line += f"  ({seconds:.0f} s)"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._progress.update(self._task, advance=1, last=self.last)
