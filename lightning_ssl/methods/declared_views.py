"""The views a method needs from the datamodule, declared once by the method.

A method states what its loss reads from ``batch[0]`` (the list of views, docs/design.md §3 "the
batch contract"): how many large crops, how many small crops and of which side, and whether the
un-augmented normalised view comes last. The fields of :class:`Views` are the datamodule's own
option names (``num_large_views``, ``num_small_views``, ``small_size``, ``clean_view``), and the
declaration runs one way: ``lssl fit`` and ``lssl sweep`` set the datamodule's options from it, so
the user never states the same fact twice (an explicit data option that contradicts it is an
error), and :class:`~lightning_ssl.methods.base.SSLMethod` checks every training batch against it
before ``compute_losses`` (:func:`views_mismatch`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class Views:
    """What a method reads from the batch's views; ``None`` means "no requirement" (the
    datamodule's value is used, whatever it is).

    Attributes:
        num_large_views: large (global) crops at the front of the view list.
        num_small_views: small crops after them (SwAV multi-crop, Caron et al. 2020 §3.2).
        small_size: side of the small crops.
        clean_view: the un-augmented normalised view is the last view (MTTV's ``n(.)``).
    """

    num_large_views: int | None = None
    num_small_views: int | None = None
    small_size: int | None = None
    clean_view: bool | None = None

    def __post_init__(self) -> None:
        if self.num_large_views is not None and self.num_large_views < 1:
            raise ValueError(f"Views(num_large_views={self.num_large_views}): a method needs at least one large view")
        if self.num_small_views is not None and self.num_small_views < 0:
            raise ValueError(f"Views(num_small_views={self.num_small_views}) must be >= 0")
        if self.small_size is not None and self.small_size < 1:
            raise ValueError(f"Views(small_size={self.small_size}) must be >= 1")

    def data_options(self) -> dict[str, int | bool]:
        """The datamodule options this declaration fixes: ``{option name: value}``."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def min_views(self) -> int:
        """The fewest views a batch may carry: the large crops (at least one), the small crops and
        the clean view; more are allowed (a method reads the ones it declared)."""
        return (self.num_large_views or 1) + (self.num_small_views or 0) + int(bool(self.clean_view))

    def describe(self) -> str:
        """``2 large + 4 small views`` / ``3 large views`` / ``1 large view + the clean view``."""
        large = self.num_large_views or 1
        text = f"{large} large" + (f" + {self.num_small_views} small" if self.num_small_views else "")
        text += " view" + ("s" if large + (self.num_small_views or 0) > 1 else "")
        return text + (" + the clean view last" if self.clean_view else "")

    def fix(self) -> str:
        """The data options that give these views, as flags: ``--data.num_large_views 2 ...``."""
        options = self.data_options() or {"num_large_views": self.min_views()}
        return " ".join(f"--data.{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())


VIEW_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(Views))
"""The view options, named alike on the method (``__init__``), in :class:`Views` and on the datamodule."""


def views_mismatch(method: str, declared: Views, views: Any, data: Mapping[str, Any] | None = None) -> str | None:
    """``None`` when a training batch's views (``batch[0]``) hold what ``method`` declared, else the
    one-line error: the method, what it declared, what arrived and the data options that fix it.

    ``data`` holds the view options of the datamodule the batch comes from, when there is one: each
    option the method declares must have the declared value there (a clean view or an unused small
    crop cannot be told from the tensors alone). Without a datamodule the batch must hold at least
    :meth:`Views.min_views` views."""
    if not isinstance(views, Sequence) or not all(isinstance(v, Tensor) for v in views):
        return (
            f"{method} reads a list of views from batch[0] (docs/design.md §3), got {type(views).__name__}: "
            "train on a LongTailDataModule's pre-training batches"
        )
    differ = {k: data[k] for k, v in declared.data_options().items() if data is not None and k in data and data[k] != v}
    if differ:
        made = ", ".join(f"{k}={v}" for k, v in differ.items())
        return f"{method} declares {declared.describe()} per image, but the datamodule makes {made}: {_fix(declared)}"
    if len(views) < declared.min_views():
        sides = ", ".join(str(v.shape[-1]) for v in views)
        return (
            f"{method} declares {declared.describe()} per image, but the batch carries {_count(len(views))}"
            f"{f' (sides {sides})' if sides else ''}: {_fix(declared)}"
        )
    return None


def _fix(declared: Views) -> str:
    """The data options that make a batch hold ``declared`` (built only for an error message)."""
    return f"pass {declared.fix()} (lssl fit and lssl sweep set them from the method's options)"


def _count(n: int) -> str:
    return f"{n} view" + ("" if n == 1 else "s")


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
