"""A small vocabulary of tensor helpers, so that losses read like the papers' pseudocode."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Scale ``x`` to unit L2 norm along ``dim`` (a zero vector stays zero)."""
    return F.normalize(x, p=2.0, dim=dim, eps=1e-12)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32: half and bfloat16 are upcast, float32/float64 are kept.

    Losses divide cosine similarities by small temperatures (0.05-0.5), where bfloat16's three
    significant digits would shift the logits by several hundredths.
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def full_precision(device: torch.device) -> torch.autocast:
    """A context with autocast switched off on ``device``, so matmuls run in the inputs' dtype."""
    return torch.autocast(device_type=device.type, enabled=False)


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_embeddings(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every tensor is a ``B x D`` matrix of one common shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    for name, shape in shapes.items():
        if len(shape) != 2:
            raise ValueError(f"{name} must be a 2-D (batch x dim) tensor, got shape {shape}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"embeddings must have one common shape, got {shapes}")
