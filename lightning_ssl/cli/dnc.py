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

The flags are made from the pipeline's declarations, as LightningCLI makes ``lssl fit``'s from
``__init__``: ``--num_clusters`` ... ``--kmeans_n_init`` from :class:`DnCOptions`, ``--trainer.*``
from :class:`StageTrainerOptions`, ``--distill.*`` from :class:`DnC`'s own signature.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.utilities.exceptions import SIGTERMException

from datamodules.base import LongTailDataModule
from lightning_ssl.checkpoints import preemption_exit_code, stopped_line
from lightning_ssl.cli import quiet
from lightning_ssl.cli.args import ShortHelpFormatter, parse_jsonargparse, user_values
from lightning_ssl.config.errors import UsageError
from lightning_ssl.config.registry import import_all_datamodules, method_classes
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.dnc import DEFAULT_TEACHER, DnC
from lightning_ssl.methods.dnc_pipeline import (
    DONE,
    STAGES,
    TEACHER_WIRING,
    DnCOptions,
    DnCPipeline,
    StageMismatchError,
    StageTrainerOptions,
    student_options,
)

# the student's options offered as --distill.*: those it does not take from the teachers
# (SHARED_WITH_STUDENT), and its learning rate, which a short distillation raises (§3.4)
DISTILL_FLAGS = ("head_hidden_dim", "num_large_views", "lr")


def build_parser() -> ArgumentParser:
    import_all_datamodules()
    method_classes()  # every built-in method, so that --model takes a bare class name
    parser = ArgumentParser(
        prog="lssl dnc",
        description="Divide and Contrast (Tian et al., ICCV 2021): "
        "base MoCLR -> spherical k-means -> K experts -> distillation. The student takes the "
        "teachers' architecture and optimiser options (--model.*) unless --distill.* sets "
        "them; --distill.lr unset keeps the teachers' learning rate.",
        exit_on_error=False,
        formatter_class=ShortHelpFormatter,
    )
    parser.add_subclass_arguments(LongTailDataModule, "data", required=True)
    parser.add_subclass_arguments(
        SSLMethod,
        "model",
        instantiate=False,
        help="the base and expert method (MoCLR, §3.1) and the architecture and "
        "optimiser options the student shares with it",
    )
    parser.set_defaults(model={"class_path": DEFAULT_TEACHER})
    parser.add_class_arguments(DnCOptions, None, skip={"distill"}, instantiate=False)
    parser.add_class_arguments(
        DnC,
        "distill",
        instantiate=False,
        fail_untyped=False,
        skip=set(student_options()) - set(DISTILL_FLAGS) | set(TEACHER_WIRING),
    )
    parser.set_defaults({"distill.lr": None})  # unset: the teachers' learning rate
    parser.add_class_arguments(StageTrainerOptions, "trainer", instantiate=False)
    parser.add_argument("--work_dir", type=str, default="runs/dnc", help="stage folders and done.json markers")
    parser.add_argument(
        "--until",
        type=str | None,
        default=None,
        help=f"stop after this stage ({' | '.join(STAGES)}); run again without it to finish",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every fit and of k-means")
    return parser


def pipeline_from_config(cfg: Namespace, data: LongTailDataModule, verbose: bool = True) -> DnCPipeline:
    """The pipeline of a parsed ``lssl dnc`` configuration."""
    teacher_kwargs: dict[str, Any] = dict(cfg.model.get("init_args") or {})
    if teacher_kwargs.get("image_size") is None:
        teacher_kwargs["image_size"] = int(data.image_size)  # follow the datamodule, as `lssl fit`
    options = {f.name: cfg[f.name] for f in fields(DnCOptions) if f.name != "distill"}
    return DnCPipeline(
        datamodule=data,
        work_dir=cfg.work_dir,
        teacher_class=cfg.model.class_path,
        teacher_kwargs=teacher_kwargs,
        trainer_kwargs=StageTrainerOptions(**cfg.trainer).resolved(verbose),
        seed=cfg.seed,
        distill={k: v for k, v in cfg.distill.items() if v is not None},
        **options,
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
        StageTrainerOptions(**cfg.trainer)


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
            print(
                stopped_line(
                    "lssl dnc",
                    code,
                    f"the finished stages and the interrupted stage's checkpoints are kept in {pipeline.work_dir}",
                ),
                file=sys.stderr,
            )
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
