"""One-line checks of datamodule options, run in ``__init__`` before any file is read.

Each raises ``ValueError`` naming the option, the value given, the valid range and the fix, so the
command line (one line, exit status 2), the sweep's validation (before the first run) and Python
users all get the same message. ``NaN`` and infinities fail every range check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _flag(name: str, example: Any) -> str:
    return f"--data.{name} {example}"


def check_int(name: str, value: Any, low: int, example: Any, *, optional: bool = False, why: str = "") -> None:
    """``value`` is an int >= ``low`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        reason = f" ({why})" if why else ""
        default = " or leave it unset for the default" if optional else ""
        raise ValueError(
            f"{name}={value!r} must be an integer >= {low}{reason}; pass e.g. {_flag(name, example)}{default}"
        )


def check_fraction(name: str, value: Any, example: Any, *, why: str = "") -> None:
    """``value`` is a finite number in ``(0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < float(value) <= 1.0):
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name}={value!r} is outside (0, 1]{reason}; pass e.g. {_flag(name, example)}")


def check_positive(name: str, value: Any, example: Any, *, optional: bool = False, why: str = "") -> None:
    """``value`` is a finite number > 0 (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < float(value) < math.inf):
        reason = f" ({why})" if why else ""
        default = " or leave it unset for the default" if optional else ""
        raise ValueError(
            f"{name}={value!r} must be a finite number > 0{reason}; pass e.g. {_flag(name, example)}{default}"
        )


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` is one of ``choices``."""
    valid = list(choices)
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)} (e.g. {_flag(name, valid[0])})")


def check_seed(name: str, value: Any) -> None:
    """A seed numpy's ``RandomState`` accepts: an int in ``[0, 2**32 - 1]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError(
            f"{name}={value!r} must be an integer in [0, 2**32 - 1] (a numpy seed); pass e.g. {_flag(name, 0)}"
        )


def check_load_size(load_size: int | None, image_size: int) -> int:
    """The resolved ``load_size`` of a file datamodule (default ``image_size * 8 // 7``, the eval
    resize), at least ``image_size``: the views are cut from the loaded image."""
    check_int("load_size", load_size, 1, image_size * 8 // 7, optional=True)
    resolved = load_size if load_size is not None else image_size * 8 // 7
    if resolved < image_size:
        raise ValueError(
            f"load_size={resolved} is smaller than image_size={image_size}: the views are cut from "
            f"the loaded image; pass --data.load_size {image_size * 8 // 7} (or leave it unset)"
        )
    return resolved
