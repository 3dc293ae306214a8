"""SimSiam, SwAV and MoCLR: heads, losses against hand/numpy references, and a few real training steps."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.digits import DigitsLT
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.moclr import MoCLR, moclr_projector
from lightning_ssl.methods.simsiam import SimSiam
from lightning_ssl.methods.swav import SwAV

TINY = dict(backbone="resnet_tiny", image_size=16, lr=0.05, warmup_epochs=0.0)
B = 8


def _views(*sides: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, s, s, generator=g) for s in sides]


def _batch(views: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    return views, torch.full((B,), -1), torch.arange(B)


def _fit(model: SSLMethod, max_steps: int = 3, **data: object) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, DigitsLT(batch_size=16, **data))
    return trainer


def _trains(model: SSLMethod, **data: object) -> pl.Trainer:
    """A real Trainer runs 3 steps: the loss is finite and the backbone's parameters moved."""
    before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = _fit(model, **data)
    assert trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    return trainer


def _layers(seq: nn.Sequential) -> list[tuple]:
    out = []
    for m in seq:
        if isinstance(m, nn.Linear):
            out.append(("linear", m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("bn", m.num_features, m.affine))
        else:
            out.append((type(m).__name__,))
    return out


# --- SimSiam -----------------------------------------------------------------------------------


def test_simsiam_heads_are_the_cifar_recipe() -> None:
    model = SimSiam(**TINY)  # resnet_tiny: 128-d features
    assert _layers(model.projector) == [
        ("linear", 128, 2048),
        ("bn", 2048, True),
        ("ReLU",),
        ("linear", 2048, 2048),
        ("bn", 2048, False),
    ]
    assert _layers(model.predictor) == [("linear", 2048, 512), ("bn", 512, True), ("ReLU",), ("linear", 512, 2048)]


def test_simsiam_identical_views_and_identity_predictor_give_minus_one() -> None:
    model = SimSiam(proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=8, **TINY)
    model.predictor = nn.Identity()  # p = z, and both views are the same image: D(p1, z2) = -1
    (v,) = _views(16)
    out = model.compute_losses(_batch([v, v.clone()]))
    assert out.losses.shape == (2, B) and out.embeddings.shape == (2, B, 16)
    torch.testing.assert_close(out.losses, torch.full((2, B), -1.0), atol=1e-5, rtol=0)


def test_simsiam_losses_are_negative_cosines_with_stop_gradient() -> None:
    model = SimSiam(proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=8, **TINY).eval()
    v1, v2 = (v.requires_grad_() for v in _views(16, 16))
    out = model.compute_losses(_batch([v1, v2]))
    with torch.no_grad():  # eval mode: BN running statistics, so each view's outputs are its own
        z = [model.projector(model(v)).numpy() for v in (v1, v2)]
        p = [model.predictor(torch.from_numpy(zi)).numpy() for zi in z]
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = np.stack([-(unit(p[0]) * unit(z[1])).sum(1), -(unit(p[1]) * unit(z[0])).sum(1)])
    np.testing.assert_allclose(out.losses.detach().numpy(), expected, rtol=1e-4, atol=1e-5)  # float32 through a net
    out.losses[0].sum().backward()  # D(p1, sg(z2)): no gradient may reach view 2
    assert v1.grad.abs().sum() > 0 and (v2.grad is None or v2.grad.abs().sum() == 0)


def test_simsiam_trains() -> None:
    _trains(SimSiam(proj_hidden_dim=64, proj_output_dim=32, pred_hidden_dim=16, **TINY))


# --- SwAV --------------------------------------------------------------------------------------


def _swav(**kw: object) -> SwAV:
    args = dict(proj_hidden_dim=32, proj_output_dim=8, num_prototypes=6, **TINY)
    args.update(kw)
    return SwAV(**args)


def _ref_sinkhorn(scores: np.ndarray, eps: float = 0.05, iters: int = 3) -> np.ndarray:
    """The official SwAV distributed_sinkhorn on one process, literally."""
    q = np.exp(scores / eps).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_swav_splits_large_small_and_ignores_a_trailing_clean_view() -> None:
    views = _views(16, 16, 8, 8, 16)  # 2 large, 2 small, clean view
    large, small = _swav(num_small_views=2).split_views(views)
    assert [v.shape[-1] for v in large] == [16, 16] and [v.shape[-1] for v in small] == [8, 8]
    assert small[1] is views[3]
    large, small = _swav(num_small_views=1).split_views(views)
    assert len(large) == 2 and len(small) == 1
    with pytest.raises(ValueError, match="2 crops in all"):
        _swav(num_large_views=1)
    with pytest.raises(
        ValueError,
        match=r"SwAV declares 2 large \+ 4 small views per image, but the batch carries 5 "
        r"views \(sides 16, 16, 8, 8, 16\): pass --data.num_large_views 2 "
        r"--data.num_small_views 4",
    ):
        _swav(num_small_views=4).check_views(_batch(views))


def test_swav_loss_is_the_official_swapped_prediction_with_large_crop_codes() -> None:
    model = _swav(num_small_views=2).eval()
    model.on_train_batch_start(None, 0)
    views = _views(16, 16, 8, 8)
    out = model.compute_losses(_batch(views))
    with torch.no_grad():
        z = [F.normalize(model.projector(model(v)), dim=1) for v in views]
        scores = [model.prototypes(zi).double().numpy() for zi in z]
    # the official main_swav.py loop: codes of crops 0 and 1, predicted by every other crop
    expected = 0.0
    for c in (0, 1):
        q = _ref_sinkhorn(scores[c])
        sub = [-(q * _log_softmax(scores[v] / 0.1)).sum(1).mean() for v in range(4) if v != c]
        expected += np.mean(sub)
    expected /= 2
    assert out.losses.shape == (4, B) and out.embeddings.shape == (4, B, 8)
    np.testing.assert_allclose(out.losses.mean().item(), expected, rtol=1e-5)
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(4, B))


