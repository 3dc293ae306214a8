"""A run's config through the ``lssl fit`` parser: resolved (defaults filled in) or instantiated.

The same ``SSLCLI`` that ``lssl fit`` uses parses each config, so a sweep accepts exactly what
``lssl fit`` accepts (docs/design.md §8: "typed ``__init__`` is the config"; no second schema): any
``LightningModule`` by class path, and the datamodule's views set from the method's declaration.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

from jsonargparse import ArgumentParser

from datamodules.base import LongTailDataModule
from lightning_ssl.class_path import import_class
from lightning_ssl.config.cli import SSLCLI
from lightning_ssl.config.errors import UsageError
from lightning_ssl.config.registry import dataset_classes, import_all_datamodules, method_classes

DROPPED = ("config", "wandb")  # parser bookkeeping, and a logging choice that is set per launch


class _ParseOnly(SSLCLI):
    """``SSLCLI`` that parses and fills in defaults but builds nothing."""

    def instantiate_classes(self) -> None:
        return None

    def _set_seed(self) -> None:
        return None

    def reparse(self, config: dict[str, Any]) -> None:
        """Parse another config with the parser already built (building it is a third of a parse's time)."""
        with _args_given_on_purpose():
            self.parse_arguments(self.parser, config)
        self._parse_ckpt_path()
        self.before_instantiate_classes()


_PARSE_ONLY: list[_ParseOnly] = []  # the one parse-only CLI of this process, built on first use
_RESOLVED: dict[str, dict[str, Any]] = {}  # a config's canonical JSON -> its resolved config


@contextlib.contextmanager
def _args_given_on_purpose() -> Iterator[None]:
    """Silence LightningCLI's warning that a config is given as a dict, not taken from ``sys.argv``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        yield


def _cli(cls: type[SSLCLI], config: dict[str, Any]) -> SSLCLI:
    method_classes()  # imports every built-in method so that bare class names resolve
    with _args_given_on_purpose():
        return cls(
            args=config,
            run=False,
            save_config_callback=None,
            parser_kwargs={"default_env": False, "exit_on_error": False},
        )


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """The fully resolved config (class paths expanded, every default present) of an ``lssl fit``
    config given as a dict; ``ValueError`` with the parser's message (the bad key and the
    accepted ones) when it does not parse. A config met before in this process is not parsed again
    (the sweep's tests and a dry run followed by its launch meet the same configs)."""
    key = json.dumps(config, sort_keys=True, default=repr)
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(config)
    return copy.deepcopy(_RESOLVED[key])


def _resolve(config: dict[str, Any]) -> dict[str, Any]:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            if _PARSE_ONLY:
                _PARSE_ONLY[0].reparse(config)
            else:
                _PARSE_ONLY.append(_cli(_ParseOnly, config))
    except (argparse.ArgumentError, SystemExit) as err:
        message = str(err) if isinstance(err, argparse.ArgumentError) else stderr.getvalue().strip()
        raise ValueError(f"invalid run config: {_with_choices(message)}") from None
    except UsageError as err:  # e.g. a data option that contradicts the method's views
        raise ValueError(f"invalid run config: {err}") from None
    resolved = _PARSE_ONLY[0].config.as_dict()
    for key in DROPPED:
        resolved.pop(key, None)
    return resolved


def accepted_options(class_path: str) -> list[str]:
    """The ``__init__`` options jsonargparse accepts for a class (``**kwargs`` followed to parents)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(import_class(class_path), "x")
    return sorted(parser.get_defaults().as_dict()["x"])


def _with_choices(message: str) -> str:
    """Append the accepted options of the class whose option was refused."""
    match = re.search(r"class_path '([\w.]+)':\s+Option '(\w+)' is not accepted", message)
    if not match:
        return message
    class_path, option = match.groups()
    return (
        f"{class_path} has no option {option!r}; valid options: {', '.join(accepted_options(class_path))}\n"
        f"(parser message: {message})"
    )


def instantiate(config: dict[str, Any]) -> SSLCLI:
    """``SSLCLI(..., run=False)`` of a resolved config: ``.model``, ``.datamodule``, ``.trainer`` built."""
    return _cli(SSLCLI, config)


def _data_parser() -> ArgumentParser:
    import_all_datamodules()
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LongTailDataModule, "data")
    return parser


def _data_config(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    classes = dataset_classes()
    name = str(config.get("class_path", ""))
    if name in classes:
        config["class_path"] = classes[name]
    elif "." not in name:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(classes))}")
    return config


def validate_data(config: dict[str, Any]) -> None:
    """Parse a datamodule config ``{class_path, init_args}`` (e.g. a transfer set) without building it."""
    try:
        _data_parser().parse_object({"data": _data_config(config)})
    except argparse.ArgumentError as err:
        raise ValueError(f"invalid data config {config}: {_with_choices(str(err))}") from None


def instantiate_data(config: dict[str, Any]) -> Any:
    """The datamodule of a config ``{class_path, init_args}`` (a bare registered class name works)."""
    parser = _data_parser()
    cfg = parser.parse_object({"data": _data_config(config)})
    return parser.instantiate_classes(cfg).data
