"""UOTA (Wang, Lin, Zou, Pan, Yao, Mei; NeurIPS 2021): a base method whose per-view losses are
weighted by unsupervised outlier scores of the views (docs/methods.md §7).

``UOTA(base="swav")`` (the paper's released setting) returns a :class:`UOTASwAV`;
``base="simclr"`` / ``"mocov2"`` return :class:`UOTASimCLR` / :class:`UOTAMoCoV2`. Each is the base
class unchanged plus a :class:`~lightning_ssl.weights.uota.UOTAWeighter` in ``loss_weighters``
(the base's reduction applies it) and the optional learning-rate boost of the official run.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.mocov2 import MoCoV2
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.methods.swav import SwAV
from lightning_ssl.weights.uota import UOTAWeighter

BASES = ("swav", "simclr", "mocov2")

_CARD = dict(
    paper="Wang et al., Improving Self-supervised Learning with Automated Unsupervised Outlier "
    "Arbitration, NeurIPS 2021",
    defaults_from="official code (src/uota.py, main_uota.py; docs/methods.md §7.2-7.4): tau_u=350, "
    "start at epoch 100 of 200, eps=1e-8, centre = mean of the two 224 crops",
)


def _uota_class(base: str) -> type[UOTA]:
    classes = {"swav": UOTASwAV, "simclr": UOTASimCLR, "mocov2": UOTAMoCoV2}
    if base not in classes:
        raise ValueError(f"unknown UOTA base {base!r}; valid: {', '.join(BASES)}")
    return classes[base]


class _ChooseBase(type(SSLMethod)):  # type: ignore[misc]
    """Metaclass of :class:`UOTA`: ``UOTA(base=...)`` builds the class :meth:`UOTA.concrete_class` names.
    (Not ``__new__``, whose signature would hide ``__init__``'s options from LightningCLI.)"""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        chosen = cls.concrete_class(kwargs)
        return super().__call__(*args, **kwargs) if chosen is cls else chosen(*args, **kwargs)


def _is_fraction(value: float) -> bool:
    return isinstance(value, float) and 0 < value < 1


def check_start_epoch(value: int | float) -> None:
    """An epoch (an integer >= 0, or an integral float) or a fraction of the run in (0, 1)."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and value >= 0
        and (float(value).is_integer() or _is_fraction(value))
    )
    if not ok:
        raise ValueError(
            f"uota_start_epoch={value!r}: give an epoch (an integer >= 0) or a fraction of "
            "max_epochs in (0, 1), e.g. 0.5 for the paper's half-way"
        )


class UOTA(SSLMethod, metaclass=_ChooseBase):
    """UOTA on a base method chosen by ``base``; constructing ``UOTA`` gives the concrete subclass.

    From the command line, ``--model UOTA --model.base simclr`` accepts the UOTA and
    :class:`SSLMethod` options; to also set the base method's own options (SwAV's prototypes,
    SimCLR's temperature, ...) select the concrete class: ``--model UOTASwAV``, ``UOTASimCLR``
    or ``UOTAMoCoV2``.

    The weights need several views per image: with two views (SimCLR, MoCo v2 symmetric, SwAV
    without small crops) both views of an image get equal weights (docs/methods.md §7.5) and a warning
    is issued; the paper's setting is SwAV multi-crop 2 x 224 + 6 x 96.
    """

    card = MethodCard(name="UOTA", **_CARD)

    @classmethod
    def concrete_class(cls, options: Mapping[str, Any]) -> type[UOTA]:
        """The class that ``cls(**options)`` builds: ``UOTA`` the one of its ``base`` option (SwAV
        by default), a concrete class itself. A sweep configures the class this returns, so that
        the base's own options (SwAV's crops and prototypes) are accepted and inherited."""
        return _uota_class(str(options.get("base", "swav"))) if cls is UOTA else cls

    def __init__(
        self,
        base: str = "swav",
        uota_tau: float = 350.0,
        uota_start_epoch: int | float = 100,
        uota_ref_views: tuple[int, ...] = (0, 1),
        lr_boost_at_start: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            base: the base method, ``swav`` (the released setting), ``simclr`` or ``mocov2``
                (MoCo v2 with its symmetric loss, which gives the two per-view rows).
            uota_tau: temperature tau_u of the Mahalanobis score (official: 350 for 128-d
                embeddings, where tau_u * d is about 128; scaling it with the embedding width is
                our suggestion).
            uota_start_epoch: 0-based epoch from which the weights apply; before it the base
                trains unweighted (official: 100 of 200 epochs, "epoch + 1 > 100", i.e. half-way).
                A float in (0, 1) is a fraction of ``max_epochs``, resolved when fitting starts
                (``round(fraction x max_epochs)``): 0.5 is the paper's half-way for any run length.
            uota_ref_views: views whose mean is each image's centre (the two large crops).
            lr_boost_at_start: from ``uota_start_epoch`` on, follow the cosine schedule recomputed
                with twice the peak lr, as the official run does (docs/methods.md §7.3). Off by default:
                it changes the optimisation too, confounding UOTA's effect with a larger lr.
            **kwargs: options of the base method and of :class:`SSLMethod`.
        """
        if not isinstance(self, _uota_class(base)):
            raise ValueError(
                f"{type(self).__name__} is UOTA on another base than base={base!r}; "
                f"use UOTA(base={base!r}) or the matching class"
            )
        check_start_epoch(uota_start_epoch)
        super().__init__(**kwargs)
        fraction = _is_fraction(uota_start_epoch)
        self.uota_weighter = UOTAWeighter(uota_tau, 0 if fraction else int(uota_start_epoch), uota_ref_views)
        self.loss_weighters.append(self.uota_weighter)
        self._record_base_defaults()

    def uota_start(self) -> int:
        """The 0-based start epoch of this run (a fractional ``uota_start_epoch`` of max_epochs)."""
        start = self.hparams.uota_start_epoch
        if not _is_fraction(start):
            return int(start)
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                f"uota_start_epoch={start} is a fraction of max_epochs, but max_epochs={max_epochs}: "
                "set --trainer.max_epochs or give the start as an epoch"
            )
        return int(round(start * max_epochs))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.uota_weighter.start_epoch = self.uota_start()

    def _record_base_defaults(self) -> None:
        """Put the base method's unrecorded options in ``hparams`` with their defaults.

        For ``--model UOTA`` LightningCLI records only the options it parsed (UOTA's and
        :class:`SSLMethod`'s), so the base's own options, which it reads from ``self.hparams``,
        were passed as their defaults; the most derived class's default wins (``UOTAMoCoV2``'s
        ``symmetric=True`` over MoCo v2's ``False``).
        """
        for cls in type(self).__mro__:
            init = cls.__dict__.get("__init__")
            if init is None:
                continue
            for name, param in inspect.signature(init).parameters.items():
                if param.default is not inspect.Parameter.empty and name not in self.hparams:
                    self.hparams[name] = param.default

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.hparams.lr_boost_at_start:
            self._boost_lr_schedule()

    def _boost_lr_schedule(self) -> None:
        """Rewrite the per-step lr array from the start epoch on as the cosine with peak
        ``2 lr`` (official ``main_uota.py``): ``final + (2 peak - final)(s - final)/(peak - final)``."""
        hp, schedule, trainer = self.hparams, self.lr_schedule, self.trainer
        if schedule is None:
            return
        steps_per_epoch = math.ceil(trainer.num_training_batches / max(trainer.accumulate_grad_batches, 1))
        start = self.uota_start() * steps_per_epoch
        peak, final = hp.lr, hp.final_lr
        tail = schedule[start:]
        tail[:] = 2 * tail if peak == final else final + (2 * peak - final) * (tail - final) / (peak - final)
        for config in trainer.lr_scheduler_configs:  # the lr of the current step, if already past start
            sched = config.scheduler
            for group, base_lr, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base_lr * factor(sched.last_epoch)


