"""The small base shared by every method.

It owns the backbone, the optimiser and its per-step schedule, the online-probe/eval contract and
the reduction of losses. A method implements one thing, :meth:`SSLMethod.compute_losses`,
returning **per-sample** (``B``) or **per-view** (``V×B``) losses; the base reduces them, applying
the weights of any registered :class:`LossWeighter` (UOTA's view weights, for instance), so that
re-weighting composes with every method without the method knowing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lightning_ssl.backbones import build_backbone
from lightning_ssl.config.errors import UsageError
from lightning_ssl.methods.declared_views import VIEW_OPTIONS, Views, views_mismatch
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.optim.factory import PRETRAIN_OPTIMIZERS, build_optimizer
from lightning_ssl.optim.param_groups import split_decay_groups
from lightning_ssl.optim.sam import (
    SAMConfig,
    grads_finite,
    sam_perturb,
    sam_restore,
    skip_nonfinite_step,
)
from lightning_ssl.schedules import cosine_schedule
from lightning_ssl.weights.sample_weights import SampleWeighter

Batch = tuple[list[Tensor], Tensor, Tensor]
NONFINITE = ("raise", "skip", "ignore")
MAX_WARMUP_SHARE = 0.5  # a warm-up given in epochs takes at most half the run (as DnC's stages, docs/methods.md §6.6)
WARMUP_EPOCHS = 10.0  # SimCLR App. B.1
SKIPPED_WARN_SHARE = 0.05  # nonfinite="skip": warn at the end of a fit when more steps than this were skipped


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_method_options(method: str, options: Mapping[str, Any], prefix: str = "") -> None:
    """The checks every method's options get by their names, whichever class declares them (the
    base sees the subclass's ``__init__`` arguments in ``hparams``): a float is finite (no NaN or
    infinity), a width ``*_dim`` is an integer >= 1, a ``temperature`` is > 0. A method checks its
    other ranges in its own ``__init__``."""
    for name, value in options.items():
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            check_method_options(method, value, f"{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{method}: {key}={value} is not a finite number; pass a finite value (--model.{key})")
        elif (
            name.endswith("_dim")
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
        ):
            raise ValueError(
                f"{method}: {key}={value!r} must be an integer >= 1 (a layer width); pass e.g. --model.{key} 128"
            )
        elif name == "temperature" and isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ValueError(f"{method}: {key}={value} must be > 0; pass e.g. --model.{key} 0.2")


def check_options(
    lr: float,
    weight_decay: float,
    momentum: float,
    warmup_epochs: float,
    warmup_fraction: float | None,
    final_lr: float,
    image_size: int | None,
    in_chans: int,
) -> None:
    """The optimisation and input options of :class:`SSLMethod`: a one-line ``ValueError`` naming the
    option, the value, the valid range and the fix (``NaN`` and infinities fail every check)."""
    if not (_finite(lr) and lr > 0):
        raise ValueError(f"lr={lr} must be > 0 and finite (the peak learning rate); pass e.g. --model.lr 0.3")
    if not (_finite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay={weight_decay} must be >= 0 and finite; pass e.g. --model.weight_decay 1e-4")
    if not (_finite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum={momentum} must be in [0, 1); pass e.g. --model.momentum 0.9")
    if not (_finite(warmup_epochs) and warmup_epochs >= 0):
        raise ValueError(
            f"warmup_epochs={warmup_epochs} must be >= 0 (0: no warm-up); pass e.g. --model.warmup_epochs 10 "
            "or --model.warmup_fraction 0.1"
        )
    if warmup_fraction is not None and not (_finite(warmup_fraction) and 0 <= warmup_fraction < 1):
        raise ValueError(
            f"warmup_fraction={warmup_fraction} must be in [0, 1) (a fraction of the run's steps); pass "
            "e.g. --model.warmup_fraction 0.1"
        )
    if not (_finite(final_lr) and 0 <= final_lr <= lr):
        raise ValueError(
            f"final_lr={final_lr} must be in [0, lr={lr}] (where the cosine decay ends); pass e.g. --model.final_lr 0"
        )
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(
            f"image_size={image_size!r} must be an integer >= 1 (the input side in pixels); leave it unset "
            "to follow the datamodule"
        )
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(
            f"in_chans={in_chans!r} must be an integer >= 1 (input channels); pass e.g. --model.in_chans 3"
        )


@dataclass
class LossOutput:
    """What a method's :meth:`SSLMethod.compute_losses` returns.

    Attributes:
        losses: ``B`` per-sample or ``V×B`` per-view losses (unreduced).
        features: detached backbone features of the first view (for the online probe).
        embeddings: per-view embeddings ``V×B×D`` used by view weighters (UOTA), if any.
        logs: extra scalars to log (tensors; no host sync).
    """

    losses: Tensor
    features: Tensor
    embeddings: Tensor | None = None
    logs: dict[str, Tensor] = field(default_factory=dict)


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


class LossWeighter(Protocol):
    """Returns weights broadcastable to ``out.losses`` (``B``, ``V×1`` or ``V×B``) or ``None``."""

    def __call__(self, module: SSLMethod, batch: Batch, out: LossOutput) -> Tensor | None: ...


def weighted_mean(losses: Tensor, weights: Tensor | None = None) -> Tensor:
    """``mean(w * l)``: with weights of mean 1 this is the re-weighted empirical risk
    (rwSAM's L_w, Liu et al. 2022 §4; UOTA Eq. M.12)."""
    if weights is None:
        return losses.mean()
    if weights.ndim == 1 and losses.ndim == 2:
        weights = weights.unsqueeze(0)
    return (losses * weights).mean()


class SSLMethod(pl.LightningModule):
    """The method: a name such as SimCLR (lssl help NAME) or a subclass's class path.

    The base LightningModule of every method; not used directly."""

    card: ClassVar[MethodCard]

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        image_size: int | None = None,
        in_chans: int = 3,
        optimizer: str = "sgd",
        lr: float = 0.3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        warmup_epochs: float = WARMUP_EPOCHS,
        warmup_fraction: float | None = None,
        final_lr: float = 0.0,
        sam: SAMConfig | None = None,
        channels_last: bool = False,
        compile: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        """
        Args:
            backbone: timm / ``torchvision.<name>`` / ``resnet_tiny`` name, or an ``nn.Module``.
            image_size: input side; ``<= 64`` selects the small-image ResNet stem. ``None``: the
                CLI sets it from the datamodule; 224 when built directly.
            in_chans: input channels.
            optimizer: ``sgd``, ``lars`` or ``adamw`` (no weight decay on norms and biases).
            lr: peak learning rate after warm-up (the papers' ``base_lr * batch / 256``).
            weight_decay: weight decay of conv/linear weights.
            momentum: SGD/LARS momentum.
            warmup_epochs: linear warm-up length (SimCLR App. B.1: 10 epochs), at most half the run:
                a run under 20 epochs warms up for half its steps (a value other than the default
                that is cut so says it in a warning); checkpoints record the steps used
                (``lr_schedule``).
            warmup_fraction: warm-up as a fraction of the run's optimiser steps instead (overrides
                ``warmup_epochs``): 10 of SimCLR's 100 epochs is 0.1, and it scales with any run
                length, e.g. a DnC expert stage shorter than ``warmup_epochs``.
            final_lr: learning rate at the end of the cosine decay.
            sam: SAM / ASAM step with optional rwSAM sample weights (Liu et al. ICLR 2022),
                available on every method: ``--model.sam.rho 0.05 --model.sam.weights kde``.
            channels_last: NHWC memory format for the backbone and its inputs (faster convolutions
                on tensor-core GPUs, especially under bf16).
            compile: run the backbone through ``torch.compile`` (the module and its checkpoint
                keys stay unchanged; only the call is compiled).
            nonfinite: what a NaN/Inf loss does: ``raise`` (save the last good weights, then stop
                with an error naming the step, the method, the loss terms and the samples),
                ``skip`` (drop the step, count it in ``train/skipped_steps`` and in the checkpoint,
                and warn at the end of the fit when over 5 % of the steps were dropped) or ``ignore`` (no
                check: saves one host synchronisation per step, for throughput runs).
        """
        super().__init__()
        if nonfinite not in NONFINITE:
            raise ValueError(f"unknown nonfinite={nonfinite!r}; valid: {', '.join(NONFINITE)}")
        if optimizer not in PRETRAIN_OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(PRETRAIN_OPTIMIZERS)}")
        check_options(lr, weight_decay, momentum, warmup_epochs, warmup_fraction, final_lr, image_size, in_chans)
        self.save_hyperparameters(ignore=["backbone"] if isinstance(backbone, nn.Module) else None)
        check_method_options(type(self).__name__, dict(self.hparams))
        self.backbone, self.feature_dim = build_backbone(
            backbone, image_size if image_size is not None else 224, in_chans
        )
        self.loss_weighters: list[LossWeighter] = []
        self.skipped_steps = 0
        self.lr_schedule: np.ndarray | None = None
        self._warmup_steps: int | None = None
        self.sam_weighter = None
        if isinstance(sam, dict):  # from a checkpoint's or LightningCLI's saved hyper-parameters
            sam = SAMConfig(**sam)
        self.sam_config = sam
        if sam is not None:
            self.automatic_optimization = False  # two forward/backward passes per step
            self.sam_weighter = SampleWeighter(sam)

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """The views this method reads from ``batch[0]``, given its ``__init__`` options (what
        ``lssl fit`` passes, or ``self.hparams``); the CLI and the sweep set the datamodule's view
        options from it, and :meth:`check_views` checks every training batch against it
        (docs/design.md §3 "the batch contract"). The base requires one view: override it when the
        loss needs a number of crops or the clean view."""
        return Views()

    @functools.cached_property
    def declared_views(self) -> Views:
        """:meth:`views_needed` of this module's own options (they do not change after ``__init__``)."""
        return type(self).views_needed(dict(self.hparams))

    def check_views(self, batch: Batch) -> None:
        """Raise a one-line ``ValueError`` when the batch's views cannot hold what
        :meth:`views_needed` declares (the method, the declaration, what arrived, the data option
        that fixes it); runs before every :meth:`compute_losses` of a training step."""
        dm = self._trainer.datamodule if self._trainer is not None else None
        data = {k: getattr(dm, k) for k in VIEW_OPTIONS if hasattr(dm, k)} if dm is not None else None
        problem = views_mismatch(type(self).__name__, self.declared_views, batch[0], data)
        if problem is not None:
            raise ValueError(problem)

    # -- the one thing a method implements ------------------------------------------------------
    def compute_losses(self, batch: Batch) -> LossOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_losses(batch)")

    # -- shared machinery -----------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Backbone features ``B×D`` (what probes and kNN evaluate)."""
        if self.hparams.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        backbone = self.__dict__.get("_compiled_backbone")
        if backbone is None:  # not `or`: a compiled module's __len__ raises for timm backbones
            backbone = self.backbone
        return backbone(x).flatten(1)

    def embed(self, x: Tensor) -> Tensor | None:
        """The embedding the loss sees (the projector's output, MTTV's head), for the collapse
        diagnostics (docs/protocols.md §11); ``None`` for a method without one."""
        head = getattr(self, "projector", None) or getattr(self, "head", None)
        return head(self(x)) if isinstance(head, nn.Module) else None

    def on_fit_start(self) -> None:
        if self.hparams.get("channels_last"):
            self.backbone.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and "_compiled_backbone" not in self.__dict__:
            # stored outside the module registry so state_dict keys do not gain "_orig_mod."
            self.__dict__["_compiled_backbone"] = torch.compile(self.backbone)

    def loss_weights(self, batch: Batch, out: LossOutput) -> Tensor | None:
        """Product of the registered weighters' weights (``None`` when there are none)."""
        weights = None
        for weighter in self.loss_weighters:
            w = weighter(self, batch, out)
            if w is None:
                continue
            if w.ndim == 1 and out.losses.ndim == 2:
                w = w.unsqueeze(0)
            weights = w if weights is None else weights * w
        return weights

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        self.check_views(batch)
        if self.sam_weighter is not None:
            return self._sam_training_step(batch)
        out = self.compute_losses(batch)
        loss = weighted_mean(out.losses, self.loss_weights(batch, out))
        if self.hparams.get("nonfinite", "raise") != "ignore" and not torch.isfinite(loss):
            return self._nonfinite(loss, out, batch)
        self._log_step(loss, out)
        return {"loss": loss, "features": out.features, "embeddings": _detached(out.embeddings)}

    def _nonfinite(self, loss: Tensor, out: LossOutput, batch: Batch) -> None:
        """A NaN/Inf loss: skip the step (counted), or save the last good weights and stop."""
        if self.hparams.get("nonfinite") == "skip":
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps))
            return None  # Lightning skips the optimiser step
        per_sample = out.losses.detach().reshape(-1, out.losses.shape[-1])
        bad = (~torch.isfinite(per_sample)).any(0)
        samples = batch[2][bad].tolist()[:10]
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in out.logs.items()) or "none logged"
        saved = "no trainer to save with"
        if self._trainer is not None:
            callback = self.trainer.checkpoint_callback
            folder = getattr(callback, "dirpath", None) or Path(self.trainer.default_root_dir) / "checkpoints"
            path = Path(folder) / "last-good.ckpt"
            self.trainer.save_checkpoint(path)
            saved = f"the last good weights (before this step) are in {path}"
        raise FloatingPointError(
            f"{type(self).__name__}: non-finite loss {float(loss)} at step "
            f"{self.trainer.global_step if self._trainer else '?'}; "
            f"loss terms: {terms}; {int(bad.sum())} of {bad.numel()} samples non-finite (dataset indices {samples}); "
            f"{saved}. Lower the learning rate, check the data, or pass --model.nonfinite skip"
        )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """Per-step state updates that follow the weight update (EMA encoders, queues).

        Runs inside the step, before any callback's ``on_train_batch_end``, so a checkpoint taken
        there holds the complete state of the step and a resumed run is exact.
        """

    def _log_step(self, loss: Tensor, out: LossOutput) -> None:
        self.log("train/loss", loss, prog_bar=True)
        for name, value in out.logs.items():
            self.log(f"train/{name}", value)

    def _sam_training_step(self, batch: Batch) -> dict[str, Tensor]:
        """rwSAM (Liu et al. 2022 §4; docs/methods.md §9.2): the perturbation from the sample-weighted
        loss, the update from the unweighted loss at the perturbed point, then restore and step."""
        cfg = self.sam_config
        opt, sched = self.optimizers(), self.lr_schedulers()
        out = self.compute_losses(batch)
        view_w = self.loss_weights(batch, out)
        sample_w = self.sam_weighter(batch[1], batch[2])
        first_w = sample_w if view_w is None else (view_w if sample_w is None else view_w * sample_w)
        first = weighted_mean(out.losses, first_w)
        if self.hparams.get("nonfinite", "raise") != "ignore" and not torch.isfinite(first):
            return self._nonfinite(first, out, batch)
        opt.zero_grad()
        self.manual_backward(first)
        params = [p for group in opt.param_groups for p in group["params"]]
        if not grads_finite(params):  # fp16 overflow: no perturbation, no update (GradScaler's rule)
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps))
            skip_nonfinite_step(opt, getattr(self.trainer.precision_plugin, "scaler", None), sched)
            return {"loss": first.detach(), "features": out.features, "embeddings": _detached(out.embeddings)}
        perturbation = sam_perturb(params, cfg.rho, cfg.adaptive)
        opt.zero_grad()
        out2 = self.compute_losses(batch)
        loss = weighted_mean(out2.losses, self.loss_weights(batch, out2))
        self.manual_backward(loss)
        sam_restore(params, perturbation)
        opt.step()
        sched.step()
        self.after_optimizer_step()
        self._log_step(loss.detach(), out2)
        return {"loss": loss.detach(), "features": out.features, "embeddings": _detached(out.embeddings)}

    def on_train_epoch_start(self) -> None:
        if self.sam_weighter is not None:
            self.sam_weighter.maybe_refresh(self, self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # what `lssl probe CHECKPOINT` needs to rebuild the model and its data without a config
        checkpoint["method_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None:
            checkpoint["datamodule_class"] = f"{type(dm).__module__}.{type(dm).__qualname__}"
        if self.sam_weighter is not None:
            checkpoint["sam_weighter"] = self.sam_weighter.state_dict()
        checkpoint["skipped_steps"] = int(self.skipped_steps)
        if self.lr_schedule is not None:  # what ran, beside the options that asked for it
            checkpoint["lr_schedule"] = {"total_steps": len(self.lr_schedule), "warmup_steps": self._warmup_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("method_class")
        mine = f"{type(self).__module__}.{type(self).__qualname__}"
        if saved is not None and saved.rsplit(".", 1)[-1] != mine.rsplit(".", 1)[-1]:
            raise ValueError(
                f"checkpoint is from method {saved}, not {mine}: resume it with --model "
                f"{saved.rsplit('.', 1)[-1]} or start a new run"
            )
        old_backbone = checkpoint.get("hyper_parameters", {}).get("backbone")
        new_backbone = self.hparams.get("backbone")
        if isinstance(old_backbone, str) and isinstance(new_backbone, str) and old_backbone != new_backbone:
            raise ValueError(
                f"checkpoint backbone is {old_backbone!r} but this model's is {new_backbone!r}: "
                f"pass --model.backbone {old_backbone} to resume it"
            )
        if self.sam_weighter is not None and "sam_weighter" in checkpoint:
            self.sam_weighter.load_state_dict(checkpoint["sam_weighter"])
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))

    def on_train_end(self) -> None:
        """Say so when ``nonfinite="skip"`` dropped a large share of the steps: the run then
        trained on the rest only, and may end near chance without any error."""
        # Lightning's step counter runs on over a skipped step (automatic optimisation)
        attempted = max(int(self.trainer.global_step), self.skipped_steps) if self._trainer is not None else 0
        if self.skipped_steps and attempted and self.skipped_steps / attempted > SKIPPED_WARN_SHARE:
            warnings.warn(
                f"{type(self).__name__}: {self.skipped_steps} of {attempted} training steps "
                f"({100 * self.skipped_steps / attempted:.0f} %) had a non-finite loss and were skipped "
                "(nonfinite=skip): the weights come from the other steps only; lower the learning rate "
                "or check the data (train/skipped_steps in the logs)",
                stacklevel=1,
            )

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, target, _ = batch
        return {"features": self(images), "target": target}

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.validation_step(batch, batch_idx)

    # -- optimisation -----------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch, from the length of the training loader.

        When the trainer has not built its loader yet, a throwaway one is measured instead of
        calling ``trainer.estimated_stepping_batches``: that would build the trainer's loader
        before a checkpoint's loop state is restored, and a run resumed mid-epoch would replay the
        epoch from its start instead of continuing with the exact next batch.
        """
        trainer = self.trainer
        batches = trainer.num_training_batches
        if not (np.isfinite(batches) and batches > 0):
            dm = trainer.datamodule
            if dm is None:
                return max(1, int(trainer.estimated_stepping_batches) // max(1, trainer.max_epochs or 1))
            batches = len(dm.train_dataloader())
            limit = trainer.limit_train_batches
            batches = int(batches * limit) if isinstance(limit, float) else min(batches, int(limit))
        return max(1, int(batches) // max(1, trainer.accumulate_grad_batches))

    def total_steps(self) -> int:
        """Optimiser steps of the whole run (``max_epochs`` x steps per epoch, capped by ``max_steps``)."""
        trainer = self.trainer
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        cap = trainer.max_steps if trainer.max_steps not in (None, -1) else None
        if epochs is None and cap is None:
            raise UsageError(
                "--trainer.max_epochs -1 (no limit) without --trainer.max_steps: the learning-rate "
                "schedule is sized to the run; pass --trainer.max_epochs N or --trainer.max_steps N"
            )
        total = self.steps_per_epoch() * epochs if epochs is not None else cap
        return int(min(total, cap) if cap is not None else total)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = split_decay_groups([self], hp.weight_decay)
        opt = build_optimizer(hp.optimizer, groups, lr=hp.lr, momentum=hp.momentum)
        total = self.total_steps()
        warmup = self.warmup_steps(total)
        self._warmup_steps = warmup
        self.lr_schedule = cosine_schedule(hp.lr, hp.final_lr, total, warmup)
        schedule = self.lr_schedule

        def factor(step: int) -> float:
            return float(schedule[min(step, len(schedule) - 1)] / hp.lr)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def warmup_steps(self, total: int) -> int:
        """Warm-up steps of a ``total``-step run: ``warmup_fraction`` of it when set, else
        ``warmup_epochs`` epochs, at most half the run (the default: 10 epochs or half the run); a
        value the user chose that is cut to half the run is said in a one-line warning."""
        hp = self.hparams
        if hp.get("warmup_fraction") is not None:
            return int(round(hp.warmup_fraction * total))
        asked = int(round(hp.warmup_epochs * self.steps_per_epoch()))
        cap = int(round(MAX_WARMUP_SHARE * total))
        if asked <= cap:
            return asked
        if hp.warmup_epochs == WARMUP_EPOCHS:  # the default's documented rule: 10 epochs or half the run
            return cap
        warnings.warn(
            f"{type(self).__name__}: warmup_epochs={hp.warmup_epochs:g} is {asked} steps, more than half of "
            f"this {total}-step run: warming up for {cap} step{'s' if cap != 1 else ''} (half the run); "
            "pass --model.warmup_fraction F to set the warm-up as a share of the run",
            stacklevel=1,
        )
        return cap

    def schedule_value(self, schedule: np.ndarray) -> float:
        """The value of a per-step schedule at the current optimiser step."""
        return float(schedule[min(self.trainer.global_step, len(schedule) - 1)])
