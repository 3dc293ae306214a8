"""Per-class accuracy figures in TensorBoard (the W&B charts of :mod:`lightning_ssl.loggers`, as
images): after each validation epoch, for each probe callback's latest per-class accuracy, a bar
chart by class (head to tail, coloured by many/medium/few) and accuracy against the class's
pre-training count (log scale)."""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

GROUP_COLOURS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}


def per_class_figure(accuracy: np.ndarray, counts: np.ndarray, groups: dict[str, Any], title: str) -> Any:
    """A matplotlib figure: per-class accuracy (classes head to tail) and accuracy vs class count."""
    matplotlib.use("Agg")

    accuracy = np.asarray(accuracy, dtype=float)
    counts = np.asarray(counts, dtype=float)
    if counts.size != accuracy.size:
        counts = np.zeros_like(accuracy)
    group_of = {int(c): g for g, members in groups.items() for c in np.asarray(members).tolist()}
    colours = [GROUP_COLOURS.get(group_of.get(c, ""), "grey") for c in range(accuracy.size)]
    order = np.lexsort((np.arange(accuracy.size), -counts))
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(10, 3.5))
    bars.bar(range(accuracy.size), accuracy[order], color=[colours[c] for c in order])
    bars.set(xlabel="class rank (head to tail)", ylabel="accuracy", ylim=(0, 1), title="per-class accuracy")
    scatter.scatter(np.maximum(counts, 1), accuracy, c=colours, s=18)
    scatter.set(
        xscale="log",
        xlabel="pre-training images of the class",
        ylabel="accuracy",
        ylim=(0, 1),
        title="accuracy vs class frequency",
    )
    for group, colour in GROUP_COLOURS.items():
        if group in groups:
            bars.bar([], [], color=colour, label=group)
    if groups:
        bars.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class TensorBoardPerClassCharts(pl.Callback):
    """Adds ``{probe}/per_class`` figures to every TensorBoard logger after each validation epoch
    (rank 0; nothing without a TensorBoard logger). Many / medium / few accuracies are already
    scalars, logged by the probes."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # isinstance: `lssl fit` logs with ResumableTensorBoardLogger, a subclass
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or trainer.sanity_checking or not trainer.is_global_zero:
            return

        dm = trainer.datamodule
        counts = np.asarray(getattr(dm, "class_counts", []))
        groups = dict(getattr(dm, "class_groups", {}) or {})
        for callback in trainer.callbacks:
            for probe, accuracy in getattr(callback, "last_per_class", {}).items():
                fig = per_class_figure(np.asarray(accuracy), counts, groups, f"{probe} (step {trainer.global_step})")
                for logger in loggers:
                    logger.experiment.add_figure(
                        f"{probe}/per_class", fig, global_step=trainer.global_step, close=False
                    )
                plt.close(fig)