class UOTASwAV(UOTA, SwAV):
    """UOTA on SwAV multi-crop, the official implementation's setting (docs/methods.md §7.3)."""

    card = MethodCard(name="UOTA (SwAV)", **_CARD)

    def __init__(self, base: str = "swav", **kwargs: Any) -> None:
        super().__init__(base=base, **kwargs)


class UOTASimCLR(UOTA, SimCLR):
    """UOTA on SimCLR: each anchor's NT-Xent term is weighted by its view's weight (docs/methods.md §7.5)."""

    card = MethodCard(name="UOTA (SimCLR)", **_CARD)

    def __init__(self, base: str = "simclr", **kwargs: Any) -> None:
        super().__init__(base=base, **kwargs)


class UOTAMoCoV2(UOTA, MoCoV2):
    """UOTA on MoCo v2 with the symmetric loss: each query's InfoNCE term is weighted (docs/methods.md §7.5)."""

    card = MethodCard(name="UOTA (MoCo v2)", **_CARD)

    def __init__(self, base: str = "mocov2", symmetric: bool = True, **kwargs: Any) -> None:
        """
        Args:
            base: ``mocov2``.
            symmetric: must be True: UOTA needs one loss row per view.
            **kwargs: see :class:`UOTA` and :class:`MoCoV2`.
        """
        if not symmetric:
            raise ValueError("UOTAMoCoV2 needs symmetric=True (one InfoNCE row per view to weight)")
        super().__init__(base=base, symmetric=symmetric, **kwargs)
