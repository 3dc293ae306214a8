"""Offline linear probe on pre-extracted, frozen features, trained to convergence by default.

The default recipe, ``lbfgs`` (docs/protocols.md §2), is multinomial logistic regression on
per-dimension standardised features, minimised full-batch by L-BFGS with a strong-Wolfe line
search until the gradient or the loss change falls under a tolerance, within a budget of optimiser
steps (``steps``, default 2,000 iterations: raw 16 px Fashion-MNIST pixels, 768 collinear
dimensions over 60,000 images, need 690; 500 left them 0.2 points short). Its objective is scikit-learn's
``LogisticRegression(C=1)``:

    mean_i CE(W x_i + b, y_i) + weight_decay / 2 * ||W||^2,   weight_decay = 1 / (C N)

a strictly convex problem whose optimum does not depend on the probe set's size, the batch order
or the seed, so a 1,258-image probe set and a 60,000-image one are both trained to the same
criterion (a fixed epoch count gives 60 steps on the first and 3,000 on the second). The
standardisation is folded into the returned layer, which takes raw features. Whether the run met
its tolerance is returned (:class:`ProbeInfo`) and stored with every result.

The papers' mini-batch recipes stay available by name, with their own optimisers, epochs and raw
(unstandardised) features, as in their code:

* ``mttv``: AdamW, lr 0.005, weight decay 0, 100 epochs, batch 1024, cosine (MTTV);
* ``rwsam``: SGD momentum 0.9, lr 30, batch 256, 100 epochs, lr x0.1 at epochs 60 and 80 (rwSAM);
* ``sdclr``: SGD momentum 0.9, lr 30, batch 256, 30 epochs, lr x0.1 at epochs 10 and 20 (SDCLR);
* ``bcl``: Adam, lr 1e-2 decayed exponentially per epoch to 1e-6 over 500 epochs, weight decay
  5e-6 (L2 in the gradient), batch 1000 (BCL's and GH's ``eval_cifar.py``, docs/methods.md §13.7).

Their train-time augmentation of the probe set is not reproduced: features are extracted once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PROBE_OPTIMIZERS = ("lbfgs", "adamw", "sgd", "adam")


@dataclass(frozen=True)
class ProbeRecipe:
    """How a linear probe is trained. ``steps`` bounds L-BFGS iterations; the mini-batch recipes
    count ``epochs`` and, where set, decay the lr x0.1 at each epoch of ``milestones``, or
    exponentially per epoch to ``final_lr`` (``ExponentialLR``, stepped after each epoch).
    ``weight_decay=None`` means scikit-learn's ``C = 1``: ``1 / N`` on the mean loss."""

    name: str
    optimizer: str
    lr: float
    standardize: bool
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    milestones: tuple[int, ...] | None = None
    tolerance: float = 1e-4
    final_lr: float | None = None


PROBE_RECIPES: dict[str, ProbeRecipe] = {
    "lbfgs": ProbeRecipe("lbfgs", "lbfgs", lr=1.0, standardize=True, steps=2000),
    "mttv": ProbeRecipe("mttv", "adamw", lr=0.005, standardize=False, epochs=100, batch_size=1024, weight_decay=0.0),
    "rwsam": ProbeRecipe(
        "rwsam", "sgd", lr=30.0, standardize=False, epochs=100, batch_size=256, weight_decay=0.0, milestones=(60, 80)
    ),
    "sdclr": ProbeRecipe(
        "sdclr", "sgd", lr=30.0, standardize=False, epochs=30, batch_size=256, weight_decay=0.0, milestones=(10, 20)
    ),
    "bcl": ProbeRecipe(
        "bcl", "adam", lr=1e-2, standardize=False, epochs=500, batch_size=1000, weight_decay=5e-6, final_lr=1e-6
    ),
}
DEFAULT_PROBE_RECIPE = "lbfgs"


