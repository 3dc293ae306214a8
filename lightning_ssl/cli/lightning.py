"""``lssl fit | validate | test``: LightningCLI over any LightningModule and every datamodule.

``--model`` and ``--data`` take a short name (``SimCLR``, ``simclr``, ``DigitsLT``, ``cifar100_lt``)
or a full class path (``my_module.MyBYOL``): a ``pytorch_lightning.LightningModule`` in the user's
own package runs with no change to the suite (``SSLMethod`` is the convenient base, not a
requirement). Bad input is one line (:class:`UsageError`); ``fit`` ends with a table of the final
probe metrics and the paths of the checkpoint and the logs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path

import torch
import yaml
from lightning_fabric.utilities.exceptions import MisconfigurationException
from rich.console import Console
from rich.table import Table

from datamodules.errors import DataInputError
from lightning_ssl.cli.args import CompactHelpFormatter, ShortHelpFormatter, parse_error
from lightning_ssl.cli.help import help_request, print_help
from lightning_ssl.cli.quiet import configure
from lightning_ssl.config.cli import SSLCLI, default_callbacks, default_loggers
from lightning_ssl.config.errors import UsageError
from lightning_ssl.config.registry import expand_short_names

__all__ = ["SSLCLI", "default_callbacks", "default_loggers", "run_lightning_cli"]


def _finish_wandb() -> None:
    """Flush and close a W&B run started by the logger (also needed in-process, e.g. in sweeps)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_lightning_cli(args: list[str]) -> SSLCLI | None:
    """``lssl fit | validate | test ARGS``; ``None`` when only help was printed. Bad input raises
    :class:`UsageError` (one line, naming the option and the fix)."""
    verbose = "--verbose" in args
    configure(verbose=verbose)  # Lightning's tips and repeated warnings, unless --verbose
    args = [a for a in args if a != "--verbose"]
    try:
        args = expand_short_names(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    wanted = help_request(args)
    if wanted is not None:
        print_help(wanted)
        return None
    formatter = ShortHelpFormatter if "--help-all" in args else CompactHelpFormatter
    args = ["--help" if a == "--help-all" else a for a in args]
    for path in _config_files(args):
        _check_config_file(path)
    if not verbose:
        args = quiet_defaults(args)
    try:
        cli = _build_cli(args, formatter)
    except MisconfigurationException as err:  # e.g. --trainer.accelerator gpu on a machine without one
        raise UsageError(misconfiguration(err)) from err
    except FileNotFoundError as err:  # a dataset that is not on disk: how to get it, in one line
        if isinstance(err, DataInputError) or err.errno is not None:
            raise  # a file-system error, or already one line
        hint = " (on the command line: --data.download true)" if "download" in str(err) else ""
        raise UsageError(f"{err}{hint}") from err
    finally:
        _finish_wandb()
    if cli.subcommand == "fit":
        print_summary(cli)
    return cli


def misconfiguration(err: Exception) -> str:
    """Lightning's refusal of a Trainer setting, on one line, with the devices this machine has when
    it is about them (``No supported gpu backend found!`` names neither the option nor the fix)."""
    text = " ".join(str(err).split())
    if any(word in text.lower() for word in ("gpu", "cuda", "accelerator", "device", "mps", "tpu")):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        text += (
            f" (--trainer.accelerator / --trainer.devices: this machine has {count} CUDA GPU(s); pass "
            "--trainer.accelerator cpu, or auto to use what there is)"
        )
    return text


def quiet_defaults(args: list[str]) -> list[str]:
    """``args`` with Lightning's per-run output off by default: no model summary, and no progress
    bar unless standard error is a terminal. They come right after the sub-command, so a
    ``--config`` file or a later ``--trainer.enable_*`` option still sets them."""
    extra = ["--trainer.enable_model_summary", "false"]
    if not sys.stderr.isatty():
        extra += ["--trainer.enable_progress_bar", "false"]
    return [args[0], *extra, *args[1:]] if args else args


def _build_cli(args: list[str], formatter: type = ShortHelpFormatter) -> SSLCLI:
    try:
        with warnings.catch_warnings():  # args is sys.argv with the short names expanded, on purpose
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
            return SSLCLI(
                args=args,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"default_env": False, "exit_on_error": False, "formatter_class": formatter},
            )
    except argparse.ArgumentError as err:  # a value the parser refused: its reasons, without union noise
        raise UsageError(_unknown_option(str(err)) or parse_error(str(err))) from err


def _unknown_option(message: str) -> str | None:
    """``--model.temprature``: the option, the class, and where its options are listed."""
    key = re.match(r'Parser key "(\w+)"', message)
    found = re.search(r"class_path '([\w.]+)':\s+Option '(\w+)' is not accepted", message)
    if not (key and found):
        return None
    name = found.group(1).rsplit(".", 1)[-1]
    return f"--{key.group(1)}.{found.group(2)}: {name} has no option {found.group(2)!r}; its options: lssl help {name}"


def _config_files(args: list[str]) -> list[str]:
    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    return files + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def _check_config_file(path: str) -> None:
    """``--config FILE`` must be a readable YAML mapping: a one-line error otherwise."""
    example = "e.g. benchmarks/configs/cifar/simclr.yaml"
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--config {path}: no such file; pass a YAML config, {example}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a text file; pass a YAML config, {example}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(
            f"--config {path}: YAML syntax error{where} ({getattr(err, 'problem', err)}); fix the file"
        ) from None
    if data is not None and not isinstance(data, dict):
        raise UsageError(
            f"--config {path}: a config is a YAML mapping (model: ..., data: ...), got a "
            f"{type(data).__name__}; {example}"
        )


def print_summary(cli: SSLCLI) -> None:
    """The final probe metrics of a fit and where its checkpoint and logs are."""
    trainer = cli.trainer
    rule = str(getattr(cli.datamodule, "group_rule", "")).replace("/", "_")
    table = Table(title=f"lssl fit: final metrics after epoch {trainer.current_epoch} (step {trainer.global_step})")
    for col in ("probe", "all", "many", "medium", "few"):
        table.add_column(col, justify="left" if col == "probe" else "right")
    for callback in trainer.callbacks:
        metrics = getattr(callback, "last_metrics", None)
        prefix = getattr(callback, "prefix", None)
        if not metrics or not prefix:
            continue
        cells = [metrics.get(f"{prefix}/acc_top1")] + [
            metrics.get(f"{prefix}/{rule}/acc_{g}") for g in ("many", "medium", "few")
        ]
        table.add_row(prefix, *["-" if v is None else f"{100 * float(v):.2f}" for v in cells])
    console = Console()
    if table.row_count:
        console.print(table)
    ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
        trainer.checkpoint_callback, "best_model_path", ""
    )
    for logger in trainer.loggers:
        console.print(f"{type(logger).__name__}: {logger.log_dir}", soft_wrap=True)
    if ckpt:
        shown = _relative(ckpt)
        console.print(f"checkpoint: {shown}", soft_wrap=True)
        console.print(f"next: lssl probe {shown}", soft_wrap=True)


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to copy)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
