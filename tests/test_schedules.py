"""Per-step schedules: first, last, warm-up and monotone values (DINO-style arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_ssl.schedules import cosine_schedule, momentum_schedule


def test_cosine_schedule_values() -> None:
    s = cosine_schedule(1.0, 0.0, total_steps=110, warmup_steps=10)
    assert len(s) == 110
    assert s[0] == 0.0 and s[5] == pytest.approx(0.5)
    assert s[10] == pytest.approx(1.0) and s[-1] == pytest.approx(0.0)
    assert np.all(np.diff(s[:11]) > 0) and np.all(np.diff(s[10:]) <= 0)
    # half-way through the decay the cosine is at the mid-point
    assert s[10 + 50] == pytest.approx(0.5 * (1 + np.cos(np.pi * 50 / 99)))


def test_momentum_schedule_byol() -> None:
    m = momentum_schedule(0.996, 1.0, 101)
    assert m[0] == pytest.approx(0.996) and m[-1] == pytest.approx(1.0)
    assert m[50] == pytest.approx(1 - 0.004 * (np.cos(np.pi * 50 / 100) + 1) / 2)
    assert np.all(np.diff(m) >= 0)


def test_bad_lengths() -> None:
    with pytest.raises(ValueError, match="total_steps=0"):
        cosine_schedule(1.0, 0.0, 0)
    with pytest.raises(ValueError, match="warmup_steps=20"):
        cosine_schedule(1.0, 0.0, 10, 20)
