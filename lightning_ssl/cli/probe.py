"""``lssl probe CHECKPOINT``: the offline evaluation of a pre-trained checkpoint.

By default the datamodule the checkpoint was trained on is rebuilt from the checkpoint; ``--data``
names any other datamodule for out-of-domain (transfer) evaluation, e.g.
``lssl probe last.ckpt --data CIFAR100LT --data.root ~/data``. ``--finetune`` trains the whole
network on the probe set instead of a linear head.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser
from rich.console import Console
from rich.table import Table

from datamodules.base import LongTailDataModule
from lightning_ssl.eval.finetune import finetune_and_predict
from lightning_ssl.eval.metrics import group_report, per_class_accuracy
from lightning_ssl.eval.offline import evaluate_frozen
from lightning_ssl.io import atomic_write_json


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def load_method(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """The method stored in a checkpoint written by ``lssl fit`` (class path inside)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (lssl fit writes runs/.../checkpoints/last.ckpt)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "method_class" not in ckpt:
        raise ValueError(f"{path} was not written by an lssl method (no 'method_class' key)")
    model = _import(ckpt["method_class"]).load_from_checkpoint(path, map_location="cpu")
    return model, ckpt


def datamodule_from_checkpoint(ckpt: dict[str, Any]) -> LongTailDataModule:
    if "datamodule_class" not in ckpt:
        raise ValueError("the checkpoint does not name its datamodule: pass --data CLASS")
    cls = _import(ckpt["datamodule_class"])
    # LightningCLI adds private keys (``_class_path``, ``_instantiator``) to saved hyper-parameters
    args = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    return cls(**args)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lssl probe", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=str, help="a checkpoint written by lssl fit")
    p.add_subclass_arguments(LongTailDataModule, "data", required=False,
                             help="evaluate on another datamodule (transfer); default: the checkpoint's")
    p.add_argument("--out", type=str | None, default=None, help="result JSON (default: next to the checkpoint)")
    p.add_argument("--probe_sets", type=list[str] | None, default=None, help="probe sets (default: all)")
    p.add_argument("--linear_epochs", type=int, default=100, help="linear probe epochs (MTTV: 100)")
    p.add_argument("--linear_optimizer", type=str, default="adamw", help="adamw (MTTV) or sgd (SDCLR/rwSAM)")
    p.add_argument("--linear_lr", type=float | None, default=None, help="default: 0.005 adamw, 30 sgd")
    p.add_argument("--knn_k", type=int, default=200, help="kNN neighbours (InstDisc/MTTV: 200)")
    p.add_argument("--knn_temperature", type=float, default=0.1, help="kNN vote temperature (0.1)")
    p.add_argument("--finetune", type=bool, default=False, help="fine-tune the whole network (rwSAM's transfer)")
    p.add_argument("--finetune_epochs", type=int, default=20, help="fine-tuning epochs")
    p.add_argument("--device", type=str | None, default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    return p


def probe(cfg: Any) -> dict[str, Any]:
    start = time.time()
    model, ckpt = load_method(cfg.checkpoint)
    if cfg.get("data") is not None:
        dm = build_parser().instantiate_classes(cfg).data
    else:
        dm = datamodule_from_checkpoint(ckpt)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate_frozen(model, dm, probe_sets=cfg.probe_sets, linear_epochs=cfg.linear_epochs,
                             linear_optimizer=cfg.linear_optimizer, linear_lr=cfg.linear_lr, knn_k=cfg.knn_k,
                             knn_temperature=cfg.knn_temperature, seed=cfg.seed, progress=True, device=device)
    if cfg.finetune:
        pred, target = finetune_and_predict(model, model.feature_dim, dm, epochs=cfg.finetune_epochs,
                                            accelerator="gpu" if device.startswith("cuda") else "cpu", seed=cfg.seed)
        groups = result["groups"]
        result["metrics"].update(group_report(pred, target, dm.num_classes, groups, dm.group_rule, "finetune"))
        result["per_class"]["finetune"] = per_class_accuracy(pred, target, dm.num_classes).tolist()
    result.update({
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "method": ckpt["method_class"],
        "datamodule": f"{type(dm).__module__}.{type(dm).__qualname__}",
        "datamodule_args": {k: v for k, v in getattr(dm, "hparams", {}).items() if not k.startswith("_")},
        "transfer": cfg.get("data") is not None,
        "wall_time_s": time.time() - start,
    })
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
    cfg = build_parser().parse_args(argv)
    result = probe(cfg)
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).with_suffix(".probe.json")
    atomic_write_json(out, result)
    console = Console()
    print_result(result, console)
    console.print(f"result written to {out}")
    return 0
