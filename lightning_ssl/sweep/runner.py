"""Execute one run of a sweep: pre-train, evaluate offline (and on transfer sets), store one JSON.

Layout: ``<results>/<sweep>/<run_id>.json`` (the result, written atomically, last), ``<run_id>.lock``
(while a runner holds it), ``<run_id>.failed.json`` (the traceback of a run that raised; it is
retried next time); ``<work>/<sweep>/<run_id>/`` holds the run's logs and checkpoints, and
``checkpoints/last.ckpt`` (saved every epoch) is where an interrupted run resumes. A run whose
result exists is never run again. How a run trains is its pipeline's business
(:mod:`lightning_ssl.sweep.pipelines`: one fit, no training for a floor, or a method's own stages,
which keep their folders below the run folder and resume stage by stage); the runner evaluates and
records whatever it trained, the same way for every method.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_ssl.class_path import import_class
from lightning_ssl.eval.diagnostics import loss_trend, offline_diagnostics, training_view_batches
from lightning_ssl.eval.features import feature_dim
from lightning_ssl.eval.finetune import (
    DEFAULT_FINETUNE_RECIPE,
    finetune_and_predict,
    finetune_recipe,
)
from lightning_ssl.eval.metrics import group_report, per_class_accuracy
from lightning_ssl.eval.offline import evaluate_frozen
from lightning_ssl.io import atomic_write_json, canonical_json
from lightning_ssl.sweep import environment
from lightning_ssl.sweep.identity import (
    COMPUTE_VERSION,
    method_version,
    stale_reason,
    training_identity,
)
from lightning_ssl.sweep.lock import RunLock, is_stale
from lightning_ssl.sweep.pipelines import Pipeline
from lightning_ssl.sweep.record import RunStatus
from lightning_ssl.sweep.resolve import instantiate_data
from lightning_ssl.sweep.spec import Run, SweepSpec

SCHEMA = 1
IDENTITY = "training.json"  # in the run folder: what its checkpoints were trained for


@dataclass
class SweepPaths:
    """Where a sweep's results and run folders live."""

    results: Path  # <results>/<sweep>
    work: Path  # <work>/<sweep>

    @classmethod
    def of(
        cls, spec: SweepSpec, results_root: str | Path = "results", work_root: str | Path = "runs/sweeps"
    ) -> SweepPaths:
        return cls(Path(results_root) / spec.name, Path(work_root) / spec.name)

    def result(self, run_id: str) -> Path:
        return self.results / f"{run_id}.json"

    def lock(self, run_id: str) -> Path:
        return self.results / f"{run_id}.lock"

    def failed(self, run_id: str) -> Path:
        return self.results / f"{run_id}.failed.json"

    def run_dir(self, run_id: str) -> Path:
        return self.work / run_id

    def last_checkpoint(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoints" / "last.ckpt"


def read_result(path: Path) -> dict[str, Any] | None:
    """A result file's record, or ``None`` when it does not parse (a truncated or foreign file)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "run_id" in record and "metrics" in record else None


def run_status(paths: SweepPaths, run_id: str, run: Run | None = None) -> RunStatus:
    """``finished`` | ``stale`` (a result the current code would not reproduce; needs ``run``) |
    ``running`` (a live lock) | ``failed`` | ``interrupted`` (a checkpoint in the run folder, at any
    depth, no result) | ``pending``. A result file that does not parse counts as unfinished."""
    if paths.result(run_id).is_file():
        record = read_result(paths.result(run_id))
        if record is not None:
            return RunStatus.STALE if run is not None and stale_reason(record, run) else RunStatus.FINISHED
    lock = paths.lock(run_id)
    if lock.exists() and not is_stale(lock):
        return RunStatus.RUNNING
    if paths.failed(run_id).is_file():
        return RunStatus.FAILED
    folder = paths.run_dir(run_id)
    if paths.last_checkpoint(run_id).is_file() or (folder.is_dir() and next(folder.rglob("*.ckpt"), None)):
        return RunStatus.INTERRUPTED
    return RunStatus.PENDING


def _session_config(
    run: Run, paths: SweepPaths, trainer_overrides: dict[str, Any], wandb: str | None
) -> dict[str, Any]:
    """The run's config plus where it writes: logs and ``last.ckpt`` in its run folder."""
    config = copy.deepcopy(run.config)
    run_dir = paths.run_dir(run.run_id)
    trainer = config.setdefault("trainer", {})
    trainer.update(trainer_overrides)
    trainer["default_root_dir"] = str(run_dir)
    trainer["logger"] = [
        {
            "class_path": "lightning_ssl.loggers.ResumableCSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": "logs", "version": 0},
        }
    ]
    callbacks = [
        c for c in trainer.get("callbacks") or [] if not str(c.get("class_path", "")).endswith("ModelCheckpoint")
    ]
    callbacks.append(
        {
            "class_path": "lightning_ssl.checkpoints.AtomicModelCheckpoint",
            "init_args": {"dirpath": str(run_dir / "checkpoints")},
        }
    )
    trainer["callbacks"] = callbacks
    if wandb:
        config["wandb"] = wandb
        config["wandb_id"] = f"{run.run_id}"  # a resumed run continues the same W&B run
    return config


