"""``lssl dnc``: the whole Divide-and-Contrast pipeline (Tian, Hénaff, van den Oord; ICCV 2021).

Example (the embedded dataset, CPU-sized)::

    lssl dnc --data DigitsLT --model.backbone resnet_tiny --num_clusters 2 \\
        --base_epochs 20 --expert_epochs 20 --distill_epochs 20 --work_dir runs/dnc_digits

Re-running the same command resumes at the first unfinished stage; a finished stage computed with
other settings is an error (exit status 2) naming what differs; a run stopped by SIGTERM exits
with status 143 after keeping its finished stages (see :mod:`lightning_ssl.methods.dnc_pipeline`).

The output is a few lines per stage on standard error (what it trains, its clusters or experts,
its time) and, at the end, a table of the stages and the command that probes the result;
``--verbose`` brings back Lightning's model summaries, progress bars and messages.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.utilities.exceptions import SIGTERMException

import datamodules
from datamodules.base import LongTailDataModule
from lightning_ssl.checkpoints import preemption_exit_code, stopped_line
from lightning_ssl.cli import quiet
from lightning_ssl.cli.args import parse_jsonargparse, user_values
from lightning_ssl.config.errors import UsageError
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.dnc import DEFAULT_TEACHER
from lightning_ssl.methods.dnc_pipeline import DONE, STAGES, DnCPipeline, StageMismatchError


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
        limit_train_batches: cap on batches per epoch (a smoke test): a share in (0, 1] (1.0 =
            all) or a number of batches >= 1.
        enable_progress_bar: show each fit's progress bar (default: with ``--verbose`` only).
        enable_model_summary: print each fit's model summary (default: with ``--verbose`` only).
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    log_every_n_steps: int = 50
    limit_train_batches: int | float = 1.0
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ValueError(f"trainer.num_nodes={self.num_nodes} must be >= 1; pass e.g. --trainer.num_nodes 1")
        if self.log_every_n_steps < 1:
            raise ValueError(f"trainer.log_every_n_steps={self.log_every_n_steps} must be >= 1; pass e.g. "
                             "--trainer.log_every_n_steps 50")
        limit = self.limit_train_batches
        if isinstance(limit, float) and not 0 < limit <= 1 or isinstance(limit, int) and limit < 1:
            raise ValueError(f"trainer.limit_train_batches={limit} trains nothing or is not a share: pass a share in "
                             "(0, 1] (1.0 = every batch) or a number of batches >= 1")

    def resolved(self, verbose: bool) -> dict[str, Any]:
        """The ``pl.Trainer`` options, with the progress bar and model summary following ``verbose``
        where they are not given."""
        out = asdict(self)
        for key in ("enable_progress_bar", "enable_model_summary"):
            if out[key] is None:
                out[key] = verbose
        return out


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

    def __post_init__(self) -> None:
        for name in ("head_hidden_dim", "num_views"):
            if getattr(self, name) < 1:
                raise ValueError(f"distill.{name}={getattr(self, name)} must be >= 1; pass e.g. --distill.{name} "
                                 f"{dict(head_hidden_dim=4096, num_views=2)[name]}")
        if self.lr is not None and not (0 < self.lr < math.inf):
            raise ValueError(f"distill.lr={self.lr} must be > 0 and finite, or unset to keep the teachers' lr; pass "
                             "e.g. --distill.lr 0.45")


def _import_all_datamodules() -> None:
    """Import every registered datamodule so that ``--data`` accepts its bare class name."""
    for target in datamodules.REGISTRY.values():
        importlib.import_module(target.split(":")[0])


def build_parser() -> ArgumentParser:
    _import_all_datamodules()
    importlib.import_module("lightning_ssl.methods.moclr")
    parser = ArgumentParser(prog="lssl dnc", description="Divide and Contrast (Tian et al., ICCV 2021): "
                            "base MoCLR -> spherical k-means -> K experts -> distillation.", exit_on_error=False)
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


def pipeline_from_config(cfg: Namespace, data: LongTailDataModule, verbose: bool = True) -> DnCPipeline:
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
        trainer_kwargs=TrainerOptions(**cfg.trainer).resolved(verbose),
        teacher_class=cfg.model.class_path,
        kmeans_iterations=cfg.kmeans_iterations,
        kmeans_backend=cfg.kmeans_backend,
        kmeans_n_init=cfg.kmeans_n_init,
        seed=cfg.seed,
    )


def check_options(cfg: Namespace) -> None:
    """The options that need no data, before anything is built (one line each)."""
    if cfg.until is not None and cfg.until not in STAGES:
        raise UsageError(f"--until {cfg.until!r} is not a DnC stage; pass one of {', '.join(STAGES)}")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise UsageError(f"--seed {cfg.seed} must be an integer in [0, 2**32 - 1]; pass e.g. --seed 0")
    work = Path(cfg.work_dir)
    if work.exists() and not work.is_dir():
        raise UsageError(f"--work_dir {work} is a file; pass a folder (the stages go to <work_dir>/<stage>)")
    with user_values():
        TrainerOptions(**cfg.trainer)
        DistillOptions(**cfg.distill)


def run(argv: list[str]) -> int:
    """``lssl dnc [OPTIONS]``: run (or resume) the four DnC stages; prints a few lines per stage
    and, at the end, a table of the stages and the next command.

    Exit status: 0 when done, 2 for bad input (an option out of range, a finished stage of
    ``--work_dir`` computed with other settings: the message names the differing keys), 128 +
    signal (143 for SIGTERM) when a preemption stopped it (the finished stages are kept; the same
    command resumes)."""
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    quiet.configure(verbose)
    parser = build_parser()
    cfg = parse_jsonargparse(parser, argv)
    check_options(cfg)
    with user_values():
        init = parser.instantiate_classes(cfg)
        pipeline = pipeline_from_config(cfg, init.data, verbose)
    with stage_lines():
        try:
            stages = pipeline.run(until=cfg.until)
        except StageMismatchError as err:
            raise UsageError(str(err)) from err
        except SIGTERMException as stop:
            code = preemption_exit_code(stop) or 143
            print(stopped_line("lssl dnc", code, f"the finished stages and the interrupted stage's checkpoints are "
                                                 f"kept in {pipeline.work_dir}"), file=sys.stderr)
            return code
        except ValueError as err:  # a setting the data cannot meet (more clusters than images, ...)
            raise UsageError(str(err)) from err
    print_stages(stages, cfg.until)
    return 0


class stage_lines:  # noqa: N801 - used as a context manager, like contextlib's helpers
    """The pipeline's INFO lines on standard error as ``lssl dnc: ...`` for the duration."""

    def __enter__(self) -> stage_lines:
        self.logger = logging.getLogger("lightning_ssl.methods.dnc_pipeline")
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("lssl dnc: %(message)s"))
        self.saved = (self.logger.level, self.logger.propagate)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


def print_stages(stages: dict[str, Path], until: str | None) -> None:
    """The stage table (folder, time, what it made) and the command to run next."""
    rows = []
    for stage, folder in stages.items():
        marker = Path(folder) / DONE
        if not marker.is_file():
            continue
        done = json.loads(marker.read_text())
        rows.append((stage, str(folder), f"{done.get('seconds', 0):.0f} s", _made(stage, Path(folder), done)))
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if until is not None and until != STAGES[-1]:
        print(f"next: run the same command without --until {until} to finish the remaining stages")
    else:
        print(f"next: lssl probe {Path(stages['distill']) / 'model.ckpt'}")


def _made(stage: str, folder: Path, done: dict[str, Any]) -> str:
    """What a finished stage made, for the table: the cluster sizes, the experts' steps, a checkpoint."""
    if stage == "cluster":
        sizes = json.loads((folder / "clusters.json").read_text()).get("sizes", [])
        return "cluster sizes " + ", ".join(str(n) for n in sizes)
    if stage == "experts":
        return "expert steps " + ", ".join(str(n) for n in (done.get("artifacts") or {}).get("steps", []))
    return str(folder / "model.ckpt")
