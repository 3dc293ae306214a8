"""``lssl dnc``: the whole Divide-and-Contrast pipeline (Tian, Hénaff, van den Oord; ICCV 2021).

Example (the embedded dataset, CPU-sized)::

    lssl dnc --data DigitsLT --model.backbone resnet_tiny --num_clusters 2 \\
        --base_epochs 20 --expert_epochs 20 --distill_epochs 20 --work_dir runs/dnc_digits

Re-running the same command resumes at the first unfinished stage; a finished stage computed with
other settings is an error (exit status 2) naming what differs; a run stopped by SIGTERM exits
with status 143 after keeping its finished stages (see :mod:`lightning_ssl.methods.dnc_pipeline`).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import asdict, dataclass
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.utilities.exceptions import SIGTERMException

import datamodules
from datamodules.base import LongTailDataModule
from lightning_ssl.checkpoints import preemption_exit_code, stopped_line
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.dnc import DEFAULT_TEACHER
from lightning_ssl.methods.dnc_pipeline import STAGES, DnCPipeline, StageMismatchError


@dataclass
class TrainerOptions:
    """``pl.Trainer`` options shared by every stage (``max_epochs`` is set per stage).

    Args:
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: devices per node (``auto``, a count, or a list of ids).
        num_nodes: nodes for multi-node DDP.
        strategy: ``auto``, ``ddp``, ...
        precision: ``32-true``, ``bf16-mixed``, ``16-mixed``.
        log_every_n_steps: logging interval.
        limit_train_batches: cap on batches per epoch (a smoke test; 1.0 = all).
        enable_progress_bar: show the progress bar.
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    log_every_n_steps: int = 50
    limit_train_batches: int | float = 1.0
    enable_progress_bar: bool = True


@dataclass
class DistillOptions:
    """Options of the distillation student beyond the architecture it shares with the teachers.

    Args:
        head_hidden_dim: hidden width of the K+1 regression heads (§3.3: 4096).
        num_views: augmented views per image (§3.3: 2, losses averaged).
        lr: learning rate of the distillation; ``None`` keeps the teachers' (§3.4: short
            distillations need more, e.g. 0.45 x batch/256 for 100 epochs vs 0.3 for 500).
    """

    head_hidden_dim: int = 4096
    num_views: int = 2
    lr: float | None = None


def _import_all_datamodules() -> None:
    """Import every registered datamodule so that ``--data`` accepts its bare class name."""
    for target in datamodules.REGISTRY.values():
        importlib.import_module(target.split(":")[0])


def build_parser() -> ArgumentParser:
    _import_all_datamodules()
    importlib.import_module("lightning_ssl.methods.moclr")
    parser = ArgumentParser(prog="lssl dnc", description="Divide and Contrast (Tian et al., ICCV 2021): "
                            "base MoCLR -> spherical k-means -> K experts -> distillation.")
    parser.add_subclass_arguments(LongTailDataModule, "data", required=True)
    parser.add_subclass_arguments(SSLMethod, "model", instantiate=False,
                                  help="the base and expert method (MoCLR, §3.1) and the architecture and "
                                  "optimiser options the student shares with it")
    parser.set_defaults(model={"class_path": DEFAULT_TEACHER})
    parser.add_class_arguments(DistillOptions, "distill")
    parser.add_class_arguments(TrainerOptions, "trainer")
    parser.add_argument("--num_clusters", type=int, default=5,
                        help="K (§3.2 / Table 12: 5, or 10; use 2-5 on small long-tailed sets)")
    parser.add_argument("--base_epochs", type=int, default=200, help="N1, base MoCLR epochs (Table 12: 200/1000)")
    parser.add_argument("--expert_epochs", type=float, default=600.0,
                        help="N2, total expert budget in full-dataset epochs (N2 x N image passes), split in "
                        "proportion to cluster size and run as optimiser steps (§3.3; Table 12: 600/1500/3000)")
    parser.add_argument("--distill_epochs", type=int, default=200, help="N3, distillation epochs (Table 12: 200/500)")
    parser.add_argument("--work_dir", type=str, default="runs/dnc", help="stage folders and done.json markers")
    parser.add_argument("--kmeans_iterations", type=int, default=20, help="Lloyd iterations (our choice)")
    parser.add_argument("--kmeans_backend", type=str, default="auto", help="auto | faiss-gpu | faiss-cpu | torch")
    parser.add_argument("--kmeans_n_init", type=int, default=3,
                        help="k-means starts, the best objective kept (our choice; the paper is silent)")
    parser.add_argument("--until", type=str | None, default=None,
                        help=f"stop after this stage ({' | '.join(STAGES)}); run again without it to finish")
    parser.add_argument("--seed", type=int, default=0, help="seed of every fit and of k-means")
    return parser


def pipeline_from_config(cfg: Namespace, data: LongTailDataModule) -> DnCPipeline:
    """The pipeline of a parsed ``lssl dnc`` configuration."""
    teacher_kwargs: dict[str, Any] = dict(cfg.model.get("init_args") or {})
    if teacher_kwargs.get("image_size") is None:
        teacher_kwargs["image_size"] = int(data.image_size)  # follow the datamodule, as `lssl fit`
    distill = asdict(DistillOptions(**cfg.distill))
    student_kwargs = {k: v for k, v in distill.items() if v is not None}
    return DnCPipeline(
        datamodule=data,
        work_dir=cfg.work_dir,
        num_clusters=cfg.num_clusters,
        base_epochs=cfg.base_epochs,
        expert_epochs=cfg.expert_epochs,
        distill_epochs=cfg.distill_epochs,
        teacher_kwargs=teacher_kwargs,
        student_kwargs=student_kwargs,
        trainer_kwargs=asdict(TrainerOptions(**cfg.trainer)),
        teacher_class=cfg.model.class_path,
        kmeans_iterations=cfg.kmeans_iterations,
        kmeans_backend=cfg.kmeans_backend,
        kmeans_n_init=cfg.kmeans_n_init,
        seed=cfg.seed,
    )


def run(argv: list[str]) -> int:
    """``lssl dnc [OPTIONS]``: run (or resume) the four DnC stages; prints the stage folders.

    Exit status: 0 when done, 2 when a finished stage of ``--work_dir`` was computed with other
    settings (the message names the differing keys), 128 + signal (143 for SIGTERM) when a
    preemption stopped it (the finished stages are kept; the same command resumes)."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    init = parser.instantiate_classes(cfg)
    pipeline = pipeline_from_config(cfg, init.data)
    try:
        stages = pipeline.run(until=cfg.until)
    except StageMismatchError as err:
        print(f"lssl dnc: error: {err}", file=sys.stderr)
        return 2
    except SIGTERMException as stop:
        code = preemption_exit_code(stop) or 143
        print(stopped_line("lssl dnc", code, f"the finished stages and the interrupted stage's checkpoints are "
                                             f"kept in {pipeline.work_dir}"), file=sys.stderr)
        return code
    for stage, folder in stages.items():
        print(f"{stage}: {folder}")
    return 0
