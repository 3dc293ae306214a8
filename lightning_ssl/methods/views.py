"""The views a method needs from the datamodule, declared once by the method.

A method states what its loss reads from ``batch[0]`` (the list of views, docs/design.md "batch
contract"): how many large crops, how many small crops and of which side, and whether the
un-augmented normalised view comes last. ``lssl fit`` and ``lssl sweep`` set the datamodule's
``num_large_views`` / ``num_small_views`` / ``small_size`` / ``clean_view`` from it, so the user
never states the same fact twice; an explicit data option that contradicts it is an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Views field -> the LongTailDataModule option that produces it (docs/design.md "datamodules")
DATA_OPTIONS = {"num_large": "num_large_views", "num_small": "num_small_views", "small_size": "small_size",
                "clean": "clean_view"}


@dataclass(frozen=True)
class Views:
    """What a method reads from the batch's views; ``None`` means "no requirement" (the
    datamodule's value is used, whatever it is).

    Attributes:
        num_large: large (global) crops at the front of the view list.
        num_small: small crops after them (SwAV multi-crop, Caron et al. 2020 §3.2).
        small_size: side of the small crops.
        clean: the un-augmented normalised view is the last view (MTTV's ``n(.)``).
    """

    num_large: int | None = None
    num_small: int | None = None
    small_size: int | None = None
    clean: bool | None = None

    def __post_init__(self) -> None:
        if self.num_large is not None and self.num_large < 1:
            raise ValueError(f"Views(num_large={self.num_large}): a method needs at least one large view")
        if self.num_small is not None and self.num_small < 0:
            raise ValueError(f"Views(num_small={self.num_small}) must be >= 0")
        if self.small_size is not None and self.small_size < 1:
            raise ValueError(f"Views(small_size={self.small_size}) must be >= 1")

    def data_options(self) -> dict[str, int | bool]:
        """The datamodule options this declaration fixes: ``{option name: value}``."""
        return {DATA_OPTIONS[name]: value for name, value in vars(self).items() if value is not None}


def init_option(cls: type, options: Mapping[str, Any] | None, name: str) -> Any:
    """``options[name]`` when given, else the default of ``name`` in the first ``__init__`` of
    ``cls``'s MRO that declares it (so a method's declaration follows its own defaults)."""
    if options is not None and name in options:
        return options[name]
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        param = inspect.signature(init).parameters.get(name) if init is not None else None
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    raise KeyError(f"{cls.__name__}.__init__ has no option {name!r} with a default")
