"""A class from its dotted path: the one place the suite imports a user's class by name.

Kept apart from :mod:`lightning_ssl.config.registry` (which knows the datasets) so that methods and
pipelines can use it without importing ``datamodules`` (docs/design.md §2)."""

from __future__ import annotations

import importlib


def import_class(path: str) -> type:
    """The class at ``module.Name``; ``ValueError`` naming the path when it does not import."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"cannot import {path!r} ({err}); give module.ClassName importable from the "
            "working directory or an installed package"
        ) from None
