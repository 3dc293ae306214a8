"""Sweep specifications: a YAML file = a base ``lssl fit`` config + grid axes + evaluation protocol.

Format (every top-level key is optional except ``grid``; unknown keys are an error)::

    name: default                 # the sweep's name: results go to results/<name>/ (default: file stem)
    description: ...
    base:                         # an `lssl fit` config (LightningCLI): model / data / trainer / seed_everything
      model: {class_path: SimCLR, init_args: {backbone: resnet_tiny}}
      data: {class_path: DigitsLT, init_args: {batch_size: 128}}
      trainer: {max_epochs: 10}
    grid:                         # the runs are the cartesian product of the axes
      method: [SimCLR, SimCLR+rwSAM, Supervised]   # method names, variants below, or class paths
      dataset: [DigitsLT]
      balanced_twin: [false, true]
      seed: [0, 1, 2]
      model.lr: [0.1, 0.3]        # any dotted config key (model./data. keys go to init_args)
    exclude:                      # grid points left out: every listed axis matches (a value or a list)
      - {balanced_twin: true, method: [Supervised]}
    methods:                      # variants: name -> dotted overrides (``class``: the method class)
      SimCLR+rwSAM: {class: SimCLR, model.sam: {rho: 0.05, weights: kde}}
      MTTV: {data.clean_view: true}
    datasets:                     # the same for datasets (per-dataset sizes, roots, schedules)
      FashionMNISTLT: {data.root: /usr/share/datasets/fashion-mnist, model.in_chans: 1}
    evaluation: {linear_epochs: 100, knn_k: 200}     # keyword arguments of eval.offline.evaluate_frozen
    transfer:                     # out-of-domain evaluations of every run's backbone
      - {name: stl10, data: {class_path: ImageFolderLT, init_args: {...}}, mode: linear}
    report: {metric: linear_full/acc_top1}           # the robustness table's accuracy
    <section>: {...}              # the options of a method with a pipeline of its own (its ``section``)

Named axes: ``method`` (``model.class_path``), ``dataset`` (``data.class_path``), ``profile``,
``imbalance_ratio``, ``subsample``, ``balanced_twin``, ``head_order`` (``data.<name>``), ``data_seed``
(``data.seed``: the long-tailed selection) and ``seed`` (``seed_everything``, ``data.view_seed`` and
the probe's seed). Every expanded run is parsed by LightningCLI's own parser (nothing is
instantiated) before any run starts, so a typo fails at once, naming the key and the choices.

A method class that trains in stages declares its pipeline (:mod:`lightning_ssl.sweep.pipelines`);
the spec then accepts that pipeline's options section, checks it when loaded, and its runs carry the
options (:attr:`Run.options`) into their ids. Nothing here knows any method by name.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_ssl.class_path import import_class
from lightning_ssl.config.registry import dataset_classes, method_classes
from lightning_ssl.eval.floors import FLOORS
from lightning_ssl.eval.linear import DEFAULT_PROBE_RECIPE, make_recipe
from lightning_ssl.eval.offline import evaluate_frozen
from lightning_ssl.io import canonical_json
from lightning_ssl.sweep.identity import (
    NOT_HASHED,
    NOT_HASHED_TRAINER,
    PIPELINE_OPTIONS_KEY,
    flatten,
    run_hash,
    settings_of,
)
from lightning_ssl.sweep.pipelines import (
    Fit,
    Floor,
    Pipeline,
    class_path,
    concrete_class,
    pipeline_of,
)
from lightning_ssl.sweep.resolve import resolve_config, validate_data
from lightning_ssl.sweep.specfile import read_spec_file

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "base",
    "grid",
    "exclude",
    "methods",
    "datasets",
    "evaluation",
    "transfer",
    "report",
    "launcher",
    "floors",
)
DATA_AXES = ("profile", "imbalance_ratio", "subsample", "balanced_twin", "head_order")
NAMED_AXES = ("method", "dataset", "seed", "data_seed", *DATA_AXES)
DOTTED_ROOTS = ("model", "data", "trainer", "seed_everything")
TRANSFER_KEYS = ("name", "data", "mode", "epochs", "lr", "probe_sets", "recipe", "iterations")
TRANSFER_MODES = ("linear", "finetune")


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


@dataclass
class Run:
    """One expanded run: ``config`` is the fully resolved LightningCLI config (defaults filled in)."""

    run_id: str
    axes: dict[str, Any]
    method: str  # the method's label (a variant name such as "SimCLR+rwSAM")
    dataset: str
    seed: int
    config: dict[str, Any]
    evaluation: dict[str, Any]
    transfer: list[dict[str, Any]]
    options: dict[str, Any] | None = None  # the options of the run's pipeline; None for a plain fit
    pipeline: str = class_path(Fit)  # how the run trains (lightning_ssl.sweep.pipelines)
    method_class: str = ""  # the class the spec named, when the config's model is another (a pipeline's)
    reference: str | None = None  # RawPixels / RandomInit: evaluated, never trained
    explicit: dict[str, Any] = field(default_factory=dict)  # the config as the spec wrote it
    settings: dict[str, Any] = field(default_factory=dict)  # what the id is made of (see hashed)

    def hashed(self) -> dict[str, Any]:
        """What the run id is computed from (docs/design.md §8): the settings that differ from the
        code's defaults (``settings``, filled by :func:`validate_runs`; before validation, the
        explicit config), the evaluation and transfer protocols, the pipeline's options, and the
        reference kind. Not the full signature of every class: an added option, a Lightning upgrade
        that adds a Trainer argument or an explicit value equal to its default leave the id unchanged."""
        settings = self.settings or flatten(self.explicit or self.config)
        settings = {
            k: v
            for k, v in settings.items()
            if k.split(".")[0] not in NOT_HASHED
            and not (k.startswith("trainer.") and k.split(".")[1] in NOT_HASHED_TRAINER)
        }
        payload = {
            "settings": settings,
            "evaluation": self.evaluation,
            "transfer": self.transfer,
            PIPELINE_OPTIONS_KEY: self.options,
        }
        if self.reference:
            payload["reference"] = self.reference
        return payload


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
    pipeline_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> its options
    report: dict[str, Any] = field(default_factory=dict)
    launcher: dict[str, Any] = field(default_factory=dict)
    floors: list[str] = field(default_factory=lambda: list(FLOORS))
    exclude: list[dict[str, Any]] = field(default_factory=list)

    def excludes(self, point: dict[str, Any]) -> bool:
        """Whether grid ``point`` matches an ``exclude`` entry (each of its axes, a value or a list)."""

        def hit(value: Any, wanted: Any) -> bool:
            return value in wanted if isinstance(wanted, list) else value == wanted

        return any(all(hit(point.get(axis), wanted) for axis, wanted in entry.items()) for entry in self.exclude)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check the shape of a spec file (keys, axis names, sections); :func:`expand` then
    checks every run's config."""
    path = Path(path)
    return spec_from_dict(read_spec_file(path), default_name=path.stem, path=path)


