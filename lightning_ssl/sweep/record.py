"""A run's result as typed fields, and the statuses a run goes through.

The runner writes each finished run's result as one JSON file (``results/<sweep>/<run id>.json``,
docs/design.md §8); :class:`RunRecord` is how the report, its diagnosis and its plots read it. The
JSON on disk is the record of truth and is never rewritten from a ``RunRecord``: ``raw`` keeps it
as read, and a field missing from an older file takes the default its reader needs.

:class:`RunStatus` names what ``lssl sweep`` says about a run (``finished``, ``stale``, ``pending``,
...). It is a ``str``, so a status compares equal to its name and prints as it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

DEFAULT_METRIC = "linear_full/acc_top1"  # what a report compares runs by unless its spec says otherwise


class RunStatus(str, Enum):
    """Where a run stands, as ``lssl sweep`` reports it."""

    PENDING = "pending"  # nothing of it on disk
    RUNNING = "running"  # another runner holds its live lock
    INTERRUPTED = "interrupted"  # a checkpoint in its run folder, no result: the next sweep resumes it
    FAILED = "failed"  # it raised; ``<run id>.failed.json`` holds the traceback, the next sweep retries it
    FINISHED = "finished"  # its result was on disk before this sweep started
    STALE = "stale"  # a result the current code would not reproduce (kept unless --rerun-stale)
    LOCKED = "locked"  # another runner took it while this one waited
    DONE = "done"  # this sweep ran it and wrote its result

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class RunRecord:
    """The fields of a result JSON that the report reads.

    Attributes:
        run_id: the run's id (``lightning_ssl.sweep.identity``).
        axes: the sweep axes of the run (``method``, ``dataset``, ``seed``, ...).
        metrics: every probe's metrics by name (``linear_full/acc_top1``, ...), fractions in [0, 1].
        per_class: per-class accuracies by probe name.
        method, dataset, sweep: the run's method and dataset labels, and its sweep's name.
        seed: the run's seed (``None`` for a floor without randomness).
        finished: when the result was written (seconds since the epoch; 0 when not recorded).
        num_pretrain: images in the pre-training set (NaN when not recorded).
        config: the resolved ``lssl fit`` config the run trained with.
        settings: what determines the run's result (its identity); the config when not recorded.
        protocols: the evaluation protocol, the transfer protocol and the compute version.
        evaluation: the offline evaluation's record (group rule, groups, class counts, probes).
        transfer: each transfer set's result by name.
        train: what training measured (time per epoch, global batch, devices).
        peak_memory_bytes: peak memory of the run (NaN when not recorded).
        hardware: the machine (``gpu``, ``cpu``).
        diagnostics: the collapse diagnostics (``features``, ``embedding``, ``loss_trend``).
        stale: why the current code would not reproduce this result, when it would not (set by
            ``lssl report SPEC``, never stored).
        raw: the JSON as read.
    """

    run_id: str
    axes: dict[str, Any]
    metrics: dict[str, float]
    per_class: dict[str, list[float]] = field(default_factory=dict)
    method: str | None = None
    dataset: str | None = None
    sweep: str | None = None
    seed: Any = None
    finished: float = 0.0
    num_pretrain: float = math.nan
    config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    protocols: tuple[Any, Any, Any] = (None, None, None)
    evaluation: dict[str, Any] = field(default_factory=dict)
    transfer: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    peak_memory_bytes: float = math.nan
    hardware: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    stale: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record of a result JSON as loaded (``json.load``); ``ValueError`` naming the missing
        key when it lacks ``run_id``, ``axes`` or ``metrics``."""
        missing = [k for k in ("run_id", "axes", "metrics") if k not in data]
        if missing:
            raise ValueError(f"a result record needs {', '.join(missing)}; got keys {', '.join(sorted(data))}")
        config = data.get("config") or {}
        return cls(
            run_id=data["run_id"],
            axes=dict(data["axes"]),
            metrics=dict(data["metrics"]),
            per_class=dict(data.get("per_class") or {}),
            method=data.get("method"),
            dataset=data.get("dataset"),
            sweep=data.get("sweep"),
            seed=data.get("seed"),
            finished=data.get("finished", 0.0),
            num_pretrain=data.get("num_pretrain", math.nan),
            config=config,
            settings=data.get("settings") or config,
            protocols=(data.get("evaluation_protocol"), data.get("transfer_protocol"), data.get("compute_version")),
            evaluation=data.get("evaluation") or {},
            transfer=data.get("transfer") or {},
            train=data.get("train") or {},
            peak_memory_bytes=(data.get("peak_memory") or {}).get("bytes", math.nan),
            hardware=data.get("hardware") or {},
            diagnostics=data.get("diagnostics") or {},
            raw=data,
        )

    # -- what the report's tables read ----------------------------------------------------------
    @property
    def time_per_epoch_s(self) -> float:
        """Seconds per epoch of training; NaN when the record's clock cannot be right (more training
        seconds than the run's wall time: records of runs resumed mid-epoch before the clock started
        at the first batch counted from the machine's boot)."""
        seconds, wall = self.train.get("train_seconds"), self.raw.get("wall_time_s")
        if seconds is not None and wall is not None and seconds > wall:
            return math.nan
        return self.train.get("time_per_epoch_s") or math.nan

    @property
    def peak_memory_mib(self) -> float:
        return self.peak_memory_bytes / 2**20

    @property
    def group_rule(self) -> str | None:
        return self.evaluation.get("group_rule")

    @property
    def groups(self) -> dict[str, list[int]]:
        """Class ids of each group (many / medium / few) of the pre-training set."""
        return self.evaluation.get("groups") or {}

    @property
    def class_counts(self) -> list[int]:
        return self.evaluation["class_counts"]

    @property
    def backbone(self) -> Any:
        return self.config.get("model", {}).get("init_args", {}).get("backbone")

    @property
    def max_epochs(self) -> Any:
        return self.config.get("trainer", {}).get("max_epochs")

    @property
    def machine(self) -> Any:
        """The GPU the run used, else its CPU."""
        return self.hardware.get("gpu") or self.hardware.get("cpu")

    @property
    def linear_probe(self) -> dict[str, Any]:
        """The linear probe's record: its ``recipe`` name and ``runs`` (one per probe set)."""
        return self.evaluation.get("linear") or {}

    def transfer_metrics(self) -> dict[str, dict[str, float]]:
        """Each transfer set's metrics by name."""
        return {name: result.get("metrics", {}) for name, result in self.transfer.items()}

    def diagnostic(self, part: str, key: str) -> float | None:
        """A number of the collapse diagnostics (``part`` ``features`` or ``embedding``), if recorded."""
        value = (self.diagnostics.get(part) or {}).get(key)
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def loss_trend(self) -> dict[str, Any] | None:
        """Whether the training loss still fell over the run's last quarter, and by how much."""
        return self.diagnostics.get("loss_trend")