def test_swav_prototypes_are_normalised_each_step() -> None:
    model = _swav()
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    model.on_train_batch_start(None, 0)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(6))


def test_swav_queue_fills_newest_first_and_joins_sinkhorn_once_full() -> None:
    model = _swav(queue_length=2 * B, queue_start_epoch=0).eval()
    model.on_train_batch_start(None, 0)
    pushed = []
    for step in range(2):
        assert not model.queue_in_use()
        out = model.compute_losses(_batch(_views(16, 16, seed=step)))
        pushed.append(out.embeddings[:2])
        model.after_optimizer_step()
    assert model.queue_in_use() and int(model.queue_count) == 2 * B
    torch.testing.assert_close(model.queue, torch.cat([pushed[1], pushed[0]], dim=1))
    scores = torch.randn(B, 6, dtype=torch.float64).tanh()
    queued = model.prototypes(model.queue[1]).double().detach().numpy()
    expected = _ref_sinkhorn(np.concatenate([queued, scores.numpy()]))[-B:]
    np.testing.assert_allclose(model.codes(scores, 1).numpy(), expected, rtol=1e-6)
    assert not np.allclose(expected, _ref_sinkhorn(scores.numpy()), atol=1e-3)


def test_swav_freezes_prototypes_then_trains_them() -> None:
    frozen = _swav(freeze_prototypes_steps=313, num_small_views=2)
    normalised = F.normalize(frozen.prototypes.weight.detach().clone(), dim=1)
    _trains(frozen, num_small_views=2)
    torch.testing.assert_close(frozen.prototypes.weight.detach(), normalised)
    free = _swav(freeze_prototypes_steps=0, queue_length=32, queue_start_epoch=0, num_small_views=2)
    normalised = F.normalize(free.prototypes.weight.detach().clone(), dim=1)
    _fit(free, num_small_views=2)
    assert not torch.allclose(free.prototypes.weight.detach(), normalised)
    assert int(free.queue_count) == 32  # 3 steps of 16 pushed, capped at the queue length


def test_swav_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="temperature=0"):
        _swav(temperature=0.0)
    with pytest.raises(ValueError, match="queue_length"):
        _swav(queue_length=-1)


# --- MoCLR -------------------------------------------------------------------------------------


def _moclr(**kw: object) -> MoCLR:
    return MoCLR(proj_hidden_dim=32, proj_output_dim=8, **TINY, **kw)


def test_moclr_projector_and_hidden_layer() -> None:
    model = MoCLR(**TINY)
    assert _layers(model.projector) == [
        ("linear", 128, 4096),
        ("bn", 4096, True),
        ("ReLU",),
        ("linear", 4096, 256),
        ("bn", 256, True),
    ]
    small = _moclr().eval()
    (x,) = _views(16)
    hidden = small.projector_hidden(x)
    assert hidden.shape == (B, 32) and (hidden >= 0).all()
    torch.testing.assert_close(small.projector[-2:](hidden), small.project(x))
    student = moclr_projector(small.feature_dim, 32, 8)  # a DnC student loads the teacher's projector
    student.load_state_dict(small.projector.state_dict())


def test_moclr_loss_is_symmetric_in_batch_infonce_against_momentum_keys() -> None:
    model = _moclr(temperature=0.2)
    v1, v2 = _views(16, 16)
    out = model.compute_losses(_batch([v1, v2]))
    with torch.no_grad():  # at initialisation the momentum encoder equals the online one: k = z
        z1, z2 = (F.normalize(t, dim=1).numpy() for t in model.project(torch.cat([v1, v2])).chunk(2))
    expected = np.zeros((2, B))
    for row, (q, k) in enumerate(((z1, z2), (z2, z1))):
        for i in range(B):
            logits = np.array([q[i] @ k[j] for j in range(B)]) / 0.2
            expected[row, i] = -(logits[i] - np.log(np.exp(logits).sum()))
    np.testing.assert_allclose(out.losses.detach().numpy(), expected, rtol=1e-4)


def test_moclr_momentum_follows_byol_schedule_after_each_step() -> None:
    model = _moclr()
    initial = [p.detach().clone() for p in model.momentum_backbone.parameters()]
    _fit(model, max_steps=1)
    assert model.momentum_values[0] == pytest.approx(0.996)
    for old, new, online in zip(initial, model.momentum_backbone.parameters(), model.backbone.parameters()):
        torch.testing.assert_close(new, 0.996 * old + 0.004 * online.detach())


def test_moclr_trains() -> None:
    model = _moclr()
    _trains(model)
    assert len(model.momentum_values) == 3 and model.momentum_values[-1] == pytest.approx(1.0)
