"""BCL, Boosted Contrastive Learning (Zhou, Yao, Wang, Han, Zhang; "Contrastive Learning with
Boosted Memorization", ICML 2022; docs/methods.md §13): a per-sample memory of the contrastive
loss sets each sample's augmentation strength.

``BCL(base="simclr")`` (the default) builds :class:`BCLI` (BCL-I, on SimCLR), ``base="sdclr"``
builds :class:`BCLD` (BCL-D, on SDCLR). The loss is the base method's, unchanged; what BCL adds is
the memory (:class:`~lightning_ssl.weights.memory.PerSampleMemory`, in the checkpoint, updated
from all ranks by ``index``), its normalisation to weights at every epoch start, and the
RandAugment strengths it sets in the datamodule's batched view path
(``trainer.datamodule.set_sample_augmentation``, docs/design.md §3).
"""

from __future__ import annotations

import inspect
import os
import zlib
from typing import Any

import torch
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.sdclr import SDCLR
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.weights.bcl import bcl_strength, momentum_weights
from lightning_ssl.weights.memory import PerSampleMemory, pretrain_size

BASES = ("simclr", "sdclr")
OPS = {"simclr": 1, "sdclr": 2}  # official README: BCL-I --rand_k 1, BCL-D --rand_k 2

_CARD = dict(
    paper="Zhou et al., Contrastive Learning with Boosted Memorization, ICML 2022",
    defaults_from="official code and README (train.py, train_sdclr.py, data/memoboosted_cifar100.py, "
    "data/randaug.py): beta=0.97, RandAugment k=1 (BCL-I) / 2 (BCL-D), strength 30, T=0.2",
)


def _bcl_class(base: str) -> type[BCL]:
    classes = {"simclr": BCLI, "sdclr": BCLD}
    if base not in classes:
        raise ValueError(f"unknown BCL base {base!r}; valid: {', '.join(BASES)} (BCL-I on SimCLR, BCL-D on SDCLR)")
    return classes[base]


