"""Command-line parsing helpers shared by the ``lssl`` sub-commands: every refusal is one line.

argparse prints its usage and the error on two lines and exits; jsonargparse prints a usage block.
Here both raise :class:`UsageError` instead, which ``lssl`` prints as ``lssl CMD: message`` (exit
status 2), and values that ``__init__`` refuses while a sub-command builds its objects become the
same one line.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from jsonargparse import DefaultHelpFormatter

from lightning_ssl.config.errors import UsageError, condense

_KNOWN_SUBCLASSES = re.compile(r", known subclasses: [^)]*")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise :class:`UsageError` (one line, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class ShortHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help without its list of every known subclass after ``--model`` / ``--data``
    (15 to 30 lines each); the option's own help names ``lssl help NAME`` / ``lssl data stats NAME``.
    jsonargparse has no setting for it, hence the override."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return _KNOWN_SUBCLASSES.sub("", super()._get_help_string(action))

    def start_section(self, heading: str | None) -> None:
        """Group titles that are a class's repr (a base class without a docstring) in words."""
        for start, title in _SECTION_TITLES.items():
            if heading and heading.startswith(start):
                heading = title
        super().start_section(heading)


_SECTION_TITLES = {
    "<class 'pytorch_lightning.core.module.LightningModule'>": (
        "The method: a name such as SimCLR (lssl help NAME) or any LightningModule's class path"
    ),
    "(<class 'torch.optim.lr_scheduler.LRScheduler'>": "Learning-rate scheduler",
    "Runs the full optimization routine": "Starting from a checkpoint",
    "Customize every aspect of training via flags": "The Trainer (lssl fit --help-all lists all its options)",
}


# the options `lssl fit --help` shows with a one-line help of their own (Lightning's take 2-5 lines
# each); of the Trainer's, only these are shown: --help-all lists the other 40 or so
SHORT_HELP = {
    "--config": "a YAML config (e.g. benchmarks/configs/...); later options override it",
    "--print_config": "print the resolved config and exit",
    "--seed_everything": "the seed of every random generator (true: draw one)",
    "--wandb": "log to this Weights & Biases project too (offline without credentials)",
    "--wandb_id": "the W&B run id to continue",
    "--resume": "continue this command's run from its newest checkpoint; false starts afresh",
    "--ckpt_config": "with --ckpt_path: train the checkpoint's model config, not the command's",
    "--ckpt_path": "a checkpoint to start from",
    "--model": "--model NAME, then --model.OPTION VALUE for its options",
    "--data": "--data NAME, then --data.OPTION VALUE for its options",
    "--trainer.accelerator": "cpu, gpu, mps or auto",
    "--trainer.devices": "how many devices, or which: 1, 4, [0, 2], auto",
    "--trainer.strategy": "auto, ddp, ddp_spawn, fsdp, ...",
    "--trainer.num_nodes": "machines of a distributed run",
    "--trainer.precision": "32-true, bf16-mixed, 16-mixed or 64-true",
    "--trainer.max_epochs": "stop after this many epochs",
    "--trainer.max_steps": "stop after this many optimiser steps (-1: no limit)",
    "--trainer.logger": "loggers: class paths, or false",
    "--trainer.callbacks": "callbacks (--trainer.callbacks+=CLASS_PATH adds one)",
    "--trainer.default_root_dir": "where runs/ is written (null: the working directory)",
}
TRAINER_SHOWN = frozenset(name for name in SHORT_HELP if name.startswith("--trainer."))
# --optimizer / --lr_scheduler replace the optimiser a method builds from its paper: rarely wanted, in --help-all
HIDDEN = ("--trainer", "--weights_only", "--optimizer", "--lr_scheduler")
_CLASS_CONFIG = re.compile(r"\{'class_path': '[\w.]*?(\w+)'(?:, 'init_args': \{[^{}]*\})?\}")  # -> the class name
_TYPE_SUFFIX = re.compile(r"\s*\(type: .*\)\s*$", re.S)