def spec_from_dict(raw: dict[str, Any], default_name: str = "sweep", path: Path | None = None) -> SweepSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"a sweep spec is a YAML mapping, got {type(raw).__name__}")
    sections = _pipeline_sections(raw)
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS) - set(sections))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in sweep spec {path or ''}; valid keys: "
            f"{', '.join([*TOP_LEVEL_KEYS, *sorted(sections)])}"
        )
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ValueError("the spec needs a non-empty 'grid' mapping of axis -> list of values")
    for axis, values in grid.items():
        if axis not in NAMED_AXES and axis.split(".")[0] not in DOTTED_ROOTS:
            raise ValueError(
                f"unknown grid axis {axis!r}; valid axes: {', '.join(NAMED_AXES)}, or a dotted "
                f"config key under {', '.join(DOTTED_ROOTS)} (e.g. model.lr)"
            )
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid axis {axis!r} must be a non-empty list, got {values!r}")
    exclude = list(raw.get("exclude") or [])
    for entry in exclude:
        if not isinstance(entry, dict) or not entry or set(entry) - set(grid):
            raise ValueError(
                f"exclude entry {entry!r}: a mapping of grid axes ({', '.join(grid)}) to a value or a list"
            )
    evaluation = dict(raw.get("evaluation") or {})
    eval_keys = [
        p
        for p in inspect.signature(evaluate_frozen).parameters
        if p not in ("model", "datamodule", "progress", "device", "seed")
    ]
    bad = sorted(set(evaluation) - set(eval_keys))
    if bad:
        raise ValueError(f"unknown evaluation key(s) {bad}; valid keys: {', '.join(eval_keys)}")
    try:  # a bad probe recipe fails here, not after the first run has trained
        make_recipe(
            evaluation.get("linear_recipe", DEFAULT_PROBE_RECIPE), **dict(evaluation.get("linear_options") or {})
        )
    except ValueError as err:
        raise ValueError(f"evaluation: {err}") from None
    transfer = list(raw.get("transfer") or [])
    for entry in transfer:
        bad = sorted(set(entry) - set(TRANSFER_KEYS))
        if bad or "name" not in entry or "data" not in entry:
            raise ValueError(
                f"transfer entry {entry!r}: needs 'name' and 'data'; valid keys: {', '.join(TRANSFER_KEYS)}"
            )
        if entry.get("mode", "linear") not in TRANSFER_MODES:
            raise ValueError(f"transfer {entry['name']!r}: mode {entry['mode']!r}; valid: {', '.join(TRANSFER_MODES)}")
    pipeline_options = {}
    for section, pipeline in sections.items():
        if section in raw:
            pipeline_options[section] = dict(raw[section] or {})
            try:
                pipeline.check_options(pipeline_options[section])
            except ValueError as err:
                raise ValueError(f"{section}: {err}") from None
    floors = list(FLOORS if raw.get("floors") is None else raw["floors"])
    bad = sorted(set(floors) - set(FLOORS))
    if bad:
        raise ValueError(f"unknown floor(s) {bad}; valid: {', '.join(FLOORS)} (or floors: [] for none)")
    for section in ("methods", "datasets"):
        for variant, overrides in (raw.get(section) or {}).items():
            for key in overrides or {}:
                if key != "class" and key.split(".")[0] not in DOTTED_ROOTS:
                    raise ValueError(
                        f"{section}.{variant}: unknown key {key!r}; use 'class' or a dotted config key "
                        f"under {', '.join(DOTTED_ROOTS)}"
                    )
    return SweepSpec(
        name=str(raw.get("name") or default_name),
        path=path,
        description=str(raw.get("description") or ""),
        base=copy.deepcopy(raw.get("base") or {}),
        grid=grid,
        methods=dict(raw.get("methods") or {}),
        datasets=dict(raw.get("datasets") or {}),
        evaluation=evaluation,
        transfer=transfer,
        pipeline_options=pipeline_options,
        report=dict(raw.get("report") or {}),
        launcher=dict(raw.get("launcher") or {}),
        floors=floors,
        exclude=exclude,
    )


