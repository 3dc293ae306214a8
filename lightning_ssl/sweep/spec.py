"""Sweep specifications: a YAML file = a base ``lssl fit`` config + grid axes + evaluation protocol.

Format (every top-level key is optional except ``grid``; unknown keys are an error)::

    name: default                 # the sweep's name: results go to results/<name>/ (default: file stem)
    description: ...
    base:                         # an `lssl fit` config (LightningCLI): model / data / trainer / seed_everything
      model: {class_path: SimCLR, init_args: {backbone: resnet_tiny}}
      data: {class_path: DigitsLT, init_args: {batch_size: 128}}
      trainer: {max_epochs: 10}
    grid:                         # the runs are the cartesian product of the axes
      method: [SimCLR, SimCLR+rwSAM, Supervised, DnC]   # names of METHOD_AXES or variants below
      dataset: [DigitsLT]
      balanced_twin: [false, true]
      seed: [0, 1, 2]
      model.lr: [0.1, 0.3]        # any dotted config key (model./data. keys go to init_args)
    methods:                      # variants: name -> dotted overrides (``class``: the method class)
      SimCLR+rwSAM: {class: SimCLR, model.sam: {rho: 0.05, weights: kde}}
      MTTV: {data.clean_view: true}
    datasets:                     # the same for datasets (per-dataset sizes, roots, schedules)
      FashionMNISTLT: {data.root: /usr/share/datasets/fashion-mnist, model.in_chans: 1}
    evaluation: {linear_epochs: 100, knn_k: 200}     # keyword arguments of eval.offline.evaluate_frozen
    transfer:                     # out-of-domain evaluations of every run's backbone
      - {name: stl10, data: {class_path: ImageFolderLT, init_args: {...}}, mode: linear}
    dnc: {num_clusters: 2, base_epochs: 5, expert_epochs: 5, distill_epochs: 5}   # runs of method DnC
    report: {metric: linear_full/acc_top1}           # the robustness table's accuracy

Named axes: ``method`` (``model.class_path``), ``dataset`` (``data.class_path``), ``profile``,
``imbalance_ratio``, ``subsample``, ``balanced_twin``, ``head_order`` (``data.<name>``), ``data_seed``
(``data.seed``: the long-tailed selection) and ``seed`` (``seed_everything``, ``data.view_seed`` and
the probe's seed). Every expanded run is parsed by LightningCLI's own parser (nothing is
instantiated) before any run starts, so a typo fails at once, naming the key and the choices.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import itertools
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOP_LEVEL_KEYS = ("name", "description", "base", "grid", "methods", "datasets", "evaluation", "transfer", "dnc",
                  "report", "launcher")
DATA_AXES = ("profile", "imbalance_ratio", "subsample", "balanced_twin", "head_order")
NAMED_AXES = ("method", "dataset", "seed", "data_seed", *DATA_AXES)
DOTTED_ROOTS = ("model", "data", "trainer", "seed_everything")
TRANSFER_KEYS = ("name", "data", "mode", "epochs", "lr", "probe_sets")
TRANSFER_MODES = ("linear", "finetune")
DNC_KEYS = ("num_clusters", "base_epochs", "expert_epochs", "distill_epochs", "kmeans_iterations",
            "kmeans_backend", "distill")
DNC = "DnC"
# trainer options that say where/how a run executes, not what it computes: not part of the run id
NOT_HASHED_TRAINER = ("logger", "default_root_dir", "enable_progress_bar", "enable_model_summary", "devices",
                      "num_nodes", "accelerator", "strategy")


def method_classes() -> dict[str, str]:
    """Built-in methods: bare class name -> class path (every ``SSLMethod`` subclass in
    ``lightning_ssl.methods``). ``DnC`` is the multi-stage pipeline, run as a method too."""
    import lightning_ssl.methods as pkg
    from lightning_ssl.methods.base import SSLMethod

    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, SSLMethod) and obj is not SSLMethod \
                    and obj.__module__ == module.__name__:
                found[name] = f"{obj.__module__}.{name}"
    return found


def dataset_classes() -> dict[str, str]:
    """Registered datamodules: class name -> class path (``datamodules.REGISTRY``)."""
    import datamodules

    return {v.split(":")[1]: v.replace(":", ".") for v in datamodules.REGISTRY.values()}


def _importable(path: str) -> bool:
    module, _, name = path.rpartition(".")
    if not module:
        return False
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``config[a][init_args][b] = value`` for ``key = "a.b"`` when ``a`` is ``model``/``data``
    (class-path blocks), plain nesting otherwise."""
    parts = key.split(".")
    if parts[0] not in DOTTED_ROOTS:
        raise ValueError(f"config key {key!r} must start with one of {', '.join(DOTTED_ROOTS)}")
    if parts[0] in ("model", "data") and len(parts) > 1 and parts[1] not in ("class_path", "init_args"):
        parts = [parts[0], "init_args", *parts[1:]]
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"config key {key!r}: {part!r} is not a section")
    node[parts[-1]] = copy.deepcopy(value)


