"""UOTA: view weights against a direct numpy Mahalanobis + softmax, over two gloo ranks, the
weighter's schedule, the UOTA classes and their training."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from datamodules.digits import DigitsLT
from lightning_ssl.methods.base import weighted_mean
from lightning_ssl.methods.mocov2 import MoCoV2
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.methods.swav import SwAV
from lightning_ssl.methods.uota import UOTA, UOTAMoCoV2, UOTASimCLR, UOTASwAV
from lightning_ssl.schedules import cosine_schedule
from lightning_ssl.weights.uota import UOTAWeighter, uota_view_weights

TINY = dict(backbone="resnet_tiny", image_size=16, lr=0.05, warmup_epochs=0.0)


def _embeddings(v: int, b: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(v, b, d)))


def _numpy_weights(e: np.ndarray, refs: tuple[int, ...], tau: float, eps: float = 1e-8) -> np.ndarray:
    """docs/methods.md §7.2 step by step, with loops and an explicit inverse."""
    v, b, d = e.shape
    e = e / np.linalg.norm(e, axis=2, keepdims=True)
    mu = np.mean([e[r] for r in refs], axis=0)
    delta = e - mu[None]
    cov = np.zeros((d, d))
    for i in range(b):
        for j in range(v):
            cov += np.outer(delta[j, i], delta[j, i])
    inv = np.linalg.inv(cov / (v * b) + eps * np.eye(d))
    dist_ = np.array([[delta[j, i] @ inv @ delta[j, i] / tau for i in range(b)] for j in range(v)])
    w = np.exp(-dist_)
    return v * b * w / w.sum()


@pytest.mark.parametrize("tau, refs", [(1.0, (0, 1)), (350.0, (0, 1)), (0.5, (1, 2, 3))])
def test_weights_equal_direct_mahalanobis_softmax(tau: float, refs: tuple[int, ...]) -> None:
    e = _embeddings(4, 20, 5)
    w = uota_view_weights(e, refs, tau)
    expected = _numpy_weights(e.numpy(), refs, tau)
    assert w.shape == (4, 20)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-8)
    assert w.mean().item() == pytest.approx(1.0)
    if tau == 1.0:
        assert w.std() > 0.05  # not trivially uniform


def test_an_outlying_view_gets_the_smallest_weight() -> None:
    e = _embeddings(4, 12, 6, seed=1) * 0.1 + torch.ones(6)  # views of each image close together
    e[3, 5] = -e[3, 5]  # one small crop far from its image's centre
    w = uota_view_weights(e, tau=1.0)
    assert w.argmin().item() == 3 * 12 + 5


def test_two_views_degenerate_to_one_weight_per_image() -> None:
    w = uota_view_weights(_embeddings(2, 10, 4, seed=2), tau=1.0)
    torch.testing.assert_close(w[0], w[1])
    assert w[0].std() > 1e-3


def test_float32_weights_finite_with_fewer_views_than_dimensions() -> None:
    w = uota_view_weights(_embeddings(3, 4, 128, seed=3).float())  # 12 global views, 128-d: singular
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    assert w.mean().item() == pytest.approx(1.0, abs=1e-5)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="ref_views"):
        uota_view_weights(_embeddings(2, 3, 4), ref_views=(0, 2))
    with pytest.raises(ValueError, match="V x B x D"):
        uota_view_weights(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="tau"):
        uota_view_weights(_embeddings(2, 3, 4), tau=0.0)


# --- two gloo processes ------------------------------------------------------------------------

SIZES = (3, 5)  # unequal local batches: the covariance and the softmax are over all 8 images

# Each rank is a fresh interpreter that imports only torch and the weights module (spawning this
# test module instead would import Lightning in every child, several seconds each on 2 cores).
_RANK_SCRIPT = """
import sys, numpy as np, torch, torch.distributed as dist
from lightning_ssl.weights.uota import uota_view_weights
rank, init_file, out, start, stop = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
dist.init_process_group("gloo", init_method="file://" + init_file, rank=int(rank), world_size=2)
full = torch.from_numpy(np.random.default_rng(4).normal(size=(3, 8, 4)))
torch.save(uota_view_weights(full[:, start:stop], tau=1.0), out)
dist.destroy_process_group()
"""


@pytest.mark.ddp
def test_two_ranks_equal_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    bounds = [0, SIZES[0], sum(SIZES)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RANK_SCRIPT,
                str(r),
                str(tmp_path / "init"),
                str(tmp_path / f"rank{r}.pt"),
                str(bounds[r]),
                str(bounds[r + 1]),
            ],
            cwd=Path(__file__).resolve().parents[1],
        )
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    full = _embeddings(3, sum(SIZES), 4, seed=4)
    assert [r.shape for r in ranks] == [(3, 3), (3, 5)]
    torch.testing.assert_close(torch.cat(ranks, dim=1), uota_view_weights(full, tau=1.0))
    alone = uota_view_weights(full[:, : SIZES[0]], tau=1.0)  # rank 0's batch on its own
    assert not torch.allclose(ranks[0], alone, atol=1e-3)


# --- the weighter --------------------------------------------------------------------------------


def _out(v: int, b: int = 6) -> types.SimpleNamespace:
    return types.SimpleNamespace(losses=torch.rand(v, b), embeddings=_embeddings(v, b, 5).float())


def test_weighter_is_off_before_start_epoch_then_returns_uota_weights() -> None:
    weighter = UOTAWeighter(tau=2.0, start_epoch=3)
    out = _out(4)
    assert weighter(types.SimpleNamespace(current_epoch=2), None, out) is None
    w = weighter(types.SimpleNamespace(current_epoch=3), None, out)
    torch.testing.assert_close(w, uota_view_weights(out.embeddings, tau=2.0))


def test_weighter_warns_with_two_views_and_checks_shapes() -> None:
    module = types.SimpleNamespace(current_epoch=0)
    with pytest.warns(UserWarning, match="only re-weights images"):
        UOTAWeighter(start_epoch=0)(module, None, _out(2))
    bad = _out(3)
    bad.losses = torch.rand(6)
    with pytest.raises(ValueError, match="per-view losses"):
        UOTAWeighter(start_epoch=0)(module, None, bad)
    bad.embeddings = None
    with pytest.raises(ValueError, match="embeddings"):
        UOTAWeighter(start_epoch=0)(module, None, bad)


# --- the UOTA classes ----------------------------------------------------------------------------


def test_uota_builds_the_chosen_base_with_the_weighter() -> None:
    default = UOTA(proj_hidden_dim=16, proj_output_dim=8, num_prototypes=5, **TINY)
    assert type(default) is UOTASwAV and isinstance(default, SwAV)
    assert default.hparams.base == "swav" and default.hparams.uota_tau == 350.0
    assert default.hparams.num_prototypes == 5
    assert isinstance(default.loss_weighters[0], UOTAWeighter)
    simclr = UOTA(base="simclr", uota_start_epoch=7, temperature=0.3, **TINY)
    assert type(simclr) is UOTASimCLR and isinstance(simclr, SimCLR)
    assert simclr.loss_weighters[0].start_epoch == 7 and simclr.hparams.temperature == 0.3
    moco = UOTA(base="mocov2", queue_size=16, **TINY)
    assert type(moco) is UOTAMoCoV2 and isinstance(moco, MoCoV2) and moco.hparams.symmetric
    with pytest.raises(ValueError, match="unknown UOTA base 'byol'"):
        UOTA(base="byol", **TINY)
    with pytest.raises(ValueError, match="base='simclr'"):
        UOTASwAV(base="simclr", **TINY)
    with pytest.raises(ValueError, match="symmetric=True"):
        UOTAMoCoV2(symmetric=False, **TINY)


def test_uota_weights_enter_the_reduced_loss() -> None:
    model = UOTA(
        proj_hidden_dim=16,
        proj_output_dim=8,
        num_prototypes=5,
        num_small_views=2,
        uota_start_epoch=0,
        uota_tau=1.0,
        **TINY,
    )
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(6, 3, s, s, generator=g) for s in (16, 16, 8, 8)]
    batch = (views, torch.full((6,), -1), torch.arange(6))
    out = model.compute_losses(batch)
    weights = model.loss_weights(batch, out)
    torch.testing.assert_close(weights, uota_view_weights(out.embeddings, tau=1.0))
    expected = (weights * out.losses).sum() / out.losses.numel()
    torch.testing.assert_close(weighted_mean(out.losses, weights), expected)
    assert not torch.allclose(expected, out.losses.mean())


def _fit(model: pl.LightningModule, callbacks: list | None = None, **trainer_kw: object) -> pl.Trainer:
    data = trainer_kw.pop("data", {})
    kw = dict(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    kw.update(trainer_kw)
    trainer = pl.Trainer(callbacks=callbacks or [], **kw)
    trainer.fit(model, DigitsLT(batch_size=16, **data))
    return trainer


@pytest.mark.parametrize(
    "base, data",
    [
        ("swav", {"num_small_views": 2}),
        ("simclr", {}),
        ("mocov2", {}),
    ],
)
def test_uota_trains(base: str, data: dict) -> None:
    extra = {
        "swav": dict(proj_hidden_dim=32, proj_output_dim=8, num_prototypes=10, **data),
        "simclr": dict(proj_hidden_dim=32, proj_output_dim=8),
        "mocov2": dict(proj_hidden_dim=32, proj_output_dim=8, queue_size=64),
    }[base]
    model = UOTA(base=base, uota_start_epoch=0, **extra, **TINY)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    if data:
        trainer = _fit(model, data=data)
    else:
        with pytest.warns(UserWarning, match="only re-weights images"):
            trainer = _fit(model, data=data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))


class _RecordLR(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_lr_boost_doubles_the_cosine_peak_from_the_start_epoch() -> None:
    model = UOTA(
        base="simclr",
        uota_start_epoch=1,
        lr_boost_at_start=True,
        final_lr=0.01,
        proj_hidden_dim=16,
        proj_output_dim=8,
        **TINY,
    )
    record = _RecordLR()
    with pytest.warns(UserWarning, match="only re-weights images"):
        _fit(model, callbacks=[record], max_steps=-1, max_epochs=2, limit_train_batches=2)
    plain = cosine_schedule(0.05, 0.01, 4)
    boosted = cosine_schedule(0.1, 0.01, 4)  # official: the cosine recomputed with peak 2 lr
    np.testing.assert_allclose(record.lrs, [*plain[:2], *boosted[2:]], rtol=1e-6)


def test_uota_by_base_name_runs_from_the_command_line(tmp_path: Path) -> None:
    """``--model UOTA --model.base mocov2``: the CLI records only UOTA's and SSLMethod's options,
    yet the base's own options (read from hparams) must hold their defaults (symmetric=True)."""
    from lightning_ssl.cli.lightning import run_lightning_cli

    cli = run_lightning_cli(
        [
            "fit",
            "--model",
            "lightning_ssl.methods.uota.UOTA",
            "--model.base",
            "mocov2",
            "--model.uota_start_epoch",
            "0",
            "--model.backbone",
            "resnet_tiny",
            "--model.lr",
            "0.1",
            "--data",
            "DigitsLT",
            "--data.batch_size",
            "16",
            "--trainer.max_steps",
            "1",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.callbacks",
            "[]",
            "--trainer.logger",
            "false",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert type(cli.model) is UOTAMoCoV2 and cli.trainer.global_step == 1
    assert cli.model.hparams.symmetric is True and cli.model.hparams.queue_size == 65536


def test_uota_start_epoch_as_a_fraction_of_the_run() -> None:
    """0.5 of max_epochs=4 starts the weights at epoch 2 (the paper's half-way, 100 of 200); an
    integer (or integral float) is an epoch; anything else is refused with the fix."""
    model = UOTA(base="simclr", uota_start_epoch=0.5, **TINY)
    _fit(model, max_epochs=4, max_steps=2)
    assert model.uota_start() == 2 and model.uota_weighter.start_epoch == 2
    assert UOTA(base="simclr", uota_start_epoch=100.0, **TINY).uota_weighter.start_epoch == 100
    assert UOTA(base="simclr", uota_start_epoch=7, **TINY).uota_start() == 7  # no trainer needed
    for bad in (1.5, -1, True, 0.5j):
        with pytest.raises(ValueError, match=r"uota_start_epoch=.*fraction of max_epochs in \(0, 1\)"):
            UOTA(base="simclr", uota_start_epoch=bad, **TINY)