@dataclass
class ProbeInfo:
    """What a probe run did: the recipe as run, optimiser steps, final full-set training loss and
    gradient norm, and whether the tolerance was met (always ``True`` for epoch-counted recipes,
    which run their fixed schedule)."""

    recipe: dict
    steps: int
    train_loss: float
    grad_norm: float
    converged: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_recipe(recipe: str | ProbeRecipe = DEFAULT_PROBE_RECIPE, **overrides: object) -> ProbeRecipe:
    """A named recipe with ``overrides`` (``None`` values are ignored); unknown names or keys raise."""
    if isinstance(recipe, str):
        if recipe not in PROBE_RECIPES:
            raise ValueError(f"unknown linear probe recipe {recipe!r}; valid: {', '.join(PROBE_RECIPES)}")
        recipe = PROBE_RECIPES[recipe]
    fields = {f.name for f in dataclasses.fields(ProbeRecipe)} - {"name"}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown linear probe option(s) {bad}; valid: {', '.join(sorted(fields))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "milestones" in given:
        given["milestones"] = tuple(int(m) for m in given["milestones"])  # type: ignore[union-attr]
    return dataclasses.replace(recipe, **given)


def _check(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, r: ProbeRecipe) -> None:
    if r.optimizer not in PROBE_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {PROBE_OPTIMIZERS}, got {r.optimizer!r}")
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"train_feats must be a non-empty N×D matrix, got shape {tuple(feats.shape)}")
    if labels.shape != (feats.shape[0],):
        raise ValueError(f"train_labels must have shape ({feats.shape[0]},), got {tuple(labels.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"train_labels hold class ids in [{lo}, {hi}], outside the valid range "
            f"[0, {num_classes - 1}] (unknown labels, -1, cannot train a probe)"
        )
    if r.optimizer == "lbfgs":
        if r.steps is None or r.steps < 1:
            raise ValueError(f"steps must be >= 1 for the L-BFGS probe, got {r.steps}")
    else:
        if r.epochs is None or r.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {r.epochs}")
        if r.batch_size is None or r.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {r.batch_size}")
        if r.milestones is not None and any(not 0 < m < r.epochs for m in r.milestones):
            raise ValueError(f"milestones must lie in (0, {r.epochs}), got {list(r.milestones)}")
    if r.final_lr is not None and not 0 < r.final_lr <= r.lr:
        raise ValueError(f"final_lr must be in (0, lr={r.lr}], got {r.final_lr}")
    if not r.lr > 0:
        raise ValueError(f"lr must be > 0, got {r.lr}")
    if r.weight_decay is not None and r.weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {r.weight_decay}")


