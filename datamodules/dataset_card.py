"""The dataset card: what a number in a report was measured on (timm's default-config idea)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class DatasetCard:
    """Facts about a dataset, kept next to its datamodule and printed by ``lssl data card``."""

    name: str
    num_classes: int
    image_size: int  # native side length (or the load size of folder datasets)
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    group_rule: str  # "thirds" or "thresholds"
    protocol: str  # how the long-tailed pre-training set is built
    source: str  # where the files come from / how to get them
    reference: str = ""  # paper(s) defining the protocol

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