class CompactHelpFormatter(ShortHelpFormatter):
    """``lssl fit --help`` on one screen (LightningCLI's is 450 lines): a short usage line, the
    suite's own options, the Trainer options of :data:`TRAINER_SHOWN`, each help cut to its first
    sentence, and how many were left out (``--help-all`` shows them). jsonargparse has no filter for
    its help, hence the override."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden = 0

    def add_usage(self, usage: str | None, actions: Any, groups: Any, prefix: str | None = None) -> None:
        if prefix != "":  # "" is argparse building a sub-command's prog from the main usage: left as is
            usage = "%(prog)s [--config FILE] [--model NAME] [--data NAME] [--GROUP.OPTION VALUE ...]"
        super().add_usage(usage, actions, groups, prefix)

    def add_arguments(self, actions: Any) -> None:
        shown = [action for action in actions if _shown(action)]
        self.hidden += len(actions) - len(shown)
        super().add_arguments(shown)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action)
        suffix = _TYPE_SUFFIX.search(text)
        body, tail = (text[: suffix.start()], suffix.group(0)) if suffix else (text, "")
        own = next((SHORT_HELP[name] for name in action.option_strings if name in SHORT_HELP), None)
        return (own or re.split(r"(?<=\.)\s", body.strip(), maxsplit=1)[0]) + tail

    def _expand_help(self, action: argparse.Action) -> str:
        """``(type: ..., default: X)`` as ``(default: X)`` (nothing for ``null``), a default list of
        classes by their names."""
        text = super()._expand_help(action)
        suffix = _TYPE_SUFFIX.search(text)
        if not suffix or ", default: " not in suffix.group(0):
            return text
        default = _CLASS_CONFIG.sub(r"\1", suffix.group(0).rsplit(", default: ", 1)[1].rstrip()[:-1])
        return text[: suffix.start()] + ("" if default == "null" else f" (default: {default})")

    def format_help(self) -> str:
        command = self._prog.split()[-1]
        more = f"{self.hidden} more options (most of them the Trainer's): lssl {command} --help-all\n"
        return super().format_help().rstrip("\n") + f"\n\n{more}" if self.hidden else super().format_help()


def _shown(action: argparse.Action) -> bool:
    """Whether ``lssl fit --help`` shows an option: not a Trainer option outside :data:`TRAINER_SHOWN`,
    not a ``.help`` option, none of :data:`HIDDEN`."""
    names = action.option_strings
    if not names:
        return True
    first = names[0]
    if first.endswith(".help"):
        return False  # lssl help NAME, named in the group titles, is the short form
    if first in HIDDEN:
        return False
    return not first.startswith("--trainer.") or first in TRAINER_SHOWN


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts that must be >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


@contextmanager
def user_values() -> Iterator[None]:
    """Turn a ``ValueError`` / ``TypeError`` raised while objects are built from the user's options
    (an ``__init__`` refusing a value, jsonargparse refusing a type) into :class:`UsageError`."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError) as err:
        raise UsageError(condense(str(err))) from err


def parse_jsonargparse(parser: Any, argv: list[str]) -> Any:
    """``parser.parse_args(argv)`` of a jsonargparse parser built with ``exit_on_error=False``: its
    error (an unknown option, a value of the wrong type, a missing required one) as one line."""
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as err:
        raise UsageError(f"{parse_error(str(err))} (see {parser.prog} --help)") from err


def parse_error(message: str) -> str:
    """``--data.batch_size '1.5': expected int or None`` from jsonargparse's multi-line report of a
    value of the wrong type (nested keys of ``--model`` / ``--data`` joined); other messages as
    :func:`condense` shortens them."""
    keys = list(re.finditer(r'Parser key "([\w.]+)":', message))
    if not keys:
        return condense(message)
    line_start = message.rfind("\n", 0, keys[-1].start()) + 1
    indent = keys[-1].start() - line_start
    inner_lines = []
    for line in message[keys[-1].end() :].splitlines()[1:]:  # the lines indented below the innermost key
        if len(line) - len(line.lstrip()) <= indent:
            break
        inner_lines.append(line)
    inner = "\n".join(inner_lines)
    value = re.search(r"(?:Given value|Got value): (.*)", inner)
    if value is None:
        return condense(message)
    subtypes = re.search(r"Subtypes: \[(.*)\]", inner)
    expected = subtypes.group(1) if subtypes else ", ".join(re.findall(r"Expected a (<class '\w+'>|[\w\[\]]+)", inner))
    names = [re.sub(r"<class '(\w+)'>", r"\1", t.strip()).replace("NoneType", "None") for t in expected.split(", ")]
    kind = " or ".join(n for n in names if n) or "another type"
    key = ".".join(k.group(1) for k in keys)
    return f"--{key} {value.group(1).strip()!r}: expected {kind}"
