"""LightningDataModules for long-tailed, imbalanced and uncurated image data.

This package imports nothing from ``lightning_ssl``. Datamodules are resolved lazily by name so
that ``import datamodules`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from datamodules.groups import GROUP_RULES, class_groups, group_rule_name
from datamodules.profiles import PROFILES, long_tail_indices, profile_counts

# name used by `lssl data stats NAME` -> "module:Class"
REGISTRY: dict[str, str] = {
    "digits_lt": "datamodules.digits:DigitsLT",
    "cifar10_lt": "datamodules.cifar:CIFAR10LT",
    "cifar100_lt": "datamodules.cifar:CIFAR100LT",
    "fashion_mnist_lt": "datamodules.fashion_mnist:FashionMNISTLT",
    "imagenet_lt": "datamodules.list_files:ImageNetLT",
    "imagenet100_lt": "datamodules.list_files:ImageNet100LT",
    "places_lt": "datamodules.list_files:PlacesLT",
    "inaturalist2018": "datamodules.list_files:INaturalist2018",
    "image_folder_lt": "datamodules.image_folder:ImageFolderLT",
    "unlabeled_folder": "datamodules.image_folder:UnlabeledFolder",
    "semi_synthetic_halves": "datamodules.semi_synthetic:SemiSyntheticHalves",
}


def resolve(name: str) -> type:
    """The datamodule class registered as ``name`` (or its class name, e.g. ``CIFAR10LT``)."""
    target = REGISTRY.get(name)
    if target is None:
        by_class = {v.split(":")[1]: v for v in REGISTRY.values()}
        target = by_class.get(name)
    if target is None:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(REGISTRY)}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def __getattr__(attr: str) -> Any:
    """``from datamodules import CIFAR10LT`` works without importing every module up front."""
    for target in REGISTRY.values():
        module, cls = target.split(":")
        if cls == attr:
            return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module 'datamodules' has no attribute {attr!r}")


__all__ = ["GROUP_RULES", "PROFILES", "REGISTRY", "class_groups", "group_rule_name", "long_tail_indices",
           "profile_counts", "resolve"]