def _transfer(model: Any, entry: dict[str, Any], evaluation: dict[str, Any], seed: int, device: str) -> dict[str, Any]:
    dm = instantiate_data(entry["data"])
    if entry.get("mode", "linear") == "linear":
        options = {k: v for k, v in evaluation.items() if k != "probe_sets"}
        return evaluate_frozen(model, dm, probe_sets=entry.get("probe_sets"), seed=seed, device=device, **options)
    dm.setup("fit")
    tuned = copy.deepcopy(model)
    lr = entry.get("lr")
    recipe = finetune_recipe(
        entry.get("recipe", DEFAULT_FINETUNE_RECIPE),
        epochs=entry.get("epochs"),
        iterations_per_epoch=entry.get("iterations"),
        head_lr=lr,
        backbone_lr=None if lr is None else 0.1 * float(lr),
    )
    pred, target = finetune_and_predict(
        tuned,
        feature_dim(tuned, dm.test_dataloader()),
        dm,
        recipe=recipe,
        accelerator="gpu" if device == "cuda" else "cpu",
        seed=seed,
    )
    groups = {k: list(map(int, v)) for k, v in dm.class_groups.items()}
    return {
        "metrics": group_report(pred, target, dm.num_classes, groups, dm.group_rule, "finetune"),
        "finetune_recipe": recipe.record(),
        "per_class": {"finetune": per_class_accuracy(pred, target, dm.num_classes).tolist()},
        "group_rule": dm.group_rule,
        "groups": groups,
        "class_counts": list(map(int, dm.class_counts)),
    }


def execute(
    run: Run,
    spec: SweepSpec,
    paths: SweepPaths,
    trainer_overrides: dict[str, Any] | None = None,
    wandb: str | None = None,
) -> dict[str, Any]:
    """Pre-train (or resume), evaluate and return the result record (not written)."""
    started = time.time()
    environment.reset_peak_memory()
    config = _session_config(run, paths, dict(trainer_overrides or {}), wandb)
    pipeline: type[Pipeline] = import_class(run.pipeline)
    trained = pipeline.train(run, config, paths.run_dir(run.run_id))
    model, datamodule, device, train = trained.model, trained.datamodule, trained.device, trained.train
    eval_started = time.perf_counter()
    model.eval()
    offline = evaluate_frozen(model, datamodule, seed=run.seed, device=device, **run.evaluation)
    transfer = {entry["name"]: _transfer(model, entry, run.evaluation, run.seed, device) for entry in run.transfer}
    diagnostics = offline_diagnostics(model, training_view_batches(datamodule, seed=run.seed), device)
    diagnostics["loss_trend"] = loss_trend(trained.losses) if trained.losses is not None else None
    train["eval_seconds"] = time.perf_counter() - eval_started
    return {
        "schema": SCHEMA,
        "compute_version": COMPUTE_VERSION,
        "method_version": method_version(run),
        "sweep": spec.name,
        "reference": run.reference,
        "settings": run.settings,
        "run_id": run.run_id,
        "method": run.method,
        "dataset": run.dataset,
        "axes": run.axes,
        "seed": run.seed,
        "config": run.config,
        "evaluation_protocol": run.evaluation,
        "transfer_protocol": run.transfer,
        "pipeline": run.pipeline,
        "pipeline_options": run.options,
        "metrics": offline.pop("metrics"),
        "per_class": offline.pop("per_class"),
        "online": trained.online,
        "evaluation": offline,
        "transfer": transfer,
        "diagnostics": diagnostics,
        "num_pretrain": int(sum(offline["class_counts"])),
        "train": train,
        "wall_time_s": time.time() - started,
        "peak_memory": environment.peak_memory(),
        "hardware": environment.hardware(),
        "versions": environment.versions(),
        "git_commit": environment.git_commit(),
        "started": started,
        "finished": time.time(),
        "trainer_overrides": dict(trainer_overrides or {}),
    }


