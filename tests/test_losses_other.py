"""SimSiam, SwAV / Sinkhorn, MTTV's masked NT-Xent and DnC's distillation against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_ssl.losses import (
    masked_nt_xent,
    negative_cosine,
    nt_xent,
    regression_distill,
    sinkhorn_knopp,
    swav_loss,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- SimSiam ---------------------------------------------------------------------------------


def test_negative_cosine_matches_numpy_and_stops_gradient() -> None:
    p, z = _rand(3, 4, seed=1).requires_grad_(), _rand(3, 4, seed=2).requires_grad_()
    expected = -(_unit(p.detach().numpy()) * _unit(z.detach().numpy())).sum(1)
    loss = negative_cosine(p, z)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-12)
    loss.sum().backward()
    assert z.grad is None and p.grad is not None
    torch.testing.assert_close(negative_cosine(3 * z.detach(), z), torch.full((3,), -1.0, dtype=torch.float64))


# --- SwAV ------------------------------------------------------------------------------------


def _ref_sinkhorn(scores: np.ndarray, eps: float, iters: int) -> np.ndarray:
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


def _prototype_scores(b: int, k: int, seed: int) -> torch.Tensor:
    z = torch.nn.functional.normalize(_rand(b, 8, seed=seed), dim=1)
    c = torch.nn.functional.normalize(_rand(k, 8, seed=seed + 100), dim=1)
    return z @ c.T


@pytest.mark.parametrize(("eps", "iters"), [(0.05, 3), (0.1, 1), (0.03, 10)])
def test_sinkhorn_matches_official_algorithm(eps: float, iters: int) -> None:
    scores = _prototype_scores(6, 5, seed=3)
    got = sinkhorn_knopp(scores, eps, iters)
    np.testing.assert_allclose(got.numpy(), _ref_sinkhorn(scores.numpy(), eps, iters), rtol=1e-9)


def test_sinkhorn_marginals() -> None:
    scores = _prototype_scores(8, 4, seed=4)
    codes = sinkhorn_knopp(scores, 0.05, 3)
    torch.testing.assert_close(codes.sum(1), torch.ones(8, dtype=torch.float64))
    assert (codes >= 0).all()
    # many rounds: every prototype holds B / K of the mass
    converged = sinkhorn_knopp(scores, 0.05, 500)
    torch.testing.assert_close(converged.sum(0), torch.full((4,), 2.0, dtype=torch.float64), atol=1e-6, rtol=0)


def test_sinkhorn_shift_per_prototype_is_exact_and_cannot_overflow() -> None:
    scores = _prototype_scores(6, 5, seed=5)
    shifted = scores + torch.tensor([1000.0, -300.0, 0.0, 50.0, 7.0], dtype=torch.float64)
    reference = sinkhorn_knopp(scores)
    torch.testing.assert_close(sinkhorn_knopp(shifted), reference)
    torch.testing.assert_close(sinkhorn_knopp(shifted.float()), reference.float(), atol=1e-5, rtol=1e-4)
    assert not sinkhorn_knopp(scores.requires_grad_()).requires_grad


def _ref_swav(
    scores: list[torch.Tensor], assign: tuple[int, ...], t: float, w: torch.Tensor | None = None
) -> torch.Tensor:
    """The official SwAV loss loop (UOTA's Eq. M.12 when view weights w[v, i] are given)."""
    n_views = len(scores)
    w = torch.ones(n_views, scores[0].shape[0], dtype=scores[0].dtype) if w is None else w
    loss = 0.0
    for crop_id in assign:
        q = sinkhorn_knopp(scores[crop_id])
        subloss = 0.0
        for v in [v for v in range(n_views) if v != crop_id]:
            log_p = torch.log_softmax(scores[v] / t, dim=1)
            subloss -= torch.mean(w[v] * torch.sum(q * log_p, dim=1))
        loss += subloss / (n_views - 1)
    return loss / len(assign)


@pytest.mark.parametrize(("n_views", "assign"), [(2, (0, 1)), (4, (0, 1)), (5, (1, 3, 4)), (3, (2,))])
def test_swav_loss_mean_is_the_official_loss(n_views: int, assign: tuple[int, ...]) -> None:
    scores = [_prototype_scores(3, 5, seed=10 + v) for v in range(n_views)]
    codes = [sinkhorn_knopp(scores[c]) for c in assign]
    per_view = swav_loss(scores, codes, 0.1, assign)
    assert per_view.shape == (n_views, 3)
    torch.testing.assert_close(per_view.mean(), _ref_swav(scores, assign, 0.1))
    # UOTA: a weight on prediction view v of sample i, applied by the caller
    w = torch.rand(n_views, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close((w * per_view).mean(), _ref_swav(scores, assign, 0.1, w))


def test_swav_loss_two_views_is_each_views_cross_entropy() -> None:
    scores = [_prototype_scores(4, 6, seed=20), _prototype_scores(4, 6, seed=21)]
    codes = [sinkhorn_knopp(s) for s in scores]
    per_view = swav_loss(scores, codes, 0.1)
    for v, c in ((0, 1), (1, 0)):
        expected = -(codes[c] * torch.log_softmax(scores[v] / 0.1, dim=1)).sum(1)
        torch.testing.assert_close(per_view[v], expected)


def test_swav_loss_sends_no_gradient_to_codes() -> None:
    scores = [_prototype_scores(3, 4, seed=s).requires_grad_() for s in (30, 31)]
    codes = [torch.softmax(s.detach(), 1).requires_grad_() for s in scores]
    swav_loss(scores, codes).mean().backward()
    assert all(c.grad is None for c in codes) and all(s.grad is not None for s in scores)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sinkhorn_knopp(torch.ones(3, 4), epsilon=0.0), "epsilon"),
        (lambda: sinkhorn_knopp(torch.ones(3, 4), iterations=0), "iterations"),
        (lambda: sinkhorn_knopp(torch.ones(3)), "2-D"),
        (lambda: swav_loss([torch.ones(3, 4)] * 2, [torch.ones(3, 4)]), "codes"),
        (
            lambda: swav_loss([torch.ones(3, 4)] * 2, [torch.ones(3, 4)] * 2, assign_views=(0, 2)),
            "assign_views",
        ),
        (
            lambda: swav_loss([torch.ones(3, 4), torch.ones(3, 5)], [torch.ones(3, 4)] * 2),
            "one shape",
        ),
        (
            lambda: swav_loss([torch.ones(3, 4)] * 2, [torch.ones(3, 4)] * 2, temperature=0),
            "temperature",
        ),
    ],
)
def test_swav_bad_input_raises(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- MTTV masked NT-Xent ---------------------------------------------------------------------


def _ref_masked(u, v, t, low, high, mask_positive=False, log_of_mean=False, official_denominator=False):
    """Loop over anchors of [u; v]; extreme = |S| > high or |S| < low.

    ``official_denominator`` sums every unmasked entry of the anchor's row (self included) and
    subtracts e^{1/t}, as the official code does.
    """
    z = _unit(np.concatenate([u, v]))
    n2 = len(z)
    n = n2 // 2

    def extreme(s: float) -> bool:
        return abs(s) > high or abs(s) < low

    ratios, dropped = [], []
    for a in range(n2):
        p = (a + n) % n2
        s_p = z[a] @ z[p]
        pos_masked = mask_positive and extreme(s_p)
        num = 0.0 if pos_masked else math.exp(s_p / t)
        if official_denominator:
            denom = sum(math.exp(z[a] @ z[j] / t) for j in range(n2) if not extreme(z[a] @ z[j]))
            denom -= math.exp(1 / t)
        else:
            denom = num + sum(
                math.exp(z[a] @ z[j] / t) for j in range(n2) if j not in (a, p) and not extreme(z[a] @ z[j])
            )
        ratios.append(num / denom)
        dropped.append(pos_masked)
    if log_of_mean:
        return np.full(n, -math.log(np.mean(ratios)))
    per_anchor = np.array([0.0 if d else -math.log(r) for r, d in zip(ratios, dropped)])
    return (per_anchor[:n] + per_anchor[n:]) / 2


@pytest.fixture
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    u = _rand(4, 3, seed=40)
    v = u + 0.6 * _rand(4, 3, seed=41)
    return u, v


def _masked_counts(u, v, low, high) -> tuple[int, int, int]:
    """(masked negatives, kept negatives, masked positives) over all anchors."""
    z = _unit(np.concatenate([u.numpy(), v.numpy()]))
    s = np.abs(z @ z.T)
    n2, n = len(z), len(z) // 2
    ext = (s > high) | (s < low)
    pos = np.zeros_like(ext)
    pos[np.arange(n2), (np.arange(n2) + n) % n2] = True
    neg = ~pos & ~np.eye(n2, dtype=bool)
    return int((ext & neg).sum()), int((~ext & neg).sum()), int((ext & pos).sum())


@pytest.mark.parametrize("mask_positive", [False, True])
@pytest.mark.parametrize("log_of_mean", [False, True])
def test_masked_nt_xent_matches_loop(pairs, mask_positive: bool, log_of_mean: bool) -> None:
    u, v = pairs
    low, high, t = 0.3, 0.9, 0.3
    masked_neg, kept_neg, masked_pos = _masked_counts(u, v, low, high)
    assert masked_neg > 0 and kept_neg > 0 and masked_pos > 0  # the data exercises every branch
    got = masked_nt_xent(u, v, t, low, high, mask_positive=mask_positive, log_of_mean=log_of_mean)
    expected = _ref_masked(u.numpy(), v.numpy(), t, low, high, mask_positive, log_of_mean)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_masked_nt_xent_without_masks_is_nt_xent(pairs) -> None:
    u, v = pairs
    torch.testing.assert_close(masked_nt_xent(u, v, 0.3, low=0.0, high=1.5), nt_xent(u, v, 0.3))
    # and the default thresholds really remove something
    assert not torch.allclose(masked_nt_xent(u, v, 0.3, low=0.3, high=0.9), nt_xent(u, v, 0.3))


def test_masked_nt_xent_log_of_mean_agrees_with_official_formula_when_self_unmasked(pairs) -> None:
    # high >= 1 (the ImageNet setting): the official "- e^{1/t}" removes exactly the self term
    u, v = pairs
    got = masked_nt_xent(u, v, 0.3, low=0.3, high=1.5, mask_positive=True, log_of_mean=True)
    expected = _ref_masked(u.numpy(), v.numpy(), 0.3, 0.3, 1.5, True, True, official_denominator=True)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_masked_nt_xent_gradients_are_finite_and_match_finite_differences(pairs) -> None:
    u, v = (x.clone().requires_grad_() for x in pairs)
    for kwargs in ({}, {"mask_positive": True}, {"mask_positive": True, "log_of_mean": True}):
        assert torch.autograd.gradcheck(lambda a, b, kw=kwargs: masked_nt_xent(a, b, 0.3, 0.3, 0.9, **kw), (u, v))


def test_masked_nt_xent_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="0 <= low < high"):
        masked_nt_xent(torch.ones(2, 3), torch.ones(2, 3), low=0.9, high=0.1)
    with pytest.raises(ValueError, match="0 <= low < high"):
        masked_nt_xent(torch.ones(2, 3), torch.ones(2, 3), low=-0.1)


# --- DnC regression distillation -------------------------------------------------------------


def test_regression_distill_matches_numpy() -> None:
    pred, target = _rand(3, 4, seed=50).requires_grad_(), _rand(3, 4, seed=51).requires_grad_()
    expected = 0.5 * ((pred.detach().numpy() - _unit(target.detach().numpy())) ** 2).sum(1)
    loss = regression_distill(pred, target)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-12)
    loss.sum().backward()
    assert target.grad is None and pred.grad is not None


def test_regression_distill_normalises_target_not_prediction() -> None:
    target = _rand(3, 4, seed=52)
    unit = torch.nn.functional.normalize(target, dim=1)
    torch.testing.assert_close(regression_distill(unit, 5 * target), torch.zeros(3, dtype=torch.float64))
    # a prediction twice as long as the unit target is off by a unit vector: 1/2 * 1
    torch.testing.assert_close(regression_distill(2 * unit, target), torch.full((3,), 0.5, dtype=torch.float64))
