"""The offline protocol of the long-tailed SSL papers: frozen backbone, features extracted once.

For each probe set the datamodule defines (``full`` = the balanced training set; few-shot sets
such as SDCLR's ``1pct`` or BCL's ``100shot``) a linear classifier is trained on the features and
tested on the test set; a weighted kNN uses the ``full`` probe set as its bank (docs/protocols.md §3, §6).
Every result carries overall, per-class, many/medium/few accuracy and their population std,
named by probe and group rule.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_ssl.eval.features import extract_features
from lightning_ssl.eval.knn import knn_predict
from lightning_ssl.eval.linear import DEFAULT_PROBE_RECIPE, fit_linear_probe, make_recipe, predict
from lightning_ssl.eval.metrics import group_report, per_class_accuracy
from lightning_ssl.eval.ts_probes import ts_probes

NAMED_PROBES = ("ts",)  # TS's kNN@1/@10 and few-shot / long-tailed SVMs on the pre-training set


def check_probe_options(
    available: list[str],
    probe_sets: list[str],
    linear_recipe: str,
    linear_options: dict[str, Any],
    knn_k: int,
    knn_temperature: float,
    knn_bank: str,
) -> None:
    """The options of :func:`evaluate_frozen`, checked before any feature is extracted: a one-line
    ``ValueError`` naming the option, the value, the valid range and the fix."""
    unknown = sorted(set(probe_sets) - set(available))
    if unknown:
        raise ValueError(f"unknown probe set(s) {unknown}; this datamodule has {available}")
    recipe = make_recipe(linear_recipe, **linear_options)  # a bad recipe or option, by name
    if recipe.epochs is not None and recipe.milestones and any(not 0 < m < recipe.epochs for m in recipe.milestones):
        raise ValueError(
            f"linear probe recipe {recipe.name!r} drops its lr at epochs {list(recipe.milestones)}, not all "
            f"within its {recipe.epochs} epochs: give it more than {max(recipe.milestones)} epochs "
            "(--linear_epochs) or other milestones"
        )
    if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
        raise ValueError(f"knn_k={knn_k!r} must be an integer >= 1 (neighbours of the vote); pass e.g. 200")
    if not (isinstance(knn_temperature, (int, float)) and 0 < knn_temperature < math.inf):
        raise ValueError(f"knn_temperature={knn_temperature!r} must be > 0 and finite; pass e.g. 0.1")
    if available and knn_bank not in available:
        raise ValueError(
            f"knn_bank={knn_bank!r} is not a probe set of this datamodule ({', '.join(available)}); "
            f"pass one of them, e.g. {available[0]!r}"
        )


def evaluate_frozen(
    model: nn.Module,
    datamodule: Any,
    *,
    probe_sets: list[str] | None = None,
    linear_recipe: str = DEFAULT_PROBE_RECIPE,
    linear_options: dict[str, Any] | None = None,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    knn_bank: str = "full",
    named_probes: list[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Linear probes and kNN on frozen features of ``model`` (a method's ``forward``).

    Args:
        model: maps images to backbone features.
        datamodule: provides ``probe_dataloader(name)``, ``probe_sets``, ``test_dataloader()``,
            ``num_classes``, ``class_groups``, ``group_rule`` (any datamodule of the suite: the
            one pre-trained on, or another one for out-of-domain transfer).
        probe_sets: names of the probe sets to train linear heads on (default: all).
        linear_recipe: the probe recipe (docs/protocols.md §5): ``lbfgs`` (default: standardised
            features, trained to convergence), or the papers' ``mttv``, ``rwsam``, ``sdclr``.
        linear_options: overrides of the recipe's fields (``steps``, ``epochs``, ``lr``, ...).
        knn_k, knn_temperature: kNN vote (k=200, T=0.1: InstDisc / MTTV).
        knn_bank: the probe set used as the kNN memory bank (the full balanced set by default).
        named_probes: the papers' own probes besides these: ``ts`` (TS's kNN@1 / kNN@10 and few-shot
            and long-tailed linear SVMs with the long-tailed pre-training set as the memory,
            :mod:`lightning_ssl.eval.ts_probes`, docs/methods.md §14.4).
        seed: seed of the probe's mini-batch order.

    Returns:
        ``{"metrics": {name: value}, "per_class": {probe: [acc per class]}, "group_rule": ...}``.
    """
    datamodule.setup("fit")
    num_classes = int(datamodule.num_classes)
    groups = {k: np.asarray(v).tolist() for k, v in datamodule.class_groups.items()}
    rule = datamodule.group_rule
    if device is None:
        device = next(model.parameters()).device
    model = model.to(device)
    names = list(probe_sets or datamodule.probe_sets)
    options = dict(linear_options or {})
    check_probe_options(datamodule.probe_sets, names, linear_recipe, options, knn_k, knn_temperature, knn_bank)
    test_x, test_y, _ = extract_features(model, datamodule.test_dataloader(), device=device, progress=progress)
    bad = sorted(set(named_probes or []) - set(NAMED_PROBES))
    if bad:
        raise ValueError(f"unknown named probe(s) {bad}; valid: {', '.join(NAMED_PROBES)}")
    metrics: dict[str, float] = {}
    probe_runs: dict[str, dict[str, Any]] = {}
    per_class: dict[str, list[float]] = {}
    bank = None
    for name in names:
        x, y, _ = extract_features(model, datamodule.probe_dataloader(name), device=device, progress=progress)
        if name == knn_bank:
            bank = (x, y)
        layer, info = fit_linear_probe(x, y, num_classes, linear_recipe, seed=seed, device=device, **options)
        pred = predict(layer, test_x)
        prefix = f"linear_{name}"
        probe_runs[prefix] = {**info.as_dict(), "train_size": int(x.shape[0]), "feature_dim": int(x.shape[1])}
        metrics.update(group_report(pred, test_y, num_classes, groups, rule, prefix))
        per_class[prefix] = per_class_accuracy(pred, test_y, num_classes).tolist()
    if bank is None and knn_bank in datamodule.probe_sets:
        x, y, _ = extract_features(model, datamodule.probe_dataloader(knn_bank), device=device, progress=progress)
        bank = (x, y)
    knn_record: dict[str, Any] = {"k": knn_k, "temperature": knn_temperature, "bank": knn_bank}
    if bank is not None:
        k = min(knn_k, bank[0].shape[0])
        if k < knn_k:  # the record says what ran; the metric's name too (knn_k{k})
            warnings.warn(
                f"kNN: knn_k={knn_k} is more than the {bank[0].shape[0]} images of the bank "
                f"{knn_bank!r}: voting over all of them (k={k})",
                stacklevel=2,
            )
            knn_record.update(k=k, k_requested=knn_k)
        pred = knn_predict(test_x, bank[0], bank[1], num_classes, k=k, temperature=knn_temperature)
        prefix = f"knn_k{k}_t{knn_temperature:g}"
        metrics.update(group_report(pred, test_y, num_classes, groups, rule, prefix))
        per_class[prefix] = per_class_accuracy(pred, test_y, num_classes).tolist()
    if "ts" in (named_probes or []):
        ts_metrics, ts_per_class = ts_probes(
            model, datamodule, test_x, test_y, num_classes, groups, rule, device=device, progress=progress
        )
        metrics.update(ts_metrics)
        per_class.update(ts_per_class)
    return {
        "metrics": metrics,
        "per_class": per_class,
        "group_rule": rule,
        "groups": groups,
        "class_counts": np.asarray(datamodule.class_counts).tolist(),
        "num_classes": num_classes,
        "probe_sets": names,
        "linear": {"recipe": linear_recipe, "options": options, "runs": probe_runs},
        "knn": knn_record,
        "named_probes": list(named_probes or []),
    }
