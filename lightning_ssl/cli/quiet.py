"""Silence the noise other libraries print on every run (``lssl sweep``, ``lssl bench``, ``lssl fit``).

A run repeats, each time: Lightning's info lines ("GPU available: ...", "Seed set to 0", "`Trainer.fit`
stopped", the litlogger tip), hints that do not apply to these runs (``log_every_n_steps`` larger than
a small dataset's epoch, few DataLoader workers for in-memory data, "No seed found"), LightningCLI's
warning about ``args`` given from Python, a ``LeafSpec`` deprecation raised inside Lightning itself,
and faiss's loader INFO lines. :func:`silence` turns exactly these off (logger levels and message
filters); warnings of this suite (a corrupted checkpoint, a skipped folder, ...) and every error are
kept. ``--verbose`` skips the call and brings everything back.
"""

from __future__ import annotations

import logging
import warnings

# loggers whose INFO lines are per-run chatter; WARNING and above still show
NOISY_LOGGERS: tuple[str, ...] = (
    "pytorch_lightning",
    "lightning.pytorch",
    "lightning_fabric",
    "lightning.fabric",
    "faiss",
    "faiss.loader",
)

# (message regex, category) of the warnings that each run repeats and that do not concern the user
NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r".*LightningCLI's args parameter is intended to run from within Python", UserWarning),
    (r"No seed found, seed set to", UserWarning),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
    (r"The number of training batches .* is smaller than the logging interval", Warning),
    (r".*does not have many workers which may be a bottleneck", Warning),
    (r"GPU available but not used", Warning),
    (r"Experiment logs directory .* exists and is not empty", UserWarning),
    (r"Checkpoint directory .* exists and is not empty", UserWarning),
)


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A warning as one line (``UserWarning: ...``), without the file, line number and source line
    Python adds; ``--verbose`` keeps Python's format."""
    return f"{category.__name__}: {' '.join(str(message).split())}\n"


def silence() -> None:
    """Raise the noisy loggers to WARNING, ignore the warnings of :data:`NOISY_WARNINGS` and print
    the others on one line each (process-wide: call it once at the start of a command, not inside
    library code)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    warnings.formatwarning = one_line_warning


def configure(verbose: bool) -> None:
    """The command-line switch: :func:`silence` unless ``verbose``."""
    if not verbose:
        silence()
