"""Geometric Harmonization as an add-on loss of a two-view method (SimCLR, SDCLR, BCL): its options
and its state (the target, the logit memory, the prior). The loss itself is
:func:`lightning_ssl.losses.gh.gh_loss`; docs/methods.md §15.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_ssl.losses.gh import gh_logits, gh_loss, gh_prior, simplex_etf
from lightning_ssl.weights.memory import PerSampleMemory


def _is_fraction(value: float) -> bool:
    return isinstance(value, float) and 0 < value < 1


@dataclass
class GHConfig:
    """Options of GH (official ``train_cifar.py`` / ``utils.py`` at the CIFAR settings; docs/methods.md §15.5).

    Args:
        num_anchors: K, anchors of the simplex target (``--target_dim 100`` for every dataset; needs
            ``K <= proj_output_dim``).
        epsilon: Sinkhorn's entropy regularisation (``GHLoss(0.05, ...)``).
        iterations: Sinkhorn iterations (``--sinkhorn_iter 300``).
        gamma: temperature of the softmax the codes are predicted with (0.1 in ``GHLoss.loss``).
        warmup_epochs: epochs of the base method alone before GH switches on (README: 500 of 1000 on
            CIFAR, 400 of 500 on ImageNet-LT); a value in (0, 1) is a fraction of the run (0.5).
        ramp_epochs: then the weight rises linearly over this many epochs (``--GH_warm_up 10``).
        weight: the weight after the ramp (1 in the official code).
        beta_warmup: momentum of the logit memory during the warm-up (0.9).
        beta: momentum of the logit memory after it (``--beta 0.999``).
        prior_every: the prior is recomputed in every epoch ``e`` (0-based) with ``(e + 1) %
            prior_every == 0``, and in the last warm-up epoch (20 in the code).
        prior_floor: pseudo-count added to every anchor's count (0 on CIFAR; 100 in the ImageNet code).
        seed: which rotation of the simplex (the official target file has none).
    """

    num_anchors: int = 100
    epsilon: float = 0.05
    iterations: int = 300
    gamma: float = 0.1
    warmup_epochs: float = 500
    ramp_epochs: int = 10
    weight: float = 1.0
    beta_warmup: float = 0.9
    beta: float = 0.999
    prior_every: int = 20
    prior_floor: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epsilon", "gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"gh.{name}={getattr(self, name)} must be > 0")
        for name in ("iterations", "ramp_epochs", "prior_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"gh.{name}={getattr(self, name)} must be >= 1")
        for name in ("beta_warmup", "beta"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"gh.{name}={getattr(self, name)} must be in [0, 1]")
        if self.weight < 0 or self.prior_floor < 0:
            raise ValueError(f"gh.weight={self.weight} and gh.prior_floor={self.prior_floor} must be >= 0")
        w = self.warmup_epochs
        if w < 0 or not (float(w).is_integer() or _is_fraction(w)):
            raise ValueError(
                f"gh.warmup_epochs={w!r}: give epochs (an integer >= 0) or a fraction of the run "
                "in (0, 1), e.g. 0.5 for the official 500 of 1000"
            )


class GeometricHarmonization(nn.Module):
    """GH's state beside a method: the ``K x d`` target (buffer), the per-sample memory of the
    first view's logits and the prior ``pi`` (buffers, checkpointed), and the per-epoch schedule.

    The method calls :meth:`loss` in its step (the weighted ``2 x B`` term to add, or ``None``
    during the warm-up), :meth:`remember` with the first view's logits, and :meth:`after_step`
    once per optimiser step (memory update, then the prior where the epoch asks for it).
    """

    def __init__(self, config: GHConfig, dim: int) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("target", simplex_etf(config.num_anchors, dim, config.seed))
        self.memory = PerSampleMemory(config.num_anchors)
        self.register_buffer("prior", torch.full((config.num_anchors,), 1.0 / config.num_anchors, dtype=torch.float64))
        self.warmup = 0 if _is_fraction(config.warmup_epochs) else int(config.warmup_epochs)
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None  # (the batch's index object, t1, index)

    def resolve_warmup(self, max_epochs: int | None) -> None:
        """A fractional ``warmup_epochs`` of ``max_epochs`` (when the fit starts)."""
        w = self.config.warmup_epochs
        if _is_fraction(w):
            if not max_epochs or max_epochs < 1:
                raise ValueError(
                    f"gh.warmup_epochs={w} is a fraction of max_epochs, but max_epochs={max_epochs}: "
                    "set --trainer.max_epochs or give the warm-up in epochs"
                )
            self.warmup = int(round(w * max_epochs))

    def weight(self, epoch: int) -> float:
        """GH's weight in the 0-based ``epoch``: 0 while ``epoch + 1 <= warmup``, then
        ``(epoch + 1 - warmup) / ramp_epochs`` up to ``weight`` (official CIFAR ramp)."""
        c = self.config
        if epoch + 1 <= self.warmup:
            return 0.0
        return c.weight * min(1.0, (epoch + 1 - self.warmup) / c.ramp_epochs)

    def beta(self, epoch: int) -> float:
        return self.config.beta_warmup if epoch < self.warmup else self.config.beta

    def logits(self, z: Tensor) -> Tensor:
        return gh_logits(z, self.target)

    def loss(self, t1: Tensor, t2: Tensor, epoch: int) -> tuple[Tensor, float] | None:
        """``(w * gh_loss(t1, t2, prior), w)`` in ``epoch``, or ``None`` while the weight is 0."""
        w = self.weight(epoch)
        if w == 0.0:
            return None
        c = self.config
        return w * gh_loss(t1, t2, self.prior.float(), c.epsilon, c.iterations, c.gamma), w

    def remember(self, t1: Tensor, index: Tensor) -> None:
        """Keep this batch's first-view logits for :meth:`after_step`. The first call for a batch wins
        (a SAM step's second pass, which gets the same batch, keeps the unperturbed values); a new
        batch replaces what a skipped step left."""
        if self._pending is None or self._pending[0] is not index:
            self._pending = (index, t1.detach(), index.detach())

    @torch.no_grad()
    def after_step(self, epoch: int) -> None:
        """Update the logit memory (``beta(epoch)``), then recompute the prior from its arg-max
        histogram if ``epoch`` is a prior epoch at or after the warm-up (official: after every
        iteration of epochs with ``(e + 1) % 20 == 0`` or ``e + 1 == warm_up``, once ``e + 1 >= warm_up``)."""
        if self._pending is None:
            return
        _, t1, index = self._pending
        self._pending = None
        self.memory.update(index, t1, self.beta(epoch))
        c, e = self.config, epoch + 1
        if e >= self.warmup and (e % c.prior_every == 0 or e == self.warmup):
            self.prior.copy_(gh_prior(self.memory.values, self.memory.seen, c.prior_floor))
