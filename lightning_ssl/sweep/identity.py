"""Run identity and staleness: the rule, in one place.

**A run's id** is the first 10 hex digits of the SHA-1 of the canonical JSON of what changes its
numbers: the model and data classes, every resolved config value that differs from those classes'
defaults (:func:`settings_of`), the evaluation and transfer protocols, the options of the run's
pipeline (:data:`PIPELINE_OPTIONS_KEY`), and the floor kind.
Options that say where or how a run executes (:data:`NOT_HASHED`, :data:`NOT_HASHED_TRAINER`) are
left out, and so is an option written at its default value: an option added at its default, a
Lightning upgrade that adds a Trainer argument, or an explicit default leave the id unchanged.

**A stored result is stale** (:func:`stale_reason`) when the current code would not compute it:

* it was computed by another :data:`COMPUTE_VERSION`; the version is bumped whenever a change of
  the code changes what a run computes without changing its config (the probe's algorithm, a
  loss, an augmentation, a default), or, when the change alters one method's numbers only, that
  method's entry in :data:`METHOD_VERSIONS`. ``tests/test_compute_version.py`` holds the fingerprint of the
  computing code (:func:`compute_fingerprint`: the syntax trees of the packages that produce
  numbers, without docstrings, comments and formatting) recorded with the version, and fails when
  that code changes and the pair is not updated: bump the version, or, for a change that computes
  the same numbers, record the new fingerprint with the same version;
* its resolved config differs from the current resolution in a value that is not at its default
  (:func:`stale_keys`; checkpoint callbacks do not count: saving changes no number);
* its evaluation or transfer protocol differs;
* one of its linear probes stopped unconverged at a smaller step budget than the current recipe's
  (:func:`unconverged_probe`): L-BFGS takes the same path whatever its budget, so a probe that
  converged gives the same number under a larger one, and only one that ran out would change.

**A run folder's checkpoints** are resumed only for the identity they were trained for
(:func:`training_identity`: the compute version, the config, the pipeline's options).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from lightning_ssl.class_path import import_class
from lightning_ssl.config.registry import dataset_classes
from lightning_ssl.eval.linear import PROBE_RECIPES, make_recipe
from lightning_ssl.io import canonical_json, digest
from lightning_ssl.sweep.resolve import resolve_config

COMPUTE_VERSION = 2
# a change that alters the numbers of one method only bumps that method's version (DnC 1: the
# distillation loss divided by the head's output width, docs/methods.md §6.4), so the stored
# results of every other method stay current
METHOD_VERSIONS = {"DnC": 1}
# the field under which a run's pipeline options (None for a plain fit) enter its id and its
# training identity; the name is that of the first multi-stage pipeline, and every stored run id
# and run folder was made with it, so it stays
PIPELINE_OPTIONS_KEY = "dnc"
# what a run executes on, and how it is launched and resumed: not part of what it computes
NOT_HASHED_TRAINER = (
    "logger",
    "default_root_dir",
    "enable_progress_bar",
    "enable_model_summary",
    "devices",
    "num_nodes",
    "accelerator",
    "strategy",
)
NOT_HASHED = ("resume", "wandb_id", "ckpt_path", "ckpt_config")
# the code whose change can change a number: every module of these packages and files
COMPUTING_CODE = (
    "lightning_ssl/methods",
    "lightning_ssl/losses",
    "lightning_ssl/eval",
    "lightning_ssl/weights",
    "lightning_ssl/optim",
    "lightning_ssl/cluster",
    "lightning_ssl/backbones.py",
    "lightning_ssl/heads.py",
    "lightning_ssl/schedules.py",
    "lightning_ssl/pruning.py",
    "lightning_ssl/ema.py",
    "lightning_ssl/distributed.py",
    "datamodules",
)
ROOT = Path(__file__).resolve().parents[2]
_DEFAULTS: dict[str, dict[str, Any]] = {}


def run_hash(payload: dict[str, Any]) -> str:
    """Short id of a run: the first 10 hex digits of the SHA-1 of its canonical JSON."""
    return digest(payload, 10)


def is_launch_key(key: str) -> bool:
    """Whether a flattened config key says how a run is launched, not what it computes."""
    return key.split(".")[0] in NOT_HASHED or (key.startswith("trainer.") and key.split(".")[1] in NOT_HASHED_TRAINER)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def code_defaults(model_class: str, data_class: str) -> dict[str, Any]:
    """The flattened resolved config of ``lssl fit --model M --data D`` with nothing else set."""
    key = f"{model_class}|{data_class}"
    if key not in _DEFAULTS:
        # a datamodule may require options (ImageNetLT's root): its defaults come from its signature,
        # the rest (model, trainer, seed) from a full resolution with the embedded default data
        embedded = dataset_classes().get("DigitsLT", "datamodules.digits.DigitsLT")
        flat = flatten(resolve_config({"model": {"class_path": model_class}, "data": {"class_path": embedded}}))
        flat = {k: v for k, v in flat.items() if not k.startswith("data.")}
        flat["data.class_path"] = data_class
        flat.update({f"data.init_args.{k}": v for k, v in _signature_defaults(data_class).items()})
        _DEFAULTS[key] = flat
    return _DEFAULTS[key]


def _signature_defaults(class_path: str) -> dict[str, Any]:
    """``__init__`` defaults of a class as jsonargparse reads them (``**kwargs`` followed to parents);
    required options are left out."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(import_class(class_path), "x", fail_untyped=False)
    defaults = parser.get_defaults().as_dict().get("x", {})
    return flatten(defaults) if isinstance(defaults, dict) else {}


