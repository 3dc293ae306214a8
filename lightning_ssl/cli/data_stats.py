"""``lssl data stats NAME`` and ``lssl data card NAME``: what a long-tailed dataset looks like."""

from __future__ import annotations

import difflib
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from jsonargparse import ArgumentParser
from rich.console import Console
from rich.table import Table

from datamodules.names import datamodule_class, datamodule_classes
from lightning_ssl.cli.args import parse_jsonargparse, user_values
from lightning_ssl.config.errors import UsageError

USAGE = "lssl data stats NAME [--data.OPTION VALUE ...] [--plot FILE.png]  |  lssl data card NAME"


def resolve(name: str) -> type:
    """The datamodule class of ``name``; one line naming the closest name and all of them otherwise."""
    try:
        return datamodule_class(name)
    except ValueError:
        names = list(datamodule_classes())
        close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(f"unknown dataset {name!r}; {hint}datasets: {', '.join(names)}") from None


def build_datamodule(name: str, argv: list[str]) -> Any:
    """Instantiate the datamodule ``name`` from ``--key value`` options of its ``__init__``."""
    cls = resolve(name)
    parser = ArgumentParser(
        prog=f"lssl data stats {name}", description=(cls.__doc__ or "").split("\n")[0], exit_on_error=False
    )
    parser.add_class_arguments(cls, "data", fail_untyped=False)
    parser.add_argument("--plot", type=str | None, default=None, help="write a class-count histogram PNG")
    cfg = parse_jsonargparse(parser, argv)
    with user_values():
        init = parser.instantiate_classes(cfg)
    return init.data, cfg.plot


def stats_table(stats: dict[str, Any], groups: dict[str, np.ndarray]) -> Table:
    counts = stats["class_counts"]
    group_of = {int(c): g for g, cs in groups.items() for c in cs}
    table = Table(title=f"{stats['name']}: per-class counts, head to tail")
    for col in ("rank", "class", "images", "group"):
        table.add_column(col, justify="right" if col != "group" else "left")
    order = np.lexsort((np.arange(counts.size), -counts))
    for rank, c in enumerate(order):
        table.add_row(str(rank), str(int(c)), str(int(counts[c])), group_of.get(int(c), "-"))
    return table


def summary_lines(stats: dict[str, Any]) -> list[str]:
    lines = [
        f"pre-training set: {stats['pretrain_size']} images, {stats['num_classes']} classes"
        + (f" ({stats['unlabeled']} unlabeled)" if stats["unlabeled"] else ""),
        f"imbalance ratio n_min/n_max: {stats['imbalance_ratio']:.4g}"
        + (f" (rho = {1 / stats['imbalance_ratio']:.4g})" if stats["imbalance_ratio"] > 0 else ""),
        f"groups ({stats['group_rule']}): "
        + ", ".join(f"{g} {v['classes']} classes / {v['images']} images" for g, v in stats["groups"].items()),
        "probe sets: " + (", ".join(f"{k} {v}" for k, v in stats["probe_sizes"].items()) or "none"),
        f"test set: {stats['test_size']} images",
    ]
    return lines


def plot_counts(stats: dict[str, Any], groups: dict[str, np.ndarray], path: str) -> None:
    """Bar chart of class counts, head to tail, coloured by group."""
    matplotlib.use("Agg")

    counts = stats["class_counts"]
    order = np.lexsort((np.arange(counts.size), -counts))
    colours = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
    group_of = {int(c): g for g, cs in groups.items() for c in cs}
    fig, ax = plt.subplots(figsize=(max(6, counts.size * 0.05 + 4), 3.5))
    ax.bar(range(counts.size), counts[order], color=[colours.get(group_of.get(int(c), ""), "grey") for c in order])
    for g, col in colours.items():
        ax.bar([], [], color=col, label=f"{g} ({len(groups.get(g, []))})")
    ax.set_xlabel("class rank (head to tail)")
    ax.set_ylabel("images")
    if counts.max() / max(counts[counts > 0].min(), 1) > 20:
        ax.set_yscale("log")
    ax.set_title(f"{stats['name']} — groups by {stats['group_rule']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=png_metadata(path))
    plt.close(fig)


def png_metadata(path: str) -> dict[str, None]:
    """Matplotlib's metadata keys that change between runs or versions, left out, so that the same
    counts give the same bytes (``Software`` for PNG, ``CreationDate`` for PDF / SVG too)."""
    suffix = str(path).rsplit(".", 1)[-1].lower()
    keys = {
        "png": ("Software",),
        "pdf": ("Creator", "Producer", "CreationDate"),
        "svg": ("Creator", "Date"),
        "eps": ("Creator", "CreationDate"),
        "ps": ("Creator", "CreationDate"),
    }
    return dict.fromkeys(keys.get(suffix, ()))


def run(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: {USAGE}\ndatasets: {', '.join(datamodule_classes())}")
        return 0
    if not argv or argv[0] not in ("stats", "card"):
        given = f"{argv[0]!r} is not a data command" if argv else "no data command given"
        raise UsageError(f"{given}; usage: {USAGE}")
    if len(argv) < 2 or argv[1].startswith("-"):
        if len(argv) > 1 and argv[1] in ("-h", "--help"):
            print(f"usage: {USAGE}\ndatasets: {', '.join(datamodule_classes())}")
            return 0
        raise UsageError(
            f"data {argv[0]}: no dataset named; usage: {USAGE}; datasets: {', '.join(datamodule_classes())}"
        )
    command, name, rest = argv[0], argv[1], argv[2:]
    console = Console()
    if command == "card":
        if rest:
            raise UsageError(f"data card takes only a dataset name, got {' '.join(rest)!r}; usage: {USAGE}")
        card = resolve(name).card
        for key, value in card.as_dict().items():
            console.print(f"[bold]{key}[/bold]: {value}")
        return 0
    dm, plot = build_datamodule(name, rest)
    stats = dm.stats()
    groups = dm.class_groups
    console.print(stats_table(stats, groups))
    for line in summary_lines(stats):
        console.print(line, soft_wrap=True)
    if plot:
        plot_counts(stats, groups, plot)
        console.print(f"histogram written to {plot}")
    return 0
