"""The datasets known by name, found where they are defined.

A datamodule is known by its card's name (``cifar10_lt``) and by its class name (``CIFAR10LT``):
every module-level subclass of :class:`~datamodules.base.LongTailDataModule` that sets its own
``card`` is registered by being defined. The built-in ones are found by importing every module of
this package (as the method names are found in ``lightning_ssl.methods``); a user's datamodule is
found once its module is imported, and a class path (``my_package.MyLT``) works without that.
There is no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

from datamodules.base import LongTailDataModule

_PACKAGE = __name__.rpartition(".")[0]


def import_builtin_datamodules() -> None:
    """Import every module of this package, so that each built-in datamodule is defined."""
    package = importlib.import_module(_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{_PACKAGE}.{info.name}")


def datamodule_classes() -> dict[str, type[Any]]:
    """Card name -> class of every registered datamodule (built-in ones and any imported one), in
    name order; ``ValueError`` naming both classes when two claim the same name."""
    import_builtin_datamodules()
    found: dict[str, type[Any]] = {}
    for cls in _subclasses(LongTailDataModule):
        if "card" not in vars(cls) or not _defined_at_module_level(cls):
            continue
        name = cls.card.name
        other = found.get(name)
        if other is not None and other is not cls:
            raise ValueError(
                f"dataset name {name!r} is claimed by {_path(other)} and {_path(cls)}: give one of "
                "them a card with another name, or select it by class path"
            )
        found[name] = cls
    return dict(sorted(found.items()))


def datamodule_class(name: str) -> type[Any]:
    """The datamodule registered as ``name``: its card name (``cifar10_lt``) or its class name in
    any case (``CIFAR10LT``, ``cifar10lt``); ``ValueError`` naming the valid names otherwise."""
    classes = datamodule_classes()
    if name in classes:
        return classes[name]
    by_class = {cls.__name__.lower(): cls for cls in classes.values()}
    if name.lower() in by_class:
        return by_class[name.lower()]
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(classes))}")


def _subclasses(cls: type[Any]) -> list[type[Any]]:
    """Every subclass of ``cls``, depth first."""
    out: list[type[Any]] = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _defined_at_module_level(cls: type[Any]) -> bool:
    """Whether ``cls`` is what its module holds under its name (not a class made in a function,
    nor a stale copy left by re-importing its module): only such a class imports by its path."""
    return getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is cls


def _path(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
