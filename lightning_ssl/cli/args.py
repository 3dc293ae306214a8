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