def get_dotted(config: dict[str, Any], key: str, default: Any = None) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def run_hash(payload: dict[str, Any]) -> str:
    """Short id of a run: the first 10 hex digits of the SHA-1 of its canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class Run:
    """One expanded run: ``config`` is the fully resolved LightningCLI config (defaults filled in)."""

    run_id: str
    axes: dict[str, Any]
    method: str  # the method's label (a variant name such as "SimCLR+rwSAM", or "DnC")
    dataset: str
    seed: int
    config: dict[str, Any]
    evaluation: dict[str, Any]
    transfer: list[dict[str, Any]]
    dnc: dict[str, Any] | None = None

    @property
    def is_dnc(self) -> bool:
        return self.dnc is not None

    def hashed(self) -> dict[str, Any]:
        """What the run id is computed from: everything that changes the result."""
        config = copy.deepcopy(self.config)
        for key in NOT_HASHED_TRAINER:
            config.get("trainer", {}).pop(key, None)
        return {"config": config, "evaluation": self.evaluation, "transfer": self.transfer, "dnc": self.dnc}


@dataclass
class SweepSpec:
    name: str
    path: Path | None
    description: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    dnc: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    launcher: dict[str, Any] = field(default_factory=dict)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check the shape of a spec file (keys, axis names, sections); :func:`expand` then
    checks every run's config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} does not exist (shipped specs are in benchmarks/*.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    return spec_from_dict(raw, default_name=path.stem, path=path)


def spec_from_dict(raw: dict[str, Any], default_name: str = "sweep", path: Path | None = None) -> SweepSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"a sweep spec is a YAML mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in sweep spec {path or ''}; valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ValueError("the spec needs a non-empty 'grid' mapping of axis -> list of values")
    for axis, values in grid.items():
        if axis not in NAMED_AXES and axis.split(".")[0] not in DOTTED_ROOTS:
            raise ValueError(f"unknown grid axis {axis!r}; valid axes: {', '.join(NAMED_AXES)}, or a dotted "
                             f"config key under {', '.join(DOTTED_ROOTS)} (e.g. model.lr)")
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid axis {axis!r} must be a non-empty list, got {values!r}")
    evaluation = dict(raw.get("evaluation") or {})
    from lightning_ssl.eval.offline import evaluate_frozen

    eval_keys = [p for p in inspect.signature(evaluate_frozen).parameters if p not in ("model", "datamodule",
                                                                                     "progress", "device", "seed")]
    bad = sorted(set(evaluation) - set(eval_keys))
    if bad:
        raise ValueError(f"unknown evaluation key(s) {bad}; valid keys: {', '.join(eval_keys)}")
    transfer = list(raw.get("transfer") or [])
    for entry in transfer:
        bad = sorted(set(entry) - set(TRANSFER_KEYS))
        if bad or "name" not in entry or "data" not in entry:
            raise ValueError(f"transfer entry {entry!r}: needs 'name' and 'data'; valid keys: {', '.join(TRANSFER_KEYS)}")
        if entry.get("mode", "linear") not in TRANSFER_MODES:
            raise ValueError(f"transfer {entry['name']!r}: mode {entry['mode']!r}; valid: {', '.join(TRANSFER_MODES)}")
    dnc = dict(raw.get("dnc") or {})
    bad = sorted(set(dnc) - set(DNC_KEYS))
    if bad:
        raise ValueError(f"unknown dnc key(s) {bad}; valid keys: {', '.join(DNC_KEYS)}")
    for section in ("methods", "datasets"):
        for variant, overrides in (raw.get(section) or {}).items():
            for key in overrides or {}:
                if key != "class" and key.split(".")[0] not in DOTTED_ROOTS:
                    raise ValueError(f"{section}.{variant}: unknown key {key!r}; use 'class' or a dotted config key "
                                     f"under {', '.join(DOTTED_ROOTS)}")
    return SweepSpec(
        name=str(raw.get("name") or default_name), path=path, description=str(raw.get("description") or ""),
        base=copy.deepcopy(raw.get("base") or {}), grid=grid, methods=dict(raw.get("methods") or {}),
        datasets=dict(raw.get("datasets") or {}), evaluation=evaluation, transfer=transfer, dnc=dnc,
        report=dict(raw.get("report") or {}), launcher=dict(raw.get("launcher") or {}),
    )


def _resolve_class(label: str, variants: dict[str, dict[str, Any]], builtin: dict[str, str], kind: str) -> str:
    """Class path of an axis value: a variant's ``class``, a built-in name, or an importable path."""
    name = (variants.get(label) or {}).get("class", label)
    if name in builtin:
        return builtin[name]
    if "." in name and _importable(name):
        return name
    choices = sorted(set(builtin) | set(variants))
    raise ValueError(f"unknown {kind} {label!r}; valid {kind}s: {', '.join(choices)} (or a class path such as "
                     f"my_package.MyClass)")


