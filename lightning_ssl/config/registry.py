"""Short names of methods and datasets, the same in every command.

A method is named by its class name (``SimCLR``), in any case (``simclr``), or by a class path
(``my_package.MyBYOL``: any ``pytorch_lightning.LightningModule``); a dataset by its class name
(``CIFAR100LT``), its card's name (``cifar100_lt``) or a class path. Both kinds are found where
they are defined (:func:`method_classes`, :mod:`datamodules.names`): there is no list to edit.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import lightning_ssl.methods as methods_package
from datamodules.names import datamodule_classes
from lightning_ssl.methods.base import SSLMethod


def import_all_datamodules() -> None:
    """Import every built-in datamodule so that its bare class name resolves in a parser."""
    datamodule_classes()


def method_classes() -> dict[str, str]:
    """Built-in methods: class name -> class path (every ``SSLMethod`` subclass defined in a
    module of ``lightning_ssl.methods``)."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(methods_package.__path__):
        module = importlib.import_module(f"{methods_package.__name__}.{info.name}")
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, SSLMethod)
                and obj is not SSLMethod
                and obj.__module__ == module.__name__
            ):
                found[name] = f"{obj.__module__}.{name}"
    return found


def dataset_classes() -> dict[str, str]:
    """Registered datamodules (:mod:`datamodules.names`): class name -> class path."""
    return {cls.__name__: _class_path(cls) for cls in datamodule_classes().values()}


def method_path(name: str) -> str:
    """The class path of a method name (class name in any case) or the name itself when it is a
    dotted path; ``ValueError`` naming the valid names otherwise."""
    if "." in name:
        return name
    classes = method_classes()
    by_lower = {k.lower(): v for k, v in classes.items()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise ValueError(
        f"unknown method {name!r}; valid methods: {', '.join(sorted(classes))} "
        "(or the class path of any LightningModule, e.g. my_module.MyMethod)"
    )


def dataset_path(name: str) -> str:
    """The class path of a dataset name (class name in any case, or card name) or the name itself
    when it is a dotted path; ``ValueError`` naming the valid names otherwise."""
    if "." in name:
        return name
    registered = datamodule_classes()
    lookup = {cls.__name__.lower(): _class_path(cls) for cls in registered.values()}
    lookup.update({card_name: _class_path(cls) for card_name, cls in registered.items()})
    if name.lower() in lookup:
        return lookup[name.lower()]
    raise ValueError(
        f"unknown dataset {name!r}; valid datasets: "
        f"{', '.join(sorted(cls.__name__ for cls in registered.values()))} (or {', '.join(registered)})"
    )


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def expand_short_names(argv: list[str], keys: tuple[str, ...] = ("--model", "--data")) -> list[str]:
    """``argv`` with the value of each ``--model`` / ``--data`` option (``--model X`` or
    ``--model=X``) replaced by its class path when it is a short name; other values unchanged
    ``ValueError`` naming the valid names for a short name that is neither."""
    resolvers = {"--model": method_path, "--data": dataset_path}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if key in keys and eq and _short(value):
            out.append(f"{key}={resolvers[key](value)}")
        elif arg in keys and i + 1 < len(argv) and _short(argv[i + 1]):
            out += [arg, resolvers[arg](argv[i + 1])]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def _short(value: str) -> bool:
    return bool(value) and "." not in value and not value.startswith(("-", "{", "["))
