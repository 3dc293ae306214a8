"""MTTV: the fused pair with identity encoders, the masked loss by brute force, the partner
permutation, the EMA key encoder (m = 0.9) and real training steps."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from datamodules.digits import DigitsLT
from lightning_ssl.methods.mttv import MTTV

TINY = dict(backbone="resnet_tiny", image_size=16, lr=0.05, warmup_epochs=0.0)
B, SIDE = 6, 4  # identity-encoder tests: 1 x 4 x 4 images flattened to 16-d features


def _identity_mttv(**kw: object) -> MTTV:
    """MTTV whose query and key encoders are both the identity (flatten, no head)."""
    model = MTTV(backbone=nn.Flatten(), image_size=SIDE, in_chans=1, **kw)
    model.head, model.key_head = nn.Identity(), nn.Identity()
    model.key_backbone = nn.Flatten()
    return model


def _views(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 1, SIDE, SIDE, generator=g, dtype=torch.float64) for _ in range(n)]


def _batch(views: list[torch.Tensor]) -> tuple:
    return views, torch.full((views[0].shape[0],), -1), torch.arange(views[0].shape[0])


def _brute_force_masked_nt_xent(u: np.ndarray, v: np.ndarray, t: float, low: float, high: float) -> np.ndarray:
    """Mean-of-logs NT-Xent over [u; v]; positive kept; self excluded; negatives with |cos| > high
    or < low dropped. Entry i = mean of the losses of anchors u_i and v_i."""
    z = np.concatenate([u, v])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(u)
    losses = np.zeros(2 * n)
    for a in range(2 * n):
        p = (a + n) % (2 * n)
        s_pos = z[a] @ z[p]
        denom = np.exp(s_pos / t)
        for c in range(2 * n):
            s = z[a] @ z[c]
            if c not in (a, p) and low <= abs(s) <= high:
                denom += np.exp(s / t)
        losses[a] = -(s_pos / t - np.log(denom))
    return (losses[:n] + losses[n:]) / 2


def test_head_is_d_d_d_quarter_with_bn() -> None:
    head = MTTV(**TINY).head  # resnet_tiny: d = 128
    shapes = [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)]
    assert shapes == [(128, 128), (128, 128), (128, 32)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == 3 and isinstance(head[-1], nn.BatchNorm1d)


def test_partners_are_a_seeded_derangement() -> None:
    model = _identity_mttv()
    partner = model.partners(B)
    assert sorted(partner.tolist()) == list(range(B))
    assert all(partner[i] != i for i in range(B))
    torch.testing.assert_close(model.partners(B), partner)
    others = [_identity_mttv(partner_seed=s).partners(B) for s in range(1, 6)]
    assert any(not torch.equal(o, partner) for o in others)
    with pytest.raises(ValueError, match="at least 2 images"):
        model.partners(1)


def test_fused_pair_with_identity_encoders() -> None:
    model = _identity_mttv()
    a, n, a_p, n_p = _views(4)
    u, v, feats = model.fuse(a, n, a_p, n_p)
    flat = lambda x: x.flatten(1)  # noqa: E731
    torch.testing.assert_close(u, flat(n) + flat(a_p))  # u = E_q(n(I)) + E_q(a(P))
    torch.testing.assert_close(v, flat(a) + flat(n_p))  # v = E_k(a(I)) + E_k(n(P))
    torch.testing.assert_close(feats, flat(n))
    assert v.grad_fn is None and not v.requires_grad  # keys: EMA encoder, no gradient


@pytest.mark.parametrize("n_views", [2, 3])
def test_loss_uses_partner_views_and_equals_brute_force(n_views: int) -> None:
    low, high, t = 0.1, 0.6, 0.3
    model = _identity_mttv(temperature=t, low=low, high=high)
    views = _views(n_views, seed=n_views)
    a, n = views[0], views[-1]
    a_partner_source = views[1] if n_views == 3 else a  # a second large view gives a(P)
    p = model.partners(B).numpy()
    flat = lambda x: x.flatten(1).numpy()  # noqa: E731
    u = flat(n) + flat(a_partner_source)[p]
    v = flat(a) + flat(n)[p]
    out = model.compute_losses(_batch(views))
    expected = _brute_force_masked_nt_xent(u, v, t, low, high)
    np.testing.assert_allclose(out.losses.detach().numpy(), expected, rtol=1e-10)
    zu = u / np.linalg.norm(u, axis=1, keepdims=True)
    sims = np.abs(zu @ zu.T)[~np.eye(B, dtype=bool)]
    assert ((sims < low) | (sims > high)).any() and ((sims >= low) & (sims <= high)).any()


def test_official_log_of_mean_mode_runs() -> None:
    model = _identity_mttv(mask_positive=True, log_of_mean=True)
    losses = model.compute_losses(_batch(_views(2))).losses
    assert losses.shape == (B,) and torch.isfinite(losses).all() and torch.all(losses == losses[0])


def test_key_encoder_is_an_ema_with_momentum_0_9_before_the_step() -> None:
    model = MTTV(**TINY)
    with torch.no_grad():
        for q in [*model.backbone.parameters(), *model.head.parameters()]:
            q.add_(torch.randn_like(q))
    key_before = [p.detach().clone() for p in [*model.key_backbone.parameters(), *model.key_head.parameters()]]
    online = [p.detach() for p in [*model.backbone.parameters(), *model.head.parameters()]]
    model.on_train_batch_start(None, 0)
    after = [*model.key_backbone.parameters(), *model.key_head.parameters()]
    assert all(not p.requires_grad for p in after)
    for k0, q, k1 in zip(key_before, online, after):
        torch.testing.assert_close(k1, 0.9 * k0 + 0.1 * q)


def test_views_are_checked() -> None:
    with pytest.raises(
        ValueError,
        match=r"MTTV declares 1 large view \+ the clean view last per image, but the batch "
        r"carries 1 view \(sides \d+\): pass --data.clean_view true",
    ):
        _identity_mttv().check_views(_batch(_views(1)))
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(ValueError, match="--data.clean_view true"):
        trainer.fit(MTTV(**TINY), DigitsLT(batch_size=16, clean_view=False))
    with pytest.raises(ValueError, match="low"):
        MTTV(low=0.9, high=0.1, **TINY)


def test_mttv_trains_with_the_clean_view() -> None:
    model = MTTV(**TINY)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    key_before = [p.detach().clone() for p in model.key_backbone.parameters()]
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, DigitsLT(batch_size=16, clean_view=True, recipe="mttv"))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(key_before, model.key_backbone.parameters()))