def _set_aside(path: Path) -> Path:
    """Move an unreadable result out of the way (kept for inspection, never deleted)."""
    target = path.with_name(f"{path.stem}.unreadable-{int(time.time())}.json.bad")
    path.replace(target)
    return target


def _claim_run_dir(run: Run, paths: SweepPaths) -> None:
    """Before training: clear the run folder when its checkpoints were trained for another identity
    (e.g. ``--rerun-stale`` after a code or config change: the stale run's finished checkpoint
    must not be resumed), then record the current identity. A folder without a record (from a
    version of the suite that wrote none) is cleared too when a stored result of the run is stale."""
    folder, marker = paths.run_dir(run.run_id), paths.run_dir(run.run_id) / IDENTITY
    want = json.loads(canonical_json(training_identity(run)))
    recorded = None
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            recorded = None
    stale_result = paths.result(run.run_id).is_file()  # existing() let it through: stale or unreadable
    if folder.is_dir() and recorded != want and (recorded is not None or stale_result):
        shutil.rmtree(folder)
    atomic_write_json(marker, want)


def run_one(
    run: Run,
    spec: SweepSpec,
    paths: SweepPaths,
    trainer_overrides: dict[str, Any] | None = None,
    wandb: str | None = None,
    rerun_stale: bool = False,
) -> RunStatus:
    """Run ``run`` unless it is finished or held by another runner. Returns ``finished`` (already
    there), ``stale`` (a result the current code would not reproduce, kept unless ``rerun_stale``),
    ``locked``, or ``done``; an exception inside the run is recorded in ``<run_id>.failed.json`` and
    re-raised. The result JSON is written atomically, last (a stale one is replaced only then).
    A result file that does not parse is moved aside and the run is run again."""

    def existing() -> RunStatus | None:
        path = paths.result(run.run_id)
        if not path.is_file():
            return None
        record = read_result(path)
        if record is None:
            print(f"lssl sweep: {path} does not parse; moved to {_set_aside(path)} and running the run again")
            return None
        if stale_reason(record, run):
            return None if rerun_stale else RunStatus.STALE
        return RunStatus.FINISHED

    status = existing()
    if status:
        return status
    with RunLock(paths.lock(run.run_id)) as held:
        if not held:
            return RunStatus.LOCKED
        status = existing()  # finished while we waited for the lock
        if status:
            return status
        _claim_run_dir(run, paths)
        try:
            record = execute(run, spec, paths, trainer_overrides, wandb)
        except Exception:
            atomic_write_json(
                paths.failed(run.run_id),
                {"run_id": run.run_id, "axes": run.axes, "error": traceback.format_exc(), "time": time.time()},
            )
            raise
        atomic_write_json(paths.result(run.run_id), record)
        paths.failed(run.run_id).unlink(missing_ok=True)
    return RunStatus.DONE


def load_results(folder: str | Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Every finished result under ``folder`` (``*.json`` with a ``run_id``; lock, failure and
    temporary files are skipped). A file that does not parse is skipped, and a line naming it and
    the fix is appended to ``skipped``."""
    out = []
    for path in sorted(Path(folder).rglob("*.json")):
        if path.name.endswith(".failed.json") or path.name.startswith("."):
            continue
        record = read_result(path)
        if record is None:
            if skipped is not None:
                skipped.append(
                    f"{path}: not a readable result (truncated or not written by lssl sweep); "
                    "delete it, or run the sweep again to recompute it"
                )
            continue
        out.append(record)
    return out
