"""Method cards: the paper and section each method and its defaults come from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodCard:
    name: str
    paper: str
    defaults_from: str  # section / table / equation of the defaults
    notes: str = ""
