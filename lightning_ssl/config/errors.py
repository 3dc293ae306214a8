"""The error a user's input raises: one line that names the input and the fix (exit status 2)."""

from __future__ import annotations

import re


class UsageError(ValueError):
    """Bad input from the user (an option, a path, a value): ``lssl`` prints the message on one line
    and exits with status 2, without a traceback unless ``--debug`` is given."""


_NOISE = re.compile(r"^(Expected a <class 'NoneType'>|Given value|Subtypes:|Does not validate|Not a valid subclass)")


def condense(message: str) -> str:
    """The informative part of a jsonargparse / LightningCLI error: the innermost reasons of a
    union-type failure (the ``- reason`` items, a ``Problem with ...:`` item joined with the lines
    under it), without the type listings and the echoed value."""
    lines = [ln.strip() for ln in message.splitlines()]
    reasons: list[str] = []
    for i, line in enumerate(lines):
        if not line.startswith("- "):
            continue
        item = line[2:].strip()
        if item.endswith(":"):  # the reason follows on the next lines
            detail = []
            for nxt in lines[i + 1 :]:
                if nxt.startswith("- ") or _NOISE.match(nxt) or not nxt:
                    break
                detail.append(nxt)
            item = f"{item} {' '.join(detail)}".strip()
        if item and not _NOISE.match(item) and not item.endswith(":") and item not in reasons:
            reasons.append(item)
    if not reasons:
        first = [ln for ln in lines if ln and not _NOISE.match(ln)]
        return first[-1] if first else message.strip()
    return "; ".join(reasons)
