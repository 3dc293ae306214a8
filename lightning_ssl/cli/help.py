"""``lssl help NAME`` (and ``lssl fit --model NAME --help``): one method's or dataset's options,
with their types, defaults and the first lines of their docstrings, in well under 100 lines.

The class's own options come first, in full; the options it inherits (``**kwargs`` followed to the
parents, as jsonargparse does) follow with one line each. Types are printed as written in the
signature, so ``backbone: str | nn.Module`` does not list every ``nn.Module`` class.
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass

import pytorch_lightning as pl
from docstring_parser import parse as parse_docstring

from lightning_ssl.class_path import import_class
from lightning_ssl.cli.args import user_values
from lightning_ssl.config.errors import UsageError
from lightning_ssl.config.registry import dataset_path, method_path

WIDTH = 100
STOP = ("LightningModule", "LightningDataModule", "HyperparametersMixin", "Module", "object")


@dataclass
class Option:
    name: str
    annotation: str
    default: str
    doc: str
    owner: str


def help_request(args: list[str]) -> str | None:
    """The class path whose help ``args`` ask for (``--model X --help``, ``--model.help X``,
    ``--data X --help``, ``--data.help X``), or ``None`` for the parser's own help / no help."""
    for i, arg in enumerate(args[:-1]):
        if arg in ("--model.help", "--data.help"):
            return args[i + 1]
    if "--help" in args or "-h" in args:
        for key in ("--model", "--data"):
            if key in args[:-1]:
                return args[args.index(key) + 1]
    return None


def options_of(cls: type) -> list[Option]:
    """The ``__init__`` options of ``cls`` and, through ``**kwargs``, of its parents."""
    found: dict[str, Option] = {}
    for klass in cls.__mro__:
        if klass.__name__ in STOP:
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        docs = {p.arg_name: p.description or "" for p in parse_docstring(init.__doc__ or "").params}
        docs.update(
            {
                p.arg_name: p.description or ""
                for p in parse_docstring(klass.__doc__ or "").params
                if p.arg_name not in docs
            }
        )
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in found:
                continue
            annotation = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
            default = "required" if p.default is p.empty else repr(p.default)
            found[p.name] = Option(
                p.name,
                "" if p.annotation is p.empty else annotation,
                default,
                " ".join(docs.get(p.name, "").split()),
                klass.__name__,
            )
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(found.values())


def help_text(target: str) -> str:
    """The help of a method or dataset given by short name or class path."""
    path = _resolve(target)
    cls = import_class(path)
    kind = "data" if _is_datamodule(cls) else "model"
    summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    lines = [f"{cls.__name__} ({path})", *textwrap.wrap(summary, WIDTH)]
    card = getattr(cls, "card", None)
    if card is not None and getattr(card, "paper", None):
        lines += textwrap.wrap(f"paper: {card.paper}", WIDTH, subsequent_indent="  ")
    usage = (
        f"lssl fit --model SimCLR --data {cls.__name__} [--data.OPTION VALUE ...]"
        if kind == "data"
        else f"lssl fit --model {cls.__name__} --data DigitsLT [--model.OPTION VALUE ...]"
    )
    lines += ["", f"usage: {usage}", ""]
    options = options_of(cls)
    own = [o for o in options if o.owner == cls.__name__]
    inherited = [o for o in options if o.owner != cls.__name__]
    lines.append(f"options of {cls.__name__}:")
    for o in own:
        head = f"  --{kind}.{o.name} {o.annotation}".rstrip() + f"  (default: {o.default})"
        lines.append(head)
        lines += textwrap.wrap(o.doc, WIDTH, initial_indent="      ", subsequent_indent="      ")[:4]
    if inherited:
        lines += [
            "",
            *textwrap.wrap(
                f"inherited options ({', '.join(dict.fromkeys(o.owner for o in inherited))}; "
                f"lssl help {inherited[0].owner} for their full text):",
                WIDTH,
            ),
        ]
        for o in inherited:
            text = f"  --{kind}.{o.name} = {o.default}: {o.doc}"
            lines.append(text if len(text) <= WIDTH else text[: WIDTH - 3] + "...")
    views = getattr(cls, "views_needed", None)
    if views is not None and kind == "model":
        needed = views({}).data_options()
        if needed:
            lines += [
                "",
                "views (set on the datamodule for you): " + ", ".join(f"--data.{k} {v}" for k, v in needed.items()),
            ]
    lines += ["", "trainer options: lssl fit --help;  a dataset's options: lssl help DigitsLT"]
    return "\n".join(lines)


def print_help(target: str) -> None:
    with user_values():  # a class path that does not import: one line
        text = help_text(target)
    print(text)


def _is_datamodule(cls: type) -> bool:
    return issubclass(cls, pl.LightningDataModule)


def _resolve(target: str) -> str:
    if "." in target:
        return target
    bases = {
        "SSLMethod": "lightning_ssl.methods.base.SSLMethod",
        "ScheduledTemperature": "lightning_ssl.methods.temperature.ScheduledTemperature",
        "LongTailDataModule": "datamodules.base.LongTailDataModule",
    }
    if target in bases:
        return bases[target]
    try:
        return method_path(target)
    except ValueError:
        pass
    try:
        return dataset_path(target)
    except ValueError:
        raise UsageError(
            f"{target!r} is not a method or dataset name; try SimCLR, SwAV, MTTV, DigitsLT, "
            "CIFAR10LT or a class path such as my_module.MyMethod"
        ) from None