def _resolve_class(label: str, variants: dict[str, dict[str, Any]], builtin: dict[str, str], kind: str) -> str:
    """Class path of an axis value: a variant's ``class``, a built-in name, or an importable path."""
    name = (variants.get(label) or {}).get("class", label)
    if name in builtin:
        return builtin[name]
    if "." in name and _importable(name):
        return name
    choices = sorted(set(builtin) | set(variants))
    raise ValueError(
        f"unknown {kind} {label!r}; valid {kind}s: {', '.join(choices)} (or a class path such as my_package.MyClass)"
    )


def _apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if key != "class":
            set_dotted(config, key, value)


def _pipeline_sections(raw: dict[str, Any]) -> dict[str, type[Pipeline]]:
    """The option sections a spec may hold: ``section`` of the pipeline of every built-in method
    and of every class path its grid, variants and base name."""
    paths = set(method_classes().values())
    named = [*((raw.get("grid") or {}).get("method") or []), get_dotted(raw, "base.model.class_path")]
    named += [(v or {}).get("class") for v in (raw.get("methods") or {}).values()]
    paths.update(str(n) for n in named if isinstance(n, str) and "." in n and _importable(n))
    sections: dict[str, type[Pipeline]] = {}
    for path in sorted(paths):
        pipeline = pipeline_of(import_class(path))
        if pipeline.section is not None:
            sections.setdefault(pipeline.section, pipeline)
    return sections


