"""The method card: the paper and section a method and its defaults come from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodCard:
    """Where a method comes from, printed by ``lssl help METHOD`` and kept on the class (``card``)."""

    name: str
    paper: str
    defaults_from: str  # section / table / equation of the defaults
    notes: str = ""
