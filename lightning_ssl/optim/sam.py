"""SAM and adaptive SAM as two in-place steps around a second forward/backward pass.

Foret et al., "Sharpness-Aware Minimization", ICLR 2021, Eq. 2: ``eps = rho * g / ||g||``.
Kwon et al., "ASAM", ICML 2021, Eq. 9: ``eps = rho * T^2 g / ||T g||`` with ``T = |w|`` element-wise
(the variant rwSAM's code runs, docs/methods.md §9.2). The norm is taken jointly over all parameters.

Under fp16 mixed precision one overflowing gradient (inf/NaN) would make the perturbation write
NaN into the weights, which GradScaler's skipped step cannot undo. So, as GradScaler does for a
plain step, a step whose first-pass gradients are not all finite is skipped: no perturbation, no
update (:func:`grads_finite`, :func:`skip_nonfinite_step`); the caller counts it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

WEIGHTS = ("none", "kde", "label_exp")


@dataclass
class SAMConfig:
    """Options of the SAM step available on every method (``--model.sam.rho 0.05``).

    Args:
        rho: neighbourhood radius. SAM's default is 0.05 (Foret et al. §3); ASAM needs a larger
            one because it scales by |w|: rwSAM's CIFAR command uses 7.0 with ``adaptive``
            (docs/methods.md §9.5) and its ImageNet command 2.0.
        adaptive: ASAM (Kwon et al. 2021), as rwSAM's code (on by default there).
        weights: sample weights of the perturbation (rwSAM, Liu et al. ICLR 2022 §4): ``none``
            (plain SAM), ``kde`` (label-free density weights, the paper's method) or
            ``label_exp`` (the official code's ``label_base ** target``: USES LABELS, for
            comparison with its released numbers only).
        kde_alpha: exponent of ``density ** -alpha`` (paper silent; 0.5, our choice in [0.5, 1]).
        kde_bandwidth: Gaussian kernel bandwidth on L2-normalised features; ``None`` takes the
            median heuristic (median pairwise distance).
        refresh_every: re-estimate the KDE weights every this many epochs over a feature bank
            of the pre-training set (uniform weights until the first refresh; paper silent,
            the official code reads a precomputed file).
        label_base: base of the ``label_exp`` weights (1.2 in the official CIFAR script).
    """

    rho: float = 0.05
    adaptive: bool = False
    weights: str = "none"
    kde_alpha: float = 0.5
    kde_bandwidth: float | None = None
    refresh_every: int = 10
    label_base: float = 1.2

    def __post_init__(self) -> None:
        if not 0 < self.rho < math.inf:
            raise ValueError(f"sam.rho={self.rho} must be > 0 and finite; pass e.g. --model.sam.rho 0.05")
        for name in ("kde_alpha", "label_base"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"sam.{name}={getattr(self, name)} must be > 0 and finite")
        if self.kde_bandwidth is not None and not 0 < self.kde_bandwidth < math.inf:
            raise ValueError(f"sam.kde_bandwidth={self.kde_bandwidth} must be > 0, or unset for the median heuristic")
        if self.weights not in WEIGHTS:
            raise ValueError(f"unknown sam.weights {self.weights!r}; valid: {', '.join(WEIGHTS)}")
        if self.refresh_every < 1:
            raise ValueError(f"sam.refresh_every={self.refresh_every} must be >= 1")


@torch.no_grad()
def sam_perturb(
    params: Sequence[Tensor], rho: float, adaptive: bool = False, eps: float = 1e-12
) -> list[Tensor | None]:
    """Move every parameter with a gradient to ``w + eps(w)`` in place; return the ``eps``s."""
    grads = [(p, p.grad) for p in params if p.grad is not None]
    if not grads:
        return [None] * len(params)
    scaled = [(p.abs() * g) if adaptive else g for p, g in grads]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s.float()) for s in scaled]))
    scale = rho / (norm + eps)
    out: list[Tensor | None] = []
    it = iter(scaled)
    for p in params:
        if p.grad is None:
            out.append(None)
            continue
        s = next(it)
        e = (p.abs() * s if adaptive else s) * scale.to(p.dtype)
        p.add_(e)
        out.append(e)
    return out


@torch.no_grad()
def sam_restore(params: Sequence[Tensor], perturbations: Sequence[Tensor | None]) -> None:
    """Undo :func:`sam_perturb`."""
    for p, e in zip(params, perturbations):
        if e is not None:
            p.sub_(e)


@torch.no_grad()
def grads_finite(params: Sequence[Tensor]) -> bool:
    """Whether every gradient of ``params`` is finite (one host synchronisation)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def skip_nonfinite_step(optimizer: Any, scaler: Any | None = None, scheduler: Any | None = None) -> None:
    """Skip a SAM step whose gradients are not finite, as GradScaler skips a plain one.

    With a GradScaler (``16-mixed``) the step is still handed to ``optimizer.step()``: the scaler
    finds the inf, skips the update and lowers its scale (without that the scale never drops and
    every later step overflows too); the step counts, as in automatic optimisation, so the lr
    ``scheduler`` steps. Without a scaler the gradients are dropped and nothing steps.
    """
    if scaler is not None:
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    optimizer.zero_grad()
