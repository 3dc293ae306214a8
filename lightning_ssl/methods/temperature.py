"""Temperature schedules (TS) for every InfoNCE method: Kukleva, Böhle, Schiele, Kuehne, Rupprecht,
"Temperature Schedules for Self-Supervised Contrastive Methods on Long-Tail Data", ICLR 2023
(docs/methods.md §14).

``temperature_schedule`` is one option, declared once here and inherited by SimCLR, MoCo v2,
MoCLR, MTTV, SDCLR and BCL through :class:`ScheduledTemperature`; the method asks
:meth:`ScheduledTemperature.current_temperature` for the value of the current step instead of
reading its constant ``temperature``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from lightning_ssl.schedules import temperature_schedule


@dataclass
class TemperatureSchedule:
    """TS's cosine temperature (official ``train_simCLR.py``, ``--adj_tau cos``; docs/methods.md §14).

    ``tau(e) = tau_min + (tau_max - tau_min) (1 + cos(2 pi e / period)) / 2`` at the 1-based epoch
    ``e``, constant within an epoch, the same for the positive and every negative.

    Args:
        tau_min: the lowest temperature (official argparse default 0.1, used by the README's commands).
        tau_max: the highest temperature, reached at the start of every period (the README's
            commands pass 1.0; the argparse default, 0.5, is not what the paper ran).
        period_epochs: epochs of one period, twice the official ``t_max`` = 200 (400 epochs: 5
            periods in their 2000-epoch CIFAR runs, 2 in the 800-epoch ImageNet-100 run). A value
            in (0, 1) is a fraction of the run's epochs (0.2 = 400 of 2000), for short runs.
    """

    tau_min: float = 0.1
    tau_max: float = 1.0
    period_epochs: float = 400.0

    def __post_init__(self) -> None:
        if not 0 < self.tau_min <= self.tau_max:
            raise ValueError(
                f"temperature_schedule: need 0 < tau_min <= tau_max, got tau_min={self.tau_min}, tau_max={self.tau_max}"
            )
        if not self.period_epochs > 0:
            raise ValueError(
                f"temperature_schedule.period_epochs={self.period_epochs} must be > 0 (epochs, or a "
                "fraction of the run in (0, 1))"
            )


def record_hparam(module: Any, name: str, value: Any) -> None:
    """Set ``name`` in a module's saved hyper-parameters (and their logged initial copy)."""
    module.hparams[name] = value
    initial = getattr(module, "_hparams_initial", None)
    if initial is not None:
        initial[name] = value


class ScheduledTemperature:
    """Mixin of the InfoNCE methods: the ``temperature_schedule`` option and the per-step value.

    Placed before :class:`~lightning_ssl.methods.base.SSLMethod` in a method's bases; its
    ``__init__`` takes the one option and passes the rest on.
    """

    def __init__(self, temperature_schedule: TemperatureSchedule | None = None, **kwargs: Any) -> None:
        """
        Args:
            temperature_schedule: TS's cosine temperature between ``tau_min`` and ``tau_max``
                (Kukleva et al. ICLR 2023; official: 0.1 -> 1.0, period 400 epochs), replacing the
                constant ``temperature``; ``None`` keeps the constant. Logged as
                ``train/temperature``. E.g. ``--model.temperature_schedule.period_epochs 0.2``.
            **kwargs: the method's other options.
        """
        if isinstance(temperature_schedule, dict):  # from a checkpoint's saved hyper-parameters
            temperature_schedule = TemperatureSchedule(**temperature_schedule)
        super().__init__(**kwargs)
        self.temperature_config = temperature_schedule
        self.temperature_values: np.ndarray | None = None
        if temperature_schedule is not None:  # a plain dict: checkpoints load with weights_only=True
            record_hparam(self, "temperature_schedule", asdict(temperature_schedule))

    def on_fit_start(self) -> None:
        super().on_fit_start()  # type: ignore[misc]
        cfg = self.temperature_config
        if cfg is None:
            return
        steps_per_epoch = self.steps_per_epoch()  # type: ignore[attr-defined]
        total = self.total_steps()  # type: ignore[attr-defined]
        period = cfg.period_epochs
        if 0 < period < 1:
            period = period * total / steps_per_epoch
        self.temperature_values = temperature_schedule(cfg.tau_min, cfg.tau_max, period, steps_per_epoch, total)

    def current_temperature(self) -> float:
        """The temperature of this step: the constant ``temperature``, or the schedule's value at
        the current optimiser step (``tau_max``, the value at epoch 0, outside a fit)."""
        cfg = self.temperature_config
        if cfg is None:
            return float(self.hparams.temperature)  # type: ignore[attr-defined]
        values = self.temperature_values
        if values is None or self._trainer is None:  # type: ignore[attr-defined]
            return float(cfg.tau_max)
        step = self.trainer.global_step  # type: ignore[attr-defined]
        return float(values[min(step, len(values) - 1)])

    def temperature_logs(self, temperature: float) -> dict[str, Any]:
        """``{"temperature": value}`` when a schedule runs (for ``train/temperature``), else ``{}``."""
        if self.temperature_config is None:
            return {}
        return {"temperature": torch.tensor(temperature)}
