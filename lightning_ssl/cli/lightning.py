"""``lssl fit | validate | test``: LightningCLI over every method and datamodule.

``--model`` and ``--data`` take a bare class name (``SimCLR``, ``DigitsLT``) or a full class path
(``my_module.MyMethod``): a method in the user's own package runs with no change to the suite.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pytorch_lightning.cli import LightningCLI

import datamodules
import lightning_ssl.methods  # noqa: F401  (registers the built-in methods as subclasses)
from datamodules.base import LongTailDataModule
from lightning_ssl.methods.base import SSLMethod


def _import_all_datamodules() -> None:
    for target in datamodules.REGISTRY.values():
        importlib.import_module(target.split(":")[0])


def default_callbacks() -> list[dict[str, Any]]:
    return [
        {"class_path": "lightning_ssl.eval.callbacks.OnlineLinearProbe"},
        {"class_path": "lightning_ssl.eval.callbacks.KNNMonitor"},
        {"class_path": "lightning_ssl.checkpoints.AtomicModelCheckpoint"},
        {"class_path": "pytorch_lightning.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
    ]


def default_loggers() -> list[dict[str, Any]]:
    return [
        {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "csv"}},
        {"class_path": "pytorch_lightning.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs", "name": "tb"}},
    ]


class SSLCLI(LightningCLI):
    """LightningCLI whose model input size follows the datamodule unless given explicitly."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--wandb", type=str | None, default=None,
                            help="log to Weights & Biases under this project (offline without credentials)")
        parser.add_argument("--wandb_id", type=str | None, default=None,
                            help="W&B run id; give the same id when resuming to continue the same W&B run")
        parser.add_argument("--resume", type=bool, default=True,
                            help="fit: resume from the newest readable checkpoint of an earlier run with the same "
                                 "model, data, seed and length (runs/checkpoints/<config hash>/); false starts afresh")
        parser.set_defaults({"trainer.callbacks": default_callbacks(), "trainer.logger": default_loggers()})

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        data_args = cfg.data.init_args if "init_args" in cfg.data else cfg.data
        model_args = cfg.model.init_args if "init_args" in cfg.model else cfg.model
        data_cls = _class_of(cfg.data.class_path)
        data_size = data_args.get("image_size") or data_cls.card.image_size
        if "image_size" in model_args and model_args.get("image_size") is None and data_size:
            model_args["image_size"] = int(data_size)
        # options both sides declare (e.g. SwAV's view counts) follow the datamodule when unset
        for key in ("num_large_views", "num_small_views"):
            if key in model_args and model_args.get(key) is None and data_args.get(key) is not None:
                model_args[key] = data_args[key]
        if self.subcommand == "fit":
            self._point_checkpoints_at_run_folder(cfg)
        if cfg.get("wandb"):
            from lightning_ssl.loggers import wandb_logger_config

            loggers = cfg.trainer.get("logger")
            extra = wandb_logger_config(cfg.wandb, run_id=cfg.get("wandb_id"))
            kept = [*loggers] if isinstance(loggers, list) else [loggers] if loggers not in (None, True, False) else []
            cfg.trainer.logger = kept + [extra]
            callbacks = cfg.trainer.get("callbacks") or []
            cfg.trainer.callbacks = [*callbacks, {"class_path": "lightning_ssl.loggers.WandbPerClassCharts"}]


    def _point_checkpoints_at_run_folder(self, cfg: Any) -> None:
        """Checkpoints of a fit go to ``runs/checkpoints/<hash of model, data, seed and length>``, so
        the same command started again (after a kill, a preemption or a node loss) finds them and
        resumes from the newest readable one (a corrupted file is skipped with a warning)."""
        from lightning_ssl.checkpoints import latest_valid_checkpoint
        from lightning_ssl.sweep.spec import run_hash

        def plain(value: Any) -> Any:
            return value.as_dict() if hasattr(value, "as_dict") else value

        trainer = cfg.trainer
        identity = {"model": plain(cfg.model), "data": plain(cfg.data), "seed": cfg.get("seed_everything"),
                    "max_epochs": trainer.get("max_epochs"), "max_steps": trainer.get("max_steps")}
        folder = Path(trainer.get("default_root_dir") or ".") / "runs" / "checkpoints" / run_hash(identity)
        for callback in trainer.get("callbacks") or []:
            path = callback.get("class_path", "") if hasattr(callback, "get") else ""
            init = callback.get("init_args") if hasattr(callback, "get") else None
            if path.endswith("AtomicModelCheckpoint") and not (init or {}).get("dirpath"):
                if init is None:
                    callback["init_args"] = init = {}
                init["dirpath"] = str(folder)
        if cfg.get("resume") and cfg.get("ckpt_path") is None and folder.is_dir():
            last = latest_valid_checkpoint(folder.glob("*.ckpt"))
            if last is not None:
                print(f"lssl fit: resuming from {last} (pass --resume false to start afresh)")
                cfg.ckpt_path = str(last)


def _class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _finish_wandb() -> None:
    """Flush and close a W&B run started by the logger (also needed in-process, e.g. in sweeps)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_lightning_cli(args: list[str]) -> SSLCLI:
    _import_all_datamodules()
    try:
        return _build_cli(args)
    finally:
        _finish_wandb()


def _build_cli(args: list[str]) -> SSLCLI:
    return SSLCLI(
        SSLMethod,
        LongTailDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
    )