def settings_of(resolved: dict[str, Any], explicit: dict[str, Any]) -> dict[str, Any]:
    """The model and data classes, and the resolved values that differ from the code's defaults for
    those classes, flattened (``model.init_args.lr``).
    A list-valued option (trainer callbacks) counts as the spec wrote it, not as resolved, so that a
    callback gaining an option with a default leaves the id unchanged."""
    defaults = code_defaults(resolved["model"]["class_path"], resolved["data"]["class_path"])
    flat, written = flatten(resolved), flatten(explicit)
    # the classes themselves always count: the defaults are those of these very classes
    out = {"model.class_path": resolved["model"]["class_path"], "data.class_path": resolved["data"]["class_path"]}
    for key, value in flat.items():
        if isinstance(value, list) and key in written:
            value = written[key]
        elif isinstance(value, list) and key in defaults:
            continue  # a list the spec did not write: the code's default
        if key not in defaults or canonical_json(defaults[key]) != canonical_json(value):
            out[key] = value
    return out


def stale_keys(
    stored: dict[str, Any], current: dict[str, Any], stored_settings: dict[str, Any] | None = None
) -> list[str]:
    """Keys of a run's resolved config whose stored value differs from what the current code
    resolves; a key only one side has counts only when its value is not the code's default (an
    option added or removed at its default does not change what the run computes). A key the
    current code no longer has (a renamed or removed option) counts only when the run set it away
    from the default of its time, i.e. when it is in the record's ``stored_settings``."""
    defaults = code_defaults(current["model"]["class_path"], current["data"]["class_path"])
    a, b = flatten(stored), flatten(current)
    for flat in (a, b):
        if isinstance(flat.get("trainer.callbacks"), list):
            flat["trainer.callbacks"] = [c for c in flat["trainer.callbacks"] if not _saves_checkpoints(c)]
    out = []
    for key in sorted(set(a) | set(b)):
        if is_launch_key(key):
            continue
        if key in a and key in b:
            if canonical_json(a[key]) != canonical_json(b[key]):
                out.append(key)
        else:
            value = a.get(key, b.get(key))
            if key in a and key not in defaults and stored_settings is not None and key not in stored_settings:
                continue
            if key not in defaults or canonical_json(defaults[key]) != canonical_json(value):
                if isinstance(value, list) and key not in defaults:
                    continue
                out.append(key)
    return out


