"""NT-Xent, multi-positive NT-Xent and InfoNCE against loop references and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_ssl.losses import info_nce_in_batch, info_nce_with_queue, nt_xent, nt_xent_multi


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ref_multi(views: list[np.ndarray], t: float) -> np.ndarray:
    """Loop over anchors: mean over positives of -log(e^{s_p/t} / sum_{j != a} e^{s_j/t})."""
    z = [_unit(v) for v in views]
    n_views, n = len(z), len(z[0])
    flat = [(v, i) for v in range(n_views) for i in range(n)]
    loss = np.zeros(n)
    for v, i in flat:
        denom = sum(math.exp(z[v][i] @ z[w][j] / t) for w, j in flat if (w, j) != (v, i))
        terms = [-math.log(math.exp(z[v][i] @ z[w][i] / t) / denom) for w in range(n_views) if w != v]
        loss[i] += np.mean(terms) / n_views
    return loss


def _ref_in_batch(q: np.ndarray, k: np.ndarray, t: float) -> np.ndarray:
    q, k = _unit(q), _unit(k)
    out = []
    for i in range(len(q)):
        denom = sum(math.exp(q[i] @ k[j] / t) for j in range(len(k)))
        out.append(-math.log(math.exp(q[i] @ k[i] / t) / denom))
    return np.array(out)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape))


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_loop_reference(temperature: float) -> None:
    z1, z2 = _rand(3, 4, seed=1), _rand(3, 4, seed=2)
    got = nt_xent(z1, z2, temperature)
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), _ref_multi([z1.numpy(), z2.numpy()], temperature), rtol=1e-10)


def test_nt_xent_identical_embeddings_is_log_2n_minus_1() -> None:
    # all 2N embeddings equal: the positive is one of 2N - 1 equally likely candidates
    z = torch.ones(5, 4) * torch.tensor([0.3, -1.0, 2.0, 0.5])
    for t in (0.07, 0.5):
        torch.testing.assert_close(nt_xent(z, z.clone(), t), torch.full((5,), math.log(9.0)))


def test_nt_xent_orthogonal_pairs_closed_form() -> None:
    # positive similarity 1, all 2N - 2 negatives orthogonal: loss = log(1 + (2N - 2) e^{-1/t})
    z, t = torch.eye(4, 6, dtype=torch.float64), 0.2
    expected = math.log(1 + 6 * math.exp(-1 / t))
    torch.testing.assert_close(nt_xent(z, 3 * z, t), torch.full((4,), expected, dtype=torch.float64))


def test_nt_xent_gradcheck() -> None:
    z1 = _rand(3, 4, seed=3).requires_grad_()
    z2 = _rand(3, 4, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3), (z1, z2))


def test_nt_xent_is_full_precision_under_bf16_autocast() -> None:
    z1, z2 = _rand(8, 16, seed=5).float(), _rand(8, 16, seed=6).float()
    expected = nt_xent(z1, z2, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(z1, z2, 0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_nt_xent_multi_two_views_equals_nt_xent() -> None:
    z1, z2 = _rand(4, 5, seed=7), _rand(4, 5, seed=8)
    torch.testing.assert_close(nt_xent_multi([z1, z2], 0.4), nt_xent(z1, z2, 0.4))


def test_nt_xent_multi_three_views_matches_loop_reference() -> None:
    views = [_rand(3, 4, seed=s) for s in (9, 10, 11)]
    got = nt_xent_multi(views, 0.25)
    np.testing.assert_allclose(got.numpy(), _ref_multi([v.numpy() for v in views], 0.25), rtol=1e-10)


def test_nt_xent_multi_closed_forms() -> None:
    n, n_views, t = 4, 3, 0.5
    same = torch.ones(n, 3)
    # all V N embeddings equal: every positive has probability 1 / (V N - 1)
    torch.testing.assert_close(nt_xent_multi([same] * n_views, t), torch.full((n,), math.log(11.0)))
    # one-hot per image: denominator (V - 1) e^{1/t} + V (N - 1), numerator e^{1/t}
    eye = torch.eye(n, dtype=torch.float64)
    expected = math.log((n_views - 1) + n_views * (n - 1) * math.exp(-1 / t))
    torch.testing.assert_close(nt_xent_multi([eye] * n_views, t), torch.full((n,), expected, dtype=torch.float64))


def test_info_nce_with_queue_matches_loop_reference() -> None:
    q, k, t = _rand(3, 4, seed=12), _rand(3, 4, seed=13), 0.2
    queue = torch.nn.functional.normalize(_rand(5, 4, seed=14), dim=1)
    qn, kn, qu = _unit(q.numpy()), _unit(k.numpy()), queue.numpy()
    expected = []
    for i in range(3):
        pos = math.exp(qn[i] @ kn[i] / t)
        expected.append(-math.log(pos / (pos + sum(math.exp(qn[i] @ row / t) for row in qu))))
    np.testing.assert_allclose(info_nce_with_queue(q, k, queue, t).numpy(), expected, rtol=1e-10)


def test_info_nce_with_queue_closed_form_and_queue_gets_no_gradient() -> None:
    # q = k, queue rows orthogonal to every q: loss = log(1 + K e^{-1/T})
    eye = torch.eye(6, dtype=torch.float64)
    q, queue = eye[:2].clone().requires_grad_(), eye[2:].clone().requires_grad_()
    loss = info_nce_with_queue(q, eye[:2], queue, 0.2)
    torch.testing.assert_close(loss, torch.full((2,), math.log(1 + 4 * math.exp(-5.0)), dtype=torch.float64))
    loss.sum().backward()
    assert queue.grad is None and q.grad is not None


def test_info_nce_in_batch_matches_loop_reference() -> None:
    q, k = _rand(3, 4, seed=15), _rand(3, 4, seed=16)
    np.testing.assert_allclose(
        info_nce_in_batch(q, k, 0.1).numpy(), _ref_in_batch(q.numpy(), k.numpy(), 0.1), rtol=1e-10
    )
    torch.testing.assert_close(info_nce_with_queue(q, k, None, 0.1), info_nce_in_batch(q, k, 0.1))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: nt_xent(torch.ones(3, 4), torch.ones(3, 4), 0.0), "temperature"),
        (lambda: nt_xent(torch.ones(3, 4), torch.ones(2, 4)), "one common shape"),
        (lambda: nt_xent(torch.ones(3), torch.ones(3)), "2-D"),
        (lambda: nt_xent_multi([torch.ones(3, 4)]), "at least 2 views"),
        (
            lambda: info_nce_with_queue(torch.ones(3, 4), torch.ones(3, 4), torch.ones(5, 3)),
            "queue must be K x 4",
        ),
        (lambda: info_nce_in_batch(torch.ones(3, 4), torch.ones(3, 4), -1.0), "temperature"),
    ],
)
def test_bad_input_raises(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_per_view_rows_average_to_per_sample() -> None:
    """The per-anchor rows used for view weights average to the per-sample losses."""
    from lightning_ssl.losses import nt_xent, nt_xent_multi

    g = torch.Generator().manual_seed(7)
    z = [torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    rows = nt_xent(z[0], z[1], 0.5, per_view=True)
    assert rows.shape == (2, 5)
    torch.testing.assert_close(rows.mean(0), nt_xent(z[0], z[1], 0.5))
    # row 0 is view 0 as the anchor: a direct softmax over its 2N-1 candidates
    zn = [torch.nn.functional.normalize(v, dim=1) for v in z[:2]]
    cand = torch.cat(zn)
    logits = zn[0] @ cand.T / 0.5
    logits[torch.arange(5), torch.arange(5)] = float("-inf")
    expected = -(logits.log_softmax(1)[torch.arange(5), torch.arange(5) + 5])
    torch.testing.assert_close(rows[0], expected)
    multi = nt_xent_multi(z, 0.5, per_view=True)
    assert multi.shape == (3, 5)
    torch.testing.assert_close(multi.mean(0), nt_xent_multi(z, 0.5))