def _lr_at(
    step: int,
    total: int,
    steps_per_epoch: int,
    base: float,
    milestones: Sequence[int] | None,
    final: float | None = None,
    epochs: int | None = None,
) -> float:
    """Cosine from ``base`` to 0 over all steps, or x0.1 at each epoch milestone, or (``final``) the
    exponential decay ``base * (final / base) ** (epoch / epochs)`` of ``ExponentialLR``."""
    if final is not None:
        return base * (final / base) ** ((step // steps_per_epoch) / float(epochs or 1))
    if milestones is not None:
        return base * 0.1 ** sum(step // steps_per_epoch >= m for m in milestones)
    return 0.5 * base * (1.0 + math.cos(math.pi * step / total))


def fit_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    recipe: str | ProbeRecipe = DEFAULT_PROBE_RECIPE,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    **overrides: object,
) -> tuple[nn.Linear, ProbeInfo]:
    """Train a linear classifier on frozen features with softmax cross-entropy.

    Args:
        train_feats: ``N×D`` features of the balanced probe set (no augmentation).
        train_labels: ``N`` class ids in ``[0, num_classes)``.
        num_classes: output classes ``C``.
        recipe: ``lbfgs`` (default, converged), ``mttv``, ``rwsam``, ``sdclr`` or a
            :class:`ProbeRecipe`.
        seed: orders the mini-batches of the mini-batch recipes (L-BFGS is full-batch and
            deterministic; weights start at zero in every recipe).
        device: where to train (default: the features' device).
        overrides: fields of :class:`ProbeRecipe` (``steps``, ``epochs``, ``lr``, ``batch_size``,
            ``weight_decay``, ``standardize``, ``milestones``, ``tolerance``, ...).

    Returns:
        ``(layer, info)``: an ``nn.Linear(D, C)`` in eval mode on ``device`` that takes raw
        features, and what the run did.
    """
    r = make_recipe(recipe, **overrides)
    device = torch.device(device) if device is not None else train_feats.device
    # Callers may run under no_grad / inference_mode (a Lightning validation hook): the probe is
    # trained with autograd regardless, on ordinary (non-inference) copies of the inputs.
    with torch.inference_mode(False), torch.enable_grad():
        feats = train_feats.detach().to(device, torch.float32).clone()
        labels = train_labels.detach().to(device).long().clone()
        _check(feats, labels, num_classes, r)
        if r.weight_decay is None:
            r = dataclasses.replace(r, weight_decay=1.0 / feats.shape[0])
        mean = feats.mean(dim=0) if r.standardize else torch.zeros(feats.shape[1], device=device)
        scale = feats.std(dim=0, correction=0).clamp_min(1e-6) if r.standardize else torch.ones_like(mean)
        x = (feats - mean) / scale
        layer = nn.Linear(feats.shape[1], num_classes, device=device)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        if r.optimizer == "lbfgs":
            steps, converged = _fit_lbfgs(layer, x, labels, r)
        else:
            steps, converged = _fit_minibatch(layer, x, labels, r, seed), True
        loss, grad = _objective(layer, x, labels, r.weight_decay)
        with torch.no_grad():  # fold (x - mean) / scale into W x + b
            layer.weight.div_(scale)
            layer.bias.sub_(layer.weight @ mean)
    info = ProbeInfo(recipe=dataclasses.asdict(r), steps=steps, train_loss=loss, grad_norm=grad, converged=converged)
    return layer.eval(), info


def _penalised_loss(
    layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, weight_decay: float, chunk: int = 65536
) -> torch.Tensor:
    """Mean cross-entropy over all rows (chunked, so the ``N×C`` logits never exist at once) plus
    the L2 penalty on the weights (not the bias), with gradients accumulated in ``layer``."""
    n = x.shape[0]
    total = torch.zeros((), device=x.device)
    for start in range(0, n, chunk):
        part = F.cross_entropy(layer(x[start : start + chunk]), y[start : start + chunk], reduction="sum") / n
        part.backward()
        total += part.detach()
    penalty = 0.5 * weight_decay * layer.weight.pow(2).sum()
    penalty.backward()
    return total + penalty.detach()


def _objective(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> tuple[float, float]:
    """Final training objective and the norm of its gradient."""
    layer.zero_grad(set_to_none=True)
    loss = _penalised_loss(layer, x, y, weight_decay)
    grad = torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
    layer.zero_grad(set_to_none=True)
    return float(loss), float(grad)


def _fit_lbfgs(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, r: ProbeRecipe) -> tuple[int, bool]:
    """Full-batch ``torch.optim.LBFGS`` until the tolerance or the step budget; returns (iterations, met)."""
    max_eval = 5 * int(r.steps)  # line-search evaluations must not end the run before the step budget
    opt = torch.optim.LBFGS(
        layer.parameters(),
        lr=r.lr,
        max_iter=int(r.steps),
        max_eval=max_eval,
        history_size=20,
        tolerance_grad=r.tolerance,
        tolerance_change=r.tolerance * 1e-2,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        return _penalised_loss(layer, x, y, float(r.weight_decay))

    opt.step(closure)
    state = opt.state[opt._params[0]]
    steps = int(state.get("n_iter", 0))
    # stopped by the gradient or loss-change tolerance, not by the budget
    return steps, steps < int(r.steps) and int(state.get("func_evals", 0)) < max_eval


def _fit_minibatch(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, r: ProbeRecipe, seed: int) -> int:
    params = layer.parameters()
    if r.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=r.lr, weight_decay=float(r.weight_decay))
    elif r.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=r.lr, weight_decay=float(r.weight_decay))
    else:
        opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=float(r.weight_decay))
    generator = torch.Generator().manual_seed(seed)
    n, batch_size, epochs = x.shape[0], int(r.batch_size), int(r.epochs)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch_size):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, steps_per_epoch, r.lr, r.milestones, r.final_lr, epochs)
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(layer(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return step


@torch.no_grad()
def predict(layer: nn.Module, feats: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """Arg-max class ids of ``layer`` on ``feats`` (``N``, int64, on ``feats``' device), batched."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(layer.parameters()).device
    out = [
        layer(feats[start : start + batch_size].to(device, torch.float32)).argmax(dim=1)
        for start in range(0, feats.shape[0], batch_size)
    ]
    if not out:
        return torch.empty(0, dtype=torch.long, device=feats.device)
    return torch.cat(out).to(feats.device)