def _saves_checkpoints(callback: Any) -> bool:
    """A checkpoint callback: where and when a run saves does not change what it computes."""
    path = callback.get("class_path", "") if isinstance(callback, dict) else ""
    return path.rsplit(".", 1)[-1].endswith("ModelCheckpoint")


def method_key(run: Any) -> str:
    """The key of ``run``'s method in :data:`METHOD_VERSIONS`: the name of the class the spec named
    (``run.method_class``: a pipeline's method, whose config may be another class's), else that
    of the trained class."""
    named = getattr(run, "method_class", "") or ((run.config or {}).get("model") or {}).get("class_path", "")
    return str(named).rsplit(".", 1)[-1]


def method_version(run: Any) -> int:
    """The version of ``run``'s method (0 for a method never bumped)."""
    return METHOD_VERSIONS.get(method_key(run), 0)


def stale_reason(record: dict[str, Any], run: Any) -> str | None:
    """Why a stored result is not what the current code would compute for ``run`` (a
    :class:`~lightning_ssl.sweep.spec.Run`); ``None``: it is."""
    version = record.get("compute_version", 1)
    if version != COMPUTE_VERSION:
        return f"computed by code version {version}, the current code is version {COMPUTE_VERSION}"
    if record.get("method_version", 0) != method_version(run):
        return (
            f"computed by {method_key(run)} version {record.get('method_version', 0)}, the current code is "
            f"version {method_version(run)}"
        )
    keys = stale_keys(record.get("config") or {}, run.config, record.get("settings"))
    if keys:
        return f"config differs in {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
    for name, want in (("evaluation_protocol", run.evaluation), ("transfer_protocol", run.transfer)):
        if canonical_json(record.get(name)) != canonical_json(want):
            return f"{name} differs"
    return unconverged_probe(record)


def unconverged_probe(record: dict[str, Any]) -> str | None:
    """Why a probe of ``record`` (in-domain or transfer) would change today: it stopped unconverged
    after spending a step budget smaller than its recipe's current one; ``None`` otherwise."""
    linears = [(record.get("evaluation") or {}).get("linear") or {}]
    linears += [(t or {}).get("linear") or {} for t in (record.get("transfer") or {}).values() if isinstance(t, dict)]
    for linear in linears:
        for name, probe in (linear.get("runs") or {}).items():
            recipe = probe.get("recipe") or {}
            if probe.get("converged", True) or recipe.get("steps") is None or recipe.get("name") not in PROBE_RECIPES:
                continue
            options = {k: v for k, v in (linear.get("options") or {}).items() if k == "steps"}
            budget = make_recipe(recipe["name"], **options).steps
            if budget is not None and int(recipe["steps"]) < int(budget):
                return (
                    f"{name} stopped unconverged at its budget of {recipe['steps']} steps; the budget is now {budget}"
                )
    return None


def training_identity(run: Any) -> dict[str, Any]:
    """What the checkpoints of a run folder were trained for: a checkpoint of another identity
    (an older code version, another config) is never resumed."""
    identity = {"compute_version": COMPUTE_VERSION, "config": run.config, PIPELINE_OPTIONS_KEY: run.options}
    if method_version(run):  # absent for a method never bumped: the folders of older runs still match
        identity["method_version"] = method_version(run)
    return identity


def _tree_without_docstrings(source: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def compute_fingerprint(root: Path = ROOT) -> str:
    """SHA-1 over the syntax trees (docstrings, comments and formatting left out) of the modules in
    :data:`COMPUTING_CODE`, in path order: changes when code that can change a number changes."""
    sha = hashlib.sha1()
    for entry in COMPUTING_CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        for file in files:
            sha.update(str(file.relative_to(root)).encode())
            sha.update(_tree_without_docstrings(file.read_text()).encode())
    return sha.hexdigest()
