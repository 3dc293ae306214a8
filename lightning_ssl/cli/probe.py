"""``lssl probe CHECKPOINT``: the offline evaluation of a pre-trained checkpoint.

By default the datamodule the checkpoint was trained on is rebuilt from the checkpoint; ``--data``
names any other datamodule for out-of-domain (transfer) evaluation, e.g.
``lssl probe last.ckpt --data CIFAR100LT --data.root ~/data``. ``--finetune`` trains the whole
network on the probe set instead of a linear head.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser
from rich.console import Console
from rich.table import Table

from datamodules.base import LongTailDataModule
from lightning_ssl.class_path import import_class
from lightning_ssl.cli.args import ShortHelpFormatter, parse_jsonargparse, user_values
from lightning_ssl.config.errors import UsageError
from lightning_ssl.config.registry import expand_short_names, import_all_datamodules
from lightning_ssl.eval.features import feature_dim
from lightning_ssl.eval.finetune import (
    DEFAULT_FINETUNE_RECIPE,
    FINETUNE_RECIPES,
    finetune_and_predict,
    finetune_recipe,
)
from lightning_ssl.eval.linear import DEFAULT_PROBE_RECIPE, PROBE_RECIPES, make_recipe
from lightning_ssl.eval.metrics import group_report, per_class_accuracy
from lightning_ssl.eval.offline import evaluate_frozen
from lightning_ssl.io import atomic_write_json


def load_method(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """The module stored in a checkpoint written by ``lssl fit`` or ``lssl sweep`` (its class path
    is inside): rebuilt from its saved hyper-parameters, or, for a ``LightningModule`` that saves
    none, from the config ``lssl fit`` recorded (``model_config``) and the state dict."""
    path = _checkpoint_file(checkpoint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to load is the same usage error
        raise UsageError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); pass a .ckpt written by "
            "lssl fit, e.g. runs/<run>/checkpoints/last.ckpt"
        ) from None
    if not isinstance(ckpt, dict) or "method_class" not in ckpt:
        raise UsageError(
            f"{path} was not written by lssl fit (no 'method_class' key); pass a checkpoint from "
            "runs/<run>/checkpoints/"
        )
    try:
        cls = import_class(ckpt["method_class"])
    except ValueError as err:
        raise UsageError(
            f"{path} was trained with {ckpt['method_class']}, which does not import here ({err}); run "
            "lssl probe where that module is importable (e.g. from the folder that holds it)"
        ) from None
    if ckpt.get("hyper_parameters") is not None or "model_config" not in ckpt:
        return cls.load_from_checkpoint(path, map_location="cpu"), ckpt
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(cls, "model")
    model = parser.instantiate_classes(parser.parse_object({"model": ckpt["model_config"]})).model
    model.load_state_dict(ckpt["state_dict"])
    model.on_load_checkpoint(ckpt)
    return model, ckpt


def _checkpoint_file(checkpoint: str | Path) -> Path:
    """``checkpoint`` when it is a file; a one-line error naming the checkpoints to pass otherwise."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*.ckpt"))
        hint = (
            f"e.g. {found[0]}" + (f" ({len(found)} checkpoints inside)" if len(found) > 1 else "")
            if found
            else "it holds no *.ckpt file"
        )
        raise UsageError(f"{path} is a folder, not a checkpoint: pass a .ckpt file; {hint}")
    raise UsageError(f"checkpoint {path} does not exist (lssl fit writes runs/<run>/checkpoints/last.ckpt)")


def datamodule_from_checkpoint(ckpt: dict[str, Any]) -> LongTailDataModule:
    if "datamodule_class" not in ckpt:
        raise ValueError("the checkpoint does not name its datamodule: pass --data CLASS")
    cls = import_class(ckpt["datamodule_class"])
    # LightningCLI adds private keys (``_class_path``, ``_instantiator``) to saved hyper-parameters
    args = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    return cls(**args)


