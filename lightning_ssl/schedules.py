"""Schedules as per-step arrays, computed once (DINO's ``cosine_scheduler``, Caron et al. 2021).

Resuming is then exact (the value at step ``k`` is ``schedule[k]``), and tests can check the first,
last and warm-up values. solo-learn computed its momentum on the fly and broke it twice
(its issues #248, #286).
"""

from __future__ import annotations

import numpy as np


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` to ``base`` over ``warmup_steps`` steps, then a
    half-cosine from ``base`` to ``final`` (SGDR, Loshchilov & Hutter 2017; SimCLR App. B.1)."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}]")
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False)
    decay_steps = total_steps - warmup_steps
    k = np.arange(decay_steps)
    denom = max(decay_steps - 1, 1)
    decay = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * k / denom))
    return np.concatenate([warmup, decay]).astype(np.float64)


def momentum_schedule(base: float, final: float, total_steps: int) -> np.ndarray:
    """BYOL's EMA momentum (Grill et al. 2020 §3.2): ``tau_k = final - (final - base) *
    (cos(pi k / K) + 1) / 2``, rising from ``base`` (e.g. 0.996) to ``final`` (1.0)."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    k = np.arange(total_steps)
    return final - (final - base) * (np.cos(np.pi * k / max(total_steps - 1, 1)) + 1.0) / 2.0