def _apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if key != "class":
            set_dotted(config, key, value)


def expand(spec: SweepSpec, validate: bool = True) -> list[Run]:
    """The runs of a spec, in grid order, each with its resolved config and id; identical runs
    appear once. With ``validate`` every config is parsed by LightningCLI (nothing is built):
    the first bad one raises ``ValueError`` naming the run, the key and the choices."""
    methods, datasets = method_classes(), dataset_classes()
    methods_with_dnc = {**methods, DNC: methods.get("MoCLR", "lightning_ssl.methods.moclr.MoCLR")}
    axes = list(spec.grid)
    runs: dict[str, Run] = {}
    for values in itertools.product(*(spec.grid[a] for a in axes)):
        point = dict(zip(axes, values))
        config = copy.deepcopy(spec.base)
        method = str(point.get("method", get_dotted(config, "model.class_path", "")))
        dataset = str(point.get("dataset", get_dotted(config, "data.class_path", "")))
        if not method or not dataset:
            raise ValueError("every run needs a method and a dataset: add grid axes 'method'/'dataset' or set "
                             "base.model.class_path / base.data.class_path")
        is_dnc = (spec.methods.get(method) or {}).get("class", method) == DNC
        method_path = _resolve_class(method, spec.methods, methods_with_dnc, "method")
        dataset_path = _resolve_class(dataset, spec.datasets, datasets, "dataset")
        set_dotted(config, "model.class_path", method_path)
        set_dotted(config, "data.class_path", dataset_path)
        _apply_overrides(config, spec.datasets.get(dataset) or {})
        _apply_overrides(config, spec.methods.get(method) or {})
        seed = int(point.get("seed", config.get("seed_everything", 0) or 0))
        for axis, value in point.items():
            if axis in DATA_AXES:
                set_dotted(config, f"data.{axis}", value)
            elif axis == "data_seed":
                set_dotted(config, "data.seed", value)
            elif axis == "seed":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"grid axis 'seed' takes integers, got {value!r}")
                config["seed_everything"] = value
                set_dotted(config, "data.view_seed", value)
            elif axis not in ("method", "dataset"):
                set_dotted(config, axis, value)
        config.setdefault("seed_everything", seed)
        run = Run(run_id="", axes={"method": method, "dataset": dataset, **{k: v for k, v in point.items()
                                                                          if k not in ("method", "dataset")}},
                  method=method, dataset=dataset, seed=seed, config=config, evaluation=dict(spec.evaluation),
                  transfer=copy.deepcopy(spec.transfer), dnc=dict(spec.dnc) if is_dnc else None)
        runs.setdefault(run_hash(run.hashed()), run)
    result = []
    for key, run in runs.items():
        run.run_id = key
        result.append(run)
    if validate:
        validate_runs(spec, result)
    return result


def validate_runs(spec: SweepSpec, runs: list[Run]) -> None:
    """Parse every run's config with the ``lssl fit`` parser (nothing instantiated) and replace it by
    the fully resolved config (all defaults filled in); the run id is recomputed from that."""
    from lightning_ssl.sweep.resolve import resolve_config, validate_data

    for entry in spec.transfer:
        try:
            validate_data(entry["data"])
        except ValueError as err:
            raise ValueError(f"sweep {spec.name!r}, transfer {entry['name']!r}: {err}") from None
    cache: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for run in runs:
        # the seed only changes two integers: configs differing only in it are parsed once
        key = json.dumps({**run.config, "seed_everything": 0,
                          "data": {**run.config.get("data", {}), "init_args": {
                              **get_dotted(run.config, "data.init_args", {}), "view_seed": 0}}},
                         sort_keys=True, default=str)
        if key not in cache:
            try:
                cache[key] = resolve_config(run.config)
            except ValueError as err:
                raise ValueError(f"sweep {spec.name!r}, run {run.axes}: {err}") from None
        resolved = copy.deepcopy(cache[key])
        resolved["seed_everything"] = run.config["seed_everything"]
        view_seed = get_dotted(run.config, "data.init_args.view_seed")
        if view_seed is not None:
            resolved["data"]["init_args"]["view_seed"] = view_seed
        run.config = resolved
        run.run_id = run_hash(run.hashed())
        if run.run_id in seen:
            raise ValueError(f"sweep {spec.name!r}: two grid points resolve to the same run ({run.axes}); "
                             "remove the duplicate axis value")
        seen.add(run.run_id)
