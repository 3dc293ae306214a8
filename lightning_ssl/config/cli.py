"""The ``lssl fit`` parser: LightningCLI over any ``LightningModule`` and every datamodule.

``lssl fit`` and the sweeps (``lightning_ssl.sweep.resolve``) both build this class, so a sweep
accepts exactly what ``lssl fit`` accepts (docs/design.md: "typed ``__init__`` is the config").
Before anything is built it

* fills in the model's ``image_size`` from the datamodule when unset;
* sets the datamodule's view options from the method's declaration (``views_needed``, see
  :mod:`lightning_ssl.methods.declared_views`), one way only: the method declares, the data follows; an
  explicit data option that contradicts it is an error;
* for ``fit``, puts checkpoints and logs together in ``runs/<method>-<dataset>-<hash>/`` and
  resumes from the newest readable checkpoint there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningCLI

import lightning_ssl.methods  # noqa: F401  (registers the built-in methods as subclasses)
from datamodules.base import LongTailDataModule
from lightning_ssl.checkpoints import latest_valid_checkpoint
from lightning_ssl.class_path import import_class
from lightning_ssl.config.callbacks import RunInfo, StepLogging
from lightning_ssl.config.errors import UsageError, condense
from lightning_ssl.config.registry import import_all_datamodules
from lightning_ssl.eval.callbacks import add_feature_validation
from lightning_ssl.eval.diagnostics import CollapseMonitor
from lightning_ssl.io import canonical_json, digest
from lightning_ssl.loggers import wandb_logger_config
from lightning_ssl.methods.declared_views import VIEW_OPTIONS, init_option

RUNS = "runs"


def default_callbacks() -> list[dict[str, Any]]:
    """The evaluation and checkpoint callbacks of every ``lssl fit``: the online linear probe, the kNN
    monitor, per-class charts in TensorBoard and one rolling checkpoint (``last.ckpt``, rewritten
    atomically after every epoch; ``--trainer.callbacks`` replaces the list)."""
    return [
        {"class_path": "lightning_ssl.eval.callbacks.OnlineLinearProbe"},
        {"class_path": "lightning_ssl.eval.callbacks.KNNMonitor"},
        {"class_path": "lightning_ssl.tensorboard_charts.TensorBoardPerClassCharts"},
        {"class_path": "lightning_ssl.checkpoints.AtomicModelCheckpoint"},
    ]


def default_loggers() -> list[dict[str, Any]]:
    """CSV and TensorBoard logs, moved into the run's folder (``<run>/csv``, ``<run>/tb``) by ``fit``;
    a resumed run continues them (the rows logged before a kill are kept)."""
    return [
        {"class_path": "lightning_ssl.loggers.ResumableCSVLogger", "init_args": {"save_dir": RUNS, "name": "csv"}},
        {
            "class_path": "lightning_ssl.loggers.ResumableTensorBoardLogger",
            "init_args": {"save_dir": RUNS, "name": "tb"},
        },
    ]


def _plain(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


def _init_args(block: Any) -> Any:
    return block.init_args if "init_args" in block else block


class SSLCLI(LightningCLI):
    """LightningCLI whose ``--model`` is any ``LightningModule`` (``SSLMethod`` subclasses by bare
    name) and ``--data`` any ``LongTailDataModule``; see the module docstring for what it adds."""

    def __init__(
        self, model_class: type | None = None, datamodule_class: type | None = None, *args: Any, **kwargs: Any
    ) -> None:
        import_all_datamodules()
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        self._model_config: dict[str, Any] | None = None
        self._auto_log_interval = True
        super().__init__(model_class or pl.LightningModule, datamodule_class or LongTailDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--wandb",
            type=str | None,
            default=None,
            help="log to Weights & Biases under this project (offline without credentials)",
        )
        parser.add_argument(
            "--wandb_id",
            type=str | None,
            default=None,
            help="W&B run id; give the same id when resuming to continue the same W&B run",
        )
        parser.add_argument(
            "--resume",
            type=bool,
            default=True,
            help="fit: resume from the newest readable checkpoint of an earlier run with the same "
            "model, data, seed and length (runs/<method>-<dataset>-<hash>/checkpoints/); "
            "false starts afresh",
        )
        parser.add_argument(
            "--ckpt_config",
            type=bool,
            default=False,
            help="with --ckpt_path: train the checkpoint's own model config where it differs from "
            "the command (by default such a checkpoint is refused, naming the differences)",
        )
        parser.set_defaults({"trainer.callbacks": default_callbacks(), "trainer.logger": default_loggers()})

    def _set_seed(self) -> None:
        """Refuse a seed Lightning would replace (by 0, or with a ValueError) before seeding."""
        _check_seed(self._get(self.config, "seed_everything"))
        super()._set_seed()

    def _parse_ckpt_path(self) -> None:
        """Lightning lets a checkpoint's hyper-parameters silently replace the command's model; here a
        checkpoint whose model class, model options or data options differ from the command is
        refused by name, unless ``--ckpt_config true`` asks for the checkpoint's config (said so)."""
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else None
        ckpt_path = cfg.get("ckpt_path") if cfg is not None else None
        if not ckpt_path:
            return
        if not Path(ckpt_path).is_file():
            raise UsageError(
                f"--ckpt_path {ckpt_path}: no such checkpoint file; pass a .ckpt file, e.g. "
                "runs/<run>/checkpoints/last.ckpt"
            )
        before = {"class_path": cfg.model.class_path, **_plain(_init_args(cfg.model))}
        try:
            ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any failure to read is the same user error
            raise UsageError(
                f"--ckpt_path {ckpt_path} is not a readable checkpoint ({type(err).__name__}); "
                "pass a .ckpt file written by lssl fit"
            ) from err
        super()._parse_ckpt_path()
        cfg = self.config[sub]
        after = {"class_path": cfg.model.class_path, **_plain(_init_args(cfg.model))}
        differ = _differences(before, after, "model")
        data_args = _plain(_init_args(cfg.data)) or {}
        stored = ckpt.get("datamodule_hyper_parameters") or {}
        differ += _differences(
            {k: data_args[k] for k in stored if k in data_args},
            {k: stored[k] for k in stored if k in data_args},
            "data",
        )
        if not differ:
            return
        shown = "; ".join(differ[:4]) + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
        if not cfg.get("ckpt_config"):
            raise UsageError(
                f"--ckpt_path {ckpt_path} was trained with other settings than this command ({shown}): "
                "pass the checkpoint's settings, drop --ckpt_path to start afresh, or add "
                "--ckpt_config true to train the checkpoint's model config"
            )
        if stored and any(d.startswith("data.") for d in differ):
            raise UsageError(
                f"--ckpt_path {ckpt_path} was trained on other data ({shown}); --ckpt_config covers the "
                "model only: pass the checkpoint's --data options"
            )
        print(f"lssl {sub}: --ckpt_config: training the checkpoint's model config ({shown})")

    # -- before anything is built ------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        _check_length(cfg.trainer)
        _check_seed(cfg.get("seed_everything"))
        model_cls, data_cls = import_class(cfg.model.class_path), import_class(cfg.data.class_path)
        model_args, data_args = _init_args(cfg.model), _init_args(cfg.data)
        data_size = data_args.get("image_size") or data_cls.card.image_size
        if "image_size" in model_args and model_args.get("image_size") is None and data_size:
            model_args["image_size"] = int(data_size)
        apply_views(model_cls, data_cls, model_args, data_args)
        self._model_config = {"class_path": cfg.model.class_path, "init_args": _plain(model_args)}
        self._auto_log_interval = cfg.trainer.get("log_every_n_steps") is None
        if self.subcommand == "fit":
            self._use_run_folder(cfg, run_folder(cfg, model_cls, data_cls))
        if cfg.get("wandb"):
            loggers = cfg.trainer.get("logger")
            extra = wandb_logger_config(cfg.wandb, run_id=cfg.get("wandb_id"))
            kept = [*loggers] if isinstance(loggers, list) else [loggers] if loggers not in (None, True, False) else []
            cfg.trainer.logger = kept + [extra]
            callbacks = cfg.trainer.get("callbacks") or []
            cfg.trainer.callbacks = [*callbacks, {"class_path": "lightning_ssl.loggers.WandbPerClassCharts"}]

    def _use_run_folder(self, cfg: Any, folder: Path) -> None:
        """Checkpoints in ``<folder>/checkpoints``, the default CSV / TensorBoard logs in
        ``<folder>/csv`` and ``<folder>/tb``; the same command started again (after a kill, a
        preemption or a node loss) resumes from the newest readable checkpoint there."""
        self.run_folder = folder
        trainer = cfg.trainer
        for callback in trainer.get("callbacks") or []:
            path = callback.get("class_path", "") if hasattr(callback, "get") else ""
            init = callback.get("init_args") if hasattr(callback, "get") else None
            if path.endswith("AtomicModelCheckpoint") and not (init or {}).get("dirpath"):
                if init is None:
                    callback["init_args"] = init = {}
                init["dirpath"] = str(folder / "checkpoints")
        loggers = trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else []:
            init = logger.get("init_args") if hasattr(logger, "get") else None
            if init is not None and init.get("save_dir") == RUNS and init.get("name") in ("csv", "tb"):
                init["version"], init["name"], init["save_dir"] = init["name"], "", str(folder)
        checkpoints = folder / "checkpoints"
        if cfg.get("resume") and cfg.get("ckpt_path") is None and checkpoints.is_dir():
            last = latest_valid_checkpoint(checkpoints.glob("*.ckpt"))
            if last is not None:
                print(f"lssl fit: resuming from {last} (pass --resume false to start afresh)")
                cfg.ckpt_path = str(last)

    # -- building ----------------------------------------------------------------------------------
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except UsageError:
            raise
        except (ValueError, TypeError) as err:  # an __init__ refused a value; jsonargparse wraps it in union noise
            raise UsageError(condense(str(err))) from err
        add_feature_validation(self.model)
        self.trainer.callbacks.append(RunInfo(self._model_config))
        if not any(isinstance(c, CollapseMonitor) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(CollapseMonitor())
        if self.trainer.loggers:
            self.trainer.callbacks.append(StepLogging(auto_interval=self._auto_log_interval))


def run_folder(cfg: Any, model_cls: type, data_cls: type) -> Path:
    """``runs/<method>-<dataset>-<hash of model, data, seed and length>`` (under ``default_root_dir``)."""
    trainer = cfg.trainer
    identity = {
        "model": _plain(cfg.model),
        "data": _plain(cfg.data),
        "seed": cfg.get("seed_everything"),
        "max_epochs": trainer.get("max_epochs"),
        "max_steps": trainer.get("max_steps"),
    }
    name = f"{model_cls.__name__}-{data_cls.__name__}-{digest(identity, 8)}".lower()
    return Path(trainer.get("default_root_dir") or ".") / RUNS / name


def _differences(command: dict[str, Any], checkpoint: dict[str, Any], prefix: str) -> list[str]:
    """``model.backbone: resnet_tiny here, resnet18 in the checkpoint`` for each key that differs; a
    key the command leaves unset (``None``: filled in later, e.g. ``image_size``) is no difference."""
    out = []
    for key in sorted(set(command) | set(checkpoint)):
        a, b = command.get(key), checkpoint.get(key)
        if a is None:
            continue
        if canonical_json(_plain(a)) != canonical_json(_plain(b)):
            name = "model" if key == "class_path" else f"{prefix}.{key}"
            out.append(f"{name}: {a} here, {b} in the checkpoint")
    return out


def _check_length(trainer: Any) -> None:
    """A run's length: ``max_epochs`` / ``max_steps`` N >= 1, or -1 (no limit) for one of them when
    the other (or ``max_time``) ends the run; the learning-rate schedule is sized to it."""
    for key in ("max_epochs", "max_steps"):
        value = trainer.get(key)
        if value is not None and (value == 0 or value < -1):
            raise UsageError(
                f"--trainer.{key} {value}: a run needs at least one {key[4:-1]}; pass --trainer.{key} N "
                "with N >= 1 (-1, no limit, only with the other of --trainer.max_epochs / max_steps)"
            )
    limit = trainer.get("limit_train_batches")
    if limit is not None and not isinstance(limit, bool) and limit <= 0:
        raise UsageError(
            f"--trainer.limit_train_batches {limit} trains nothing; pass a share in (0, 1] (1.0: every "
            "batch) or a number of batches >= 1"
        )
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if epochs == -1 and steps in (None, -1):
        raise UsageError(
            "--trainer.max_epochs -1 means no epoch limit, and no --trainer.max_steps ends the run (the "
            "learning-rate schedule is sized to it): pass --trainer.max_epochs N with N >= 1, or add "
            "--trainer.max_steps N"
        )


def _check_seed(seed: Any) -> None:
    """``seed_everything``: an int in [0, 2**32 - 1] (Lightning would warn and use 0 for any other),
    or true / false / unset."""
    if seed is None or isinstance(seed, bool):
        return
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise UsageError(
            f"--seed_everything {seed}: a seed is an integer in [0, 2**32 - 1] (Lightning would replace "
            "it by 0); pass e.g. --seed_everything 0"
        )


def apply_views(model_cls: type, data_cls: type, model_args: Any, data_args: Any) -> dict[str, Any]:
    """Set the datamodule's view options from ``model_cls.views_needed(model_args)`` (of the class
    those options build, where the method names it with a ``concrete_class`` hook: ``UOTA`` builds
    ``UOTASwAV``); an option the user set to another value than both the datamodule's default and
    the method's need is a :class:`UsageError` naming both. Returns the options that were set."""
    options = _plain(model_args) or {}
    hook = getattr(model_cls, "concrete_class", None)
    views_needed = getattr(hook(options) if hook is not None else model_cls, "views_needed", None)
    if views_needed is None:  # a plain LightningModule that declares nothing
        return {}
    needed = views_needed(options).data_options()
    changed: dict[str, Any] = {}
    for key, value in needed.items():
        if key not in data_args:
            raise UsageError(
                f"{model_cls.__name__} needs data.{key}={value}, but {data_cls.__name__} has no "
                f"{key} option: use a datamodule with that view option"
            )
        current = data_args.get(key)
        if current == value:
            continue
        if current != init_option(data_cls, None, key):
            own = ", ".join(f"{k}={options[k]}" for k in VIEW_OPTIONS if k in options) or "its defaults"
            raise UsageError(
                f"--data.{key} {current} contradicts --model {model_cls.__name__} ({own}), which "
                f"reads {key}={value}: drop --data.{key} (the method sets it) or change the method's option"
            )
        data_args[key] = value
        changed[key] = value
    return changed
