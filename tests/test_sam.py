"""SAM / ASAM against the formulas and a manual two-pass step; KDE weights against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_ssl.methods.base import LossOutput, SSLMethod
from lightning_ssl.optim.sam import SAMConfig, sam_perturb, sam_restore
from lightning_ssl.weights.kde import (
    density_weights,
    label_exp_weights,
    log_kde_density,
    median_bandwidth,
)


def test_perturbation_formulas() -> None:
    a = torch.tensor([1.0, -2.0], requires_grad=True)
    b = torch.tensor([[3.0]], requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])
    params = [a, b]
    eps = sam_perturb(params, rho=0.5)
    # SAM: rho * g / ||g|| with ||g|| = 5
    torch.testing.assert_close(eps[0], torch.tensor([0.3, 0.0]))
    torch.testing.assert_close(a.detach(), torch.tensor([1.3, -2.0]))
    sam_restore(params, eps)
    torch.testing.assert_close(a.detach(), torch.tensor([1.0, -2.0]))
    # ASAM: rho * |w|^2 g / || |w| g ||, with |w| g = (3, 0, 12) -> norm sqrt(153)
    eps = sam_perturb(params, rho=0.5, adaptive=True)
    norm = math.sqrt(9 + 144)
    torch.testing.assert_close(eps[0], torch.tensor([0.5 * 1 * 3 / norm, 0.0]))
    torch.testing.assert_close(eps[1], torch.tensor([[0.5 * 9 * 4 / norm]]))


class Pairs(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(6, 2, 3, 2, 2, generator=g)

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):  # noqa: ANN204
        return [self.x[i, 0], self.x[i, 1]], torch.tensor(i % 3), i


class Toy(SSLMethod):
    """Per-sample loss ``||f(v0) - 2 f(v1)||^2`` of a linear backbone (not an SSL method)."""

    def compute_losses(self, batch):  # noqa: ANN001, ANN201
        (v0, v1), _, _ = batch
        f0, f1 = self(v0), self(v1)
        return LossOutput((f0 - 2 * f1).pow(2).sum(1), f0.detach())


def loss_fn(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    f0 = x[:, 0].flatten(1) @ weight.T + bias
    f1 = x[:, 1].flatten(1) @ weight.T + bias
    return (f0 - 2 * f1).pow(2).sum(1)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_equals_manual_two_pass(adaptive: bool) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(12, 3)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    model = Toy(
        backbone=nn.Sequential(nn.Flatten(), lin),
        image_size=2,
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        warmup_epochs=0,
        sam=SAMConfig(rho=0.3, adaptive=adaptive, weights="label_exp", label_base=3.0),
    )
    data = Pairs()
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=6))
    # manual: perturbation from the label-weighted loss, update from the unweighted loss there
    x, target = data.x, torch.arange(6) % 3
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    (3.0 ** target.float() * loss_fn(w, b, x)).mean().backward()
    gw, gb = w.grad, b.grad
    if adaptive:
        norm = torch.sqrt(((w0.abs() * gw) ** 2).sum() + ((b0.abs() * gb) ** 2).sum())
        ew, eb = 0.3 * w0.abs() ** 2 * gw / norm, 0.3 * b0.abs() ** 2 * gb / norm
    else:
        norm = torch.sqrt((gw**2).sum() + (gb**2).sum())
        ew, eb = 0.3 * gw / norm, 0.3 * gb / norm
    w2, b2 = (w0 + ew).requires_grad_(), (b0 + eb).requires_grad_()
    loss_fn(w2, b2, x).mean().backward()
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.1 * w2.grad)
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.1 * b2.grad)


def test_kde_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(40, 5, generator=g)
    z = torch.nn.functional.normalize(feats, dim=1).double().numpy()
    h = 0.7
    brute = []
    for j in range(40):
        k = [math.exp(-np.sum((z[j] - z[i]) ** 2) / (2 * h * h)) for i in range(40) if i != j]
        brute.append(math.log(sum(k) / 39))
    np.testing.assert_allclose(log_kde_density(feats, h, chunk_size=7).numpy(), brute, rtol=1e-5)
    d = [np.linalg.norm(z[i] - z[j]) for i in range(40) for j in range(i + 1, 40)]
    assert median_bandwidth(feats) == pytest.approx(float(np.median(d)), rel=1e-5)


def test_density_weights_favour_rare_points() -> None:
    g = torch.Generator().manual_seed(2)
    dense = torch.randn(50, 3, generator=g) * 0.05 + torch.tensor([1.0, 0.0, 0.0])
    rare = torch.tensor([[0.0, 0.0, 1.0]])
    logd = log_kde_density(torch.cat([dense, rare]), bandwidth=0.3)
    w = density_weights(logd, alpha=0.5)
    assert w.mean().item() == pytest.approx(1.0)
    assert int(w.argmax()) == 50
    ratio = torch.exp(-0.5 * (logd[50] - logd[0]))
    assert (w[50] / w[0]).item() == pytest.approx(ratio.item(), rel=1e-5)  # w ∝ p^-alpha


def test_label_weights_and_bad_config() -> None:
    torch.testing.assert_close(label_exp_weights(torch.tensor([0, 1, 2]), 1.2), torch.tensor([1.0, 1.2, 1.44]))
    with pytest.raises(ValueError, match="need labels"):
        label_exp_weights(torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="unknown sam.weights 'density'"):
        SAMConfig(weights="density")
    with pytest.raises(ValueError, match="sam.rho=0"):
        SAMConfig(rho=0)


def test_rwsam_feature_bank_weights_survive_a_checkpoint() -> None:
    """The KDE weights (and when they were refreshed) travel in the checkpoint, so a resumed run
    uses the same per-sample weights until its next refresh."""
    from lightning_ssl.methods import SimSiam

    def make() -> SimSiam:
        return SimSiam(
            backbone="resnet_tiny",
            image_size=16,
            proj_hidden_dim=16,
            proj_output_dim=16,
            pred_hidden_dim=8,
            sam=SAMConfig(weights="kde", refresh_every=2),
        )

    model = make()
    model.sam_weighter.weights = torch.tensor([0.5, 1.5, 1.0])
    model.sam_weighter.refreshed_at = 4
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    resumed = make()
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.sam_weighter.refreshed_at == 4
    torch.testing.assert_close(
        resumed.sam_weighter(torch.tensor([0, 0]), torch.tensor([2, 1])), torch.tensor([1.0, 1.5])
    )


def test_nonfinite_gradient_skips_perturbation_and_step() -> None:
    """An inf in the first pass's gradient (an fp16 overflow) must not reach the weights: that
    step is skipped and counted, and the next (finite) step is exactly the two-pass reference
    from the untouched initial weights (the finite path is unchanged)."""
    torch.manual_seed(0)
    lin = nn.Linear(12, 3)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    backwards = []

    def overflow_once(grad: torch.Tensor) -> torch.Tensor:
        backwards.append(1)
        return grad * float("inf") if len(backwards) == 1 else grad

    lin.weight.register_hook(overflow_once)
    model = Toy(
        backbone=nn.Sequential(nn.Flatten(), lin),
        image_size=2,
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        warmup_epochs=0,
        sam=SAMConfig(rho=0.3),
    )
    data = Pairs()
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=6))  # epoch 0: skipped; epoch 1: the one step
    assert model.skipped_steps == 1 and trainer.current_epoch == 2 and len(backwards) == 3
    assert torch.isfinite(lin.weight).all()
    x = data.x
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    loss_fn(w, b, x).mean().backward()
    norm = torch.sqrt((w.grad**2).sum() + (b.grad**2).sum())
    w2, b2 = (w0 + 0.3 * w.grad / norm).requires_grad_(), (b0 + 0.3 * b.grad / norm).requires_grad_()
    loss_fn(w2, b2, x).mean().backward()
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.1 * w2.grad)
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.1 * b2.grad)


def test_skipped_step_under_a_grad_scaler_lowers_the_scale() -> None:
    """With a GradScaler (16-mixed) the skipped step goes to the scaler, which finds the inf,
    leaves the weights and halves its scale; the lr schedule steps as in automatic optimisation.
    Without a scaler nothing steps and the gradients are dropped."""
    from lightning_ssl.optim.sam import grads_finite, skip_nonfinite_step

    p = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)

    class ScaledOptimizer:  # what Lightning's LightningOptimizer.step does under 16-mixed
        def step(self) -> None:
            scaler.step(opt)
            scaler.update()

        def zero_grad(self) -> None:
            opt.zero_grad()

    scaler.scale((p * torch.tensor([float("inf"), 1.0])).sum()).backward()  # an overflowing fp16 backward
    assert not grads_finite([p])
    skip_nonfinite_step(ScaledOptimizer(), scaler, sched)
    assert torch.equal(p.detach(), torch.ones(2)) and p.grad is None
    assert scaler.get_scale() == 2.0 and opt.param_groups[0]["lr"] == 0.5
    p.grad = torch.tensor([float("nan"), 1.0])
    skip_nonfinite_step(opt, None, sched)
    assert torch.equal(p.detach(), torch.ones(2)) and p.grad is None and opt.param_groups[0]["lr"] == 0.5
    p.grad = torch.tensor([1.0, 2.0])
    assert grads_finite([p])