def _model_options(label: str, spec: SweepSpec) -> dict[str, Any]:
    """The ``model`` options a method is given by the base config and its own variant."""
    own = {k.split(".", 1)[1]: v for k, v in (spec.methods.get(label) or {}).items() if k.startswith("model.")}
    return {**(get_dotted(spec.base, "model.init_args") or {}), **own}


def _method_classes(label: str, path: str, spec: SweepSpec) -> tuple[str, type[Pipeline], str]:
    """``(method class, pipeline, model class)`` of a method named ``label`` resolved to ``path``:
    the class its options build (:func:`~lightning_ssl.sweep.pipelines.concrete_class`: a method
    that picks its implementation from an option), the pipeline that class declares, and the class
    the run's ``model`` config is parsed as (the pipeline's :meth:`~Pipeline.model_class`)."""
    cls = import_class(path)
    concrete = concrete_class(cls, _model_options(label, spec))
    method_path = path if concrete is cls else class_path(concrete)
    pipeline = pipeline_of(concrete)
    return method_path, pipeline, pipeline.model_class(method_path)


def _inherited(label: str, method_path: str, variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The overrides a method inherits in a spec, most basic first: those of every variant named
    after a class it is built on (a class built on SwAV inherits ``SwAV:``'s multi-crop settings; a
    variant ``SimCLR+rwSAM: {class: SimCLR}`` inherits ``SimCLR:``'s), then its own."""
    chain = []
    try:
        mro = import_class(method_path).__mro__
    except (ImportError, AttributeError):
        mro = ()
    for cls in reversed(mro[1:] if variants.get(label, {}).get("class") is None else mro):
        name = getattr(cls, "__name__", "")
        if name in variants and name != label:
            chain.append(variants[name])
    chain.append(variants.get(label) or {})
    return chain


def expand(spec: SweepSpec, validate: bool = True) -> list[Run]:
    """The runs of a spec, in grid order, each with its resolved config and id; identical runs
    appear once. With ``validate`` every config is parsed by LightningCLI (nothing is built):
    the first bad one raises ``ValueError`` naming the run, the key and the choices.

    After the methods' runs come the reference runs of :data:`FLOORS` (``spec.floors``), one per
    grid point without the method and model/trainer axes: same data, probe sets, seed and protocol."""
    methods, datasets = method_classes(), dataset_classes()
    axes = list(spec.grid)
    runs: dict[str, Run] = {}
    floor_points: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*(spec.grid[a] for a in axes)):
        point = dict(zip(axes, values))
        if spec.excludes(point):
            continue
        config = copy.deepcopy(spec.base)
        method = str(point.get("method", get_dotted(config, "model.class_path", "")))
        dataset = str(point.get("dataset", get_dotted(config, "data.class_path", "")))
        if not method or not dataset:
            raise ValueError(
                "every run needs a method and a dataset: add grid axes 'method'/'dataset' or set "
                "base.model.class_path / base.data.class_path"
            )
        method_class, pipeline, method_path = _method_classes(
            method, _resolve_class(method, spec.methods, methods, "method"), spec
        )
        dataset_path = _resolve_class(dataset, spec.datasets, datasets, "dataset")
        set_dotted(config, "model.class_path", method_path)
        set_dotted(config, "data.class_path", dataset_path)
        _apply_overrides(config, spec.datasets.get(dataset) or {})
        for overrides in _inherited(method, method_path, spec.methods):
            _apply_overrides(config, overrides)
        seed = int(point.get("seed", config.get("seed_everything", 0) or 0))
        _apply_point(config, point)
        config.setdefault("seed_everything", seed)
        run = Run(
            run_id="",
            axes={
                "method": method,
                "dataset": dataset,
                **{k: v for k, v in point.items() if k not in ("method", "dataset")},
            },
            method=method,
            dataset=dataset,
            seed=seed,
            config=config,
            evaluation=dict(spec.evaluation),
            transfer=copy.deepcopy(spec.transfer),
            options=_options(pipeline, spec),
            pipeline=class_path(pipeline),
            method_class=method_class,
            explicit=copy.deepcopy(config),
        )
        runs.setdefault(run_hash(run.hashed()), run)
        if pipeline is Fit and method_path.startswith("lightning_ssl.") and spec.floors:
            floor = {k: v for k, v in point.items() if k != "method" and k.split(".")[0] not in ("model", "trainer")}
            floor_points.setdefault(canonical_json(floor), {"point": floor, "config": config})
    floors: dict[str, Run] = {}
    for kind in spec.floors:
        for entry in floor_points.values():
            point = dict(entry["point"])
            if kind == "RawPixels":  # nothing random: one run serves every seed
                point.pop("seed", None)
            run = _floor_run(kind, point, entry["config"], spec)
            floors.setdefault(run_hash(run.hashed()), run)
    result = []
    for key, run in {**floors, **runs}.items():  # the floors first: cheap, and the reference for the rest
        run.run_id = key
        result.append(run)
    if validate:
        validate_runs(spec, result)
    return result


def _options(pipeline: type[Pipeline], spec: SweepSpec) -> dict[str, Any] | None:
    """A run's pipeline options: ``None`` for a plain fit; the spec's section of the pipeline (``{}``
    without one), so that a pipeline's run never shares the id of a plain fit of the same config."""
    if pipeline is Fit:
        return None
    return dict(spec.pipeline_options.get(pipeline.section) or {}) if pipeline.section else {}


def _apply_point(config: dict[str, Any], point: dict[str, Any]) -> None:
    """Set a grid point's axis values in a run config."""
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


def _floor_run(kind: str, point: dict[str, Any], method_config: dict[str, Any], spec: SweepSpec) -> Run:
    """A reference run: the first method's data and backbone (the sweep's), evaluated untrained.
    Its model is that method's (so the backbone is built and seeded exactly as the methods' are);
    only the data, the backbone options, the seed and the protocol enter its id."""
    config = copy.deepcopy(method_config)
    model_args = get_dotted(config, "model.init_args", {}) or {}
    keep = ("backbone", "image_size", "in_chans")
    config["model"] = {
        "class_path": config["model"]["class_path"],
        "init_args": {k: v for k, v in model_args.items() if k in keep},
    }
    config["trainer"] = {k: v for k, v in (config.get("trainer") or {}).items() if k in NOT_HASHED_TRAINER}
    if "seed" not in point:
        config["seed_everything"] = 0
        set_dotted(config, "data.view_seed", 0)
    dataset = str(point.get("dataset", get_dotted(spec.base, "data.class_path", "")))
    seed = int(config.get("seed_everything", 0) or 0)
    return Run(
        run_id="",
        axes={"method": kind, "dataset": dataset, **{k: v for k, v in point.items() if k != "dataset"}},
        method=kind,
        dataset=dataset,
        seed=seed,
        config=config,
        evaluation=dict(spec.evaluation),
        transfer=copy.deepcopy(spec.transfer),
        pipeline=class_path(Floor),
        reference=kind,
        explicit=copy.deepcopy(config),
    )


def validate_runs(spec: SweepSpec, runs: list[Run]) -> None:
    """Parse every run's config with the ``lssl fit`` parser (nothing instantiated) and replace it by
    the fully resolved config (all defaults filled in); the run's ``settings`` (what its id is made
    of) are the resolved values that differ from the code's defaults for the same classes."""
    for entry in spec.transfer:
        try:
            validate_data(entry["data"])
        except ValueError as err:
            raise ValueError(f"sweep {spec.name!r}, transfer {entry['name']!r}: {err}") from None
    cache: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for run in runs:
        # the seed only changes two integers: configs differing only in it are parsed once
        key = json.dumps(
            {
                **run.config,
                "seed_everything": 0,
                "data": {
                    **run.config.get("data", {}),
                    "init_args": {**get_dotted(run.config, "data.init_args", {}), "view_seed": 0},
                },
            },
            sort_keys=True,
            default=str,
        )
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
        run.settings = settings_of(resolved, run.explicit)
        run.run_id = run_hash(run.hashed())
        if run.run_id in seen:
            raise ValueError(
                f"sweep {spec.name!r}: two grid points resolve to the same run ({run.axes}); "
                "remove the duplicate axis value"
            )
        seen.add(run.run_id)
