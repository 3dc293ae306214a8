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


def cosine_temperature(epoch: float, tau_min: float, tau_max: float, half_period: float) -> float:
    """TS's temperature at ``epoch`` (Kukleva et al. ICLR 2023; official ``train_simCLR.py``,
    ``--adj_tau cos``; docs/methods.md §14): ``tau_min + (tau_max - tau_min) (1 + cos(pi e / t_max)) / 2``
    with ``t_max = half_period``. It starts at ``tau_max``, falls to ``tau_min`` at ``e = t_max``
    and is back at ``tau_max`` after one period ``2 t_max``."""
    return tau_min + 0.5 * (tau_max - tau_min) * (1.0 + float(np.cos(np.pi * epoch / half_period)))


def temperature_schedule(
    tau_min: float, tau_max: float, period_epochs: float, steps_per_epoch: int, total_steps: int
) -> np.ndarray:
    """TS's cosine temperature as a per-step array: step ``k`` is in the 1-based epoch
    ``e = k // steps_per_epoch + 1`` and gets :func:`cosine_temperature` of ``e`` (constant within
    an epoch; the official loop counts epochs from 1), with ``t_max = period_epochs / 2``."""
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError(f"total_steps={total_steps} and steps_per_epoch={steps_per_epoch} must be >= 1")
    if not period_epochs > 0:
        raise ValueError(f"period_epochs={period_epochs} must be > 0")
    epochs = np.arange(total_steps) // steps_per_epoch + 1
    return np.array([cosine_temperature(float(e), tau_min, tau_max, period_epochs / 2.0) for e in epochs])