class _ChooseBase(type(SSLMethod)):  # type: ignore[misc]
    """Metaclass of :class:`BCL`: ``BCL(base=...)`` builds the concrete class of that base (as UOTA's)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is BCL:
            cls = _bcl_class(kwargs.get("base", "simclr"))
        return super().__call__(*args, **kwargs)


class BCL(SSLMethod, metaclass=_ChooseBase):
    """BCL on a base method chosen by ``base``; constructing ``BCL`` gives :class:`BCLI` or :class:`BCLD`.

    ``--model BCL --model.base sdclr`` accepts BCL's and :class:`SSLMethod`'s options; to set the
    base's own options (projector, temperature, ``prune_ratio``, ``gh``) select the concrete class:
    ``--model BCLI`` or ``--model BCLD``.

    Every step keeps each sample's contrastive loss (the mean of its two anchors' NT-Xent; for
    BCL-D the dense-vs-pruned loss) in a momentum memory ``M <- beta M + (1 - beta) l`` (the first
    value as it is). At the start of every epoch the memory is normalised to weights
    ``w = 1/2 + (M - mean M) / (2 max |M - mean M|)`` and each sample's two views get RandAugment
    with ``k`` ops, each applied with probability ``w``, at magnitude ``10 + 20 w`` (BCL-I) or
    ``5 + 25 w u``, ``u ~ U(0, 1)`` per image and epoch (BCL-D). In the first epoch ``w = 0``.
    """

    card = MethodCard(name="BCL", **_CARD)

    def __init__(
        self,
        base: str = "simclr",
        loss_momentum: float = 0.97,
        randaug_ops: int | None = None,
        rand_strength: float = 30.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            base: ``simclr`` (BCL-I) or ``sdclr`` (BCL-D, SDCLR's pruned branch).
            loss_momentum: beta of the momentum loss (official ``--momentum_loss_beta 0.97``).
            randaug_ops: RandAugment ops per view, k; ``None`` takes the official value of the base
                (README: ``--rand_k 1`` for BCL-I, ``2`` for BCL-D).
            rand_strength: the largest magnitude, on RandAugment's 0-30 scale (official
                ``--rand_strength 30``); the floor is the code's 10 (k = 1) or 5 (k = 2).
            **kwargs: the base method's options and :class:`SSLMethod`'s.
        """
        if not isinstance(self, _bcl_class(base)):
            raise ValueError(
                f"{type(self).__name__} is BCL on another base than base={base!r}; "
                f"use BCL(base={base!r}) or the matching class"
            )
        if not 0.0 <= loss_momentum < 1.0:
            raise ValueError(f"loss_momentum={loss_momentum} must be in [0, 1) (official 0.97)")
        ops = OPS[base] if randaug_ops is None else randaug_ops
        if isinstance(ops, bool) or not isinstance(ops, int) or ops < 1:
            raise ValueError(f"randaug_ops={randaug_ops!r} must be an int >= 1 (official: 1 for BCL-I, 2 for BCL-D)")
        bcl_strength(torch.zeros(1), ops, rand_strength, torch.zeros(1))  # validates rand_strength
        super().__init__(**kwargs)
        self.randaug_ops = ops
        self.loss_memory = PerSampleMemory()
        self.register_buffer("aug_weight", torch.zeros(0))  # the weights of the current epoch
        self.register_buffer("weight_epoch", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("strength_seed", torch.tensor(-1, dtype=torch.long))
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None  # (the batch's index object, losses, index)
        _record_base_defaults(self)

    # -- the memory ---------------------------------------------------------------------------------
    def compute_losses(self, batch: Batch) -> LossOutput:
        out = self.contrastive_losses(batch)  # type: ignore[attr-defined]
        if self._pending is None or self._pending[0] is not batch[2]:  # a SAM step's second pass keeps the first
            self._pending = (batch[2], out.losses.detach().float().mean(0), batch[2].detach())
        return self.add_gh(out, batch)  # type: ignore[attr-defined]

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        if self._pending is not None:
            _, losses, index = self._pending
            self._pending = None
            self.loss_memory.update(index, losses, self.hparams.loss_momentum)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and len(self.loss_memory) == 0:
            n = pretrain_size(self.trainer)
            self.loss_memory.resize(n)
            self.aug_weight = torch.zeros(n, device=self.aug_weight.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """The weights' size is the pre-training set's (known only when a fit starts): take the stored one."""
        stored = state_dict.get(f"{prefix}aug_weight")
        if stored is not None and stored.shape != self.aug_weight.shape:
            self.aug_weight = torch.zeros_like(stored, device=self.aug_weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- memory -> weights -> augmentation strength --------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """Normalise the memory to this epoch's weights and hand the strengths to the datamodule's
        view path."""
        super().on_train_epoch_start()
        epoch = self.current_epoch
        if int(self.strength_seed) < 0:  # fixed once per run (seed_everything's), the same on every rank
            seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**31))
            seed = torch.tensor([seed], device=self.strength_seed.device)
            self.strength_seed.fill_(int(distributed.broadcast(seed)[0]))
        if int(self.weight_epoch) != epoch:
            self.aug_weight = momentum_weights(self.loss_memory.values, self.loss_memory.seen).float()
            self.weight_epoch.fill_(epoch)
        self._hand_off(epoch)

    def on_train_start(self) -> None:
        """A run resumed in the middle of an epoch gets no ``on_train_epoch_start``: hand that epoch's
        checkpointed weights to the (new) datamodule here."""
        super().on_train_start()
        if int(self.weight_epoch) == self.current_epoch:
            self._hand_off(self.current_epoch)

    def _hand_off(self, epoch: int) -> None:
        magnitude, probability = self.strengths(epoch)
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "set_sample_augmentation"):
            raise ValueError(
                f"{type(self).__name__} sets each sample's augmentation strength in the datamodule's "
                "view path: train it with a datamodule of the suite (a LongTailDataModule), not bare "
                "dataloaders"
            )
        dm.set_sample_augmentation(self.randaug_ops, magnitude, probability)

    def strengths(self, epoch: int) -> tuple[Tensor, Tensor]:
        """``(magnitude, probability)`` per sample for ``epoch`` from the current weights; BCL-D's
        ``u ~ U(0, 1)`` per image is drawn from a generator seeded by ``(strength_seed, epoch)``."""
        w = self.aug_weight.detach().float().cpu()
        uniform = None
        if self.randaug_ops != 1:
            seed = zlib.crc32(f"bcl:{int(self.strength_seed)}:{epoch}".encode())
            uniform = torch.rand(w.shape[0], generator=torch.Generator().manual_seed(seed))
        return bcl_strength(w, self.randaug_ops, self.hparams.rand_strength, uniform)


def _record_base_defaults(module: SSLMethod) -> None:
    """Put the base method's options that LightningCLI did not record (``--model BCL`` parses BCL's
    and SSLMethod's only) in ``hparams`` with their defaults, the most derived class's first (as
    :meth:`UOTA._record_base_defaults`)."""
    for cls in type(module).__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if param.default is not inspect.Parameter.empty and name not in module.hparams:
                module.hparams[name] = param.default


class BCLI(BCL, SimCLR):
    """BCL-I: BCL on SimCLR (official ``train.py --bcl --rand_k 1``, weight decay 5e-4)."""

    card = MethodCard(name="BCL-I", **_CARD)

    def __init__(self, base: str = "simclr", temperature: float = 0.2, **kwargs: Any) -> None:
        """
        Args:
            base: ``simclr``.
            temperature: NT-Xent temperature (official ``--temperature 0.2``).
            **kwargs: see :class:`BCL` and :class:`SimCLR`.
        """
        super().__init__(base=base, temperature=temperature, **kwargs)


class BCLD(BCL, SDCLR):
    """BCL-D: BCL on SDCLR (official ``train_sdclr.py --bcl --rand_k 2``, weight decay 1e-4, prune 0.9)."""

    card = MethodCard(name="BCL-D", **_CARD)

    def __init__(self, base: str = "sdclr", **kwargs: Any) -> None:
        """
        Args:
            base: ``sdclr``.
            **kwargs: see :class:`BCL` and :class:`SDCLR`.
        """
        super().__init__(base=base, **kwargs)
