"""LightningDataModules for long-tailed, imbalanced and uncurated image data.

This package imports nothing from ``lightning_ssl`` (docs/design.md §2). Importing it loads only
numpy: the datamodules are in their own modules, and :mod:`datamodules.names` finds them by name.
"""

from __future__ import annotations

from datamodules.groups import GROUP_RULES, class_groups, group_rule_name
from datamodules.profiles import PROFILES, long_tail_indices, profile_counts

__all__ = ["GROUP_RULES", "PROFILES", "class_groups", "group_rule_name", "long_tail_indices", "profile_counts"]