def build_parser() -> ArgumentParser:
    import_all_datamodules()  # so that --data takes every dataset's short name
    p = ArgumentParser(
        prog="lssl probe",
        description=__doc__.split("\n")[0],
        exit_on_error=False,
        formatter_class=ShortHelpFormatter,
    )
    p.add_argument("checkpoint", type=str, help="a checkpoint written by lssl fit")
    p.add_subclass_arguments(
        LongTailDataModule,
        "data",
        required=False,
        help="evaluate on another datamodule (transfer); default: the checkpoint's",
    )
    p.add_argument("--out", type=str | None, default=None, help="result JSON (default: next to the checkpoint)")
    p.add_argument("--probe_sets", type=list[str] | None, default=None, help="probe sets (default: all)")
    p.add_argument(
        "--linear_recipe",
        type=str,
        default=DEFAULT_PROBE_RECIPE,
        help=f"linear probe recipe (docs/protocols.md §5): {', '.join(PROBE_RECIPES)}",
    )
    p.add_argument(
        "--linear_epochs",
        type=int | None,
        default=None,
        help="epochs of a mini-batch recipe (default: the recipe's, e.g. mttv 100)",
    )
    p.add_argument("--linear_steps", type=int | None, default=None, help="L-BFGS iterations (default: the recipe's)")
    p.add_argument("--linear_lr", type=float | None, default=None, help="default: the recipe's (mttv 0.005, rwsam 30)")
    p.add_argument("--knn_k", type=int, default=200, help="kNN neighbours (InstDisc/MTTV: 200)")
    p.add_argument("--knn_temperature", type=float, default=0.1, help="kNN vote temperature (0.1)")
    p.add_argument("--finetune", type=bool, default=False, help="fine-tune the whole network (rwSAM's transfer)")
    p.add_argument("--finetune_epochs", type=int, default=20, help="fine-tuning epochs")
    p.add_argument(
        "--finetune_recipe",
        type=str,
        default=DEFAULT_FINETUNE_RECIPE,
        help=f"{', '.join(FINETUNE_RECIPES)} (rwsam: rwSAM's transfer recipe, SGD Nesterov, 20 x 2000 "
        "iterations; docs/protocols.md §7)",
    )
    p.add_argument(
        "--finetune_iterations",
        type=int | None,
        default=None,
        help="iterations per fine-tuning epoch (default: the recipe's, rwsam 2000)",
    )
    p.add_argument("--device", type=str | None, default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    return p


def check_options(cfg: Any) -> str:
    """Every option that needs no data, before the checkpoint is read (one line each); returns the
    device to run on."""
    options = {"epochs": cfg.linear_epochs, "steps": cfg.linear_steps, "lr": cfg.linear_lr}
    for name, value in options.items():
        if value is not None and not value > 0:
            raise UsageError(
                f"--linear_{name} {value} must be > 0; pass e.g. --linear_{name} "
                f"{dict(epochs=100, steps=500, lr=0.1)[name]} or leave it unset for the recipe's"
            )
    with user_values():
        recipe = make_recipe(cfg.linear_recipe, **{k: v for k, v in options.items() if v is not None})
        if recipe.epochs is not None and recipe.milestones and max(recipe.milestones) >= recipe.epochs:
            raise UsageError(
                f"--linear_epochs {recipe.epochs}: the {recipe.name} recipe drops its lr at epochs "
                f"{', '.join(map(str, recipe.milestones))}; pass --linear_epochs "
                f"{max(recipe.milestones) + 1} or more"
            )
        if cfg.finetune:
            finetune_recipe(
                cfg.finetune_recipe or DEFAULT_FINETUNE_RECIPE,
                epochs=cfg.finetune_epochs,
                iterations_per_epoch=cfg.get("finetune_iterations"),
            )
    if cfg.knn_k < 1:
        raise UsageError(f"--knn_k {cfg.knn_k} must be >= 1 (neighbours of the kNN vote); pass e.g. --knn_k 200")
    if not cfg.knn_temperature > 0 or cfg.knn_temperature == float("inf"):
        raise UsageError(
            f"--knn_temperature {cfg.knn_temperature} must be > 0 and finite; pass e.g. --knn_temperature 0.1"
        )
    if cfg.finetune and cfg.finetune_epochs < 1:
        raise UsageError(f"--finetune_epochs {cfg.finetune_epochs} must be >= 1; pass e.g. --finetune_epochs 20")
    if cfg.finetune and cfg.get("finetune_iterations") is not None and cfg.finetune_iterations < 1:
        raise UsageError(f"--finetune_iterations {cfg.finetune_iterations} must be >= 1 or unset")
    if cfg.probe_sets is not None and not cfg.probe_sets:
        raise UsageError(
            "--probe_sets [] names no probe set; leave it unset for all, or name them, e.g. --probe_sets [full]"
        )
    if cfg.out is not None and Path(cfg.out).is_dir():
        raise UsageError(f"--out {cfg.out} is a folder; pass a file name, e.g. --out {Path(cfg.out) / 'probe.json'}")
    return resolve_device(cfg.device)


def resolve_device(device: str | None) -> str:
    """``--device``: ``cpu``, ``cuda``, ``cuda:N``, ``mps``...; a device this machine has not got
    is refused by name (default: cuda when available)."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a torch device; pass cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            raise UsageError(
                f"--device {device}: this machine has {count} CUDA GPU(s) (torch.cuda.is_available() is "
                f"{torch.cuda.is_available()}); pass --device cpu or leave it unset"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; pass --device cpu or leave it unset")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device}: not supported here; pass cpu, cuda or cuda:N")
    return str(parsed)


def probe(cfg: Any, device: str | None = None) -> dict[str, Any]:
    start = time.time()
    model, ckpt = load_method(cfg.checkpoint)
    with user_values():  # a data option its __init__ refuses
        if cfg.get("data") is not None:
            dm = build_parser().instantiate_classes(cfg).data
        else:
            dm = datamodule_from_checkpoint(ckpt)
    unknown = sorted(set(cfg.probe_sets or []) - set(dm.probe_sets))
    if unknown:
        raise UsageError(
            f"--probe_sets: {type(dm).__name__} has no probe set {', '.join(unknown)}; it has "
            f"{', '.join(dm.probe_sets) or 'none'}"
        )
    device = device or resolve_device(cfg.device)
    options = {"epochs": cfg.linear_epochs, "steps": cfg.linear_steps, "lr": cfg.linear_lr}
    result = evaluate_frozen(
        model,
        dm,
        probe_sets=cfg.probe_sets,
        linear_recipe=cfg.linear_recipe,
        linear_options={k: v for k, v in options.items() if v is not None},
        knn_k=cfg.knn_k,
        knn_temperature=cfg.knn_temperature,
        seed=cfg.seed,
        progress=True,
        device=device,
    )
    if cfg.finetune:
        recipe = finetune_recipe(
            cfg.get("finetune_recipe") or DEFAULT_FINETUNE_RECIPE,
            epochs=cfg.finetune_epochs,
            iterations_per_epoch=cfg.get("finetune_iterations"),
        )
        pred, target = finetune_and_predict(
            model,
            feature_dim(model, dm.test_dataloader()),
            dm,
            recipe=recipe,
            accelerator="gpu" if device.startswith("cuda") else "cpu",
            seed=cfg.seed,
        )
        result["finetune_recipe"] = recipe.record()
        groups = result["groups"]
        result["metrics"].update(group_report(pred, target, dm.num_classes, groups, dm.group_rule, "finetune"))
        result["per_class"]["finetune"] = per_class_accuracy(pred, target, dm.num_classes).tolist()
    result.update(
        {
            "checkpoint": str(Path(cfg.checkpoint).resolve()),
            "method": ckpt["method_class"],
            "datamodule": f"{type(dm).__module__}.{type(dm).__qualname__}",
            "datamodule_args": {k: v for k, v in getattr(dm, "hparams", {}).items() if not k.startswith("_")},
            "transfer": cfg.get("data") is not None,
            "wall_time_s": time.time() - start,
        }
    )
    return result


def print_result(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"probe of {Path(result['checkpoint']).name} ({result['group_rule']})")
    for col in ("probe", "all", "many", "medium", "few", "std"):
        table.add_column(col, justify="right" if col != "probe" else "left")
    rule = result["group_rule"].replace("/", "_")
    for prefix in result["per_class"]:
        m = result["metrics"]
        cells = [m[f"{prefix}/acc_top1"]] + [m.get(f"{prefix}/{rule}/acc_{g}") for g in ("many", "medium", "few")]
        cells.append(m.get(f"{prefix}/{rule}/std"))
        table.add_row(prefix, *[("-" if v is None else f"{100 * v:.2f}") for v in cells])
    console.print(table)


def run(argv: list[str]) -> int:
    try:
        argv = expand_short_names(argv, keys=("--data",))
    except ValueError as err:
        raise UsageError(str(err)) from None
    cfg = parse_jsonargparse(build_parser(), argv)
    device = check_options(cfg)
    _checkpoint_file(cfg.checkpoint)  # before any data is built
    result = probe(cfg, device)
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).with_suffix(".probe.json")
    atomic_write_json(out, result)
    console = Console()
    print_result(result, console)
    console.print(f"result written to {out}")
    return 0
