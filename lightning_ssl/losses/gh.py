"""Geometric Harmonization (Zhou, Yao, Hong, Zhang, Han, Wang; "Combating Representation Learning
Disparity with Geometric Harmonization", NeurIPS 2023; docs/methods.md §15): the geometric uniform
target, the logits against it, the class prior from the logit memory, and the swapped-prediction
loss on Sinkhorn codes with that prior. The codes come from the suite's Sinkhorn
(:func:`~lightning_ssl.losses.swav.sinkhorn_knopp` with ``prior``) and the loss is SwAV's
swapped prediction (:func:`~lightning_ssl.losses.swav.swav_loss`): GH is SwAV's loss against a fixed
simplex of anchors with a non-uniform marginal.
"""

from __future__ import annotations

import math

import torch

from lightning_ssl.helpers import check_positive, full_precision, l2_normalize, upcast
from lightning_ssl.losses.swav import sinkhorn_knopp, swav_loss


def simplex_etf(num_anchors: int, dim: int, seed: int = 0) -> torch.Tensor:
    """The geometric uniform structure: ``K`` unit vectors in ``R^d`` with every pairwise cosine
    ``-1/(K-1)`` (a simplex equiangular tight frame), as the official ``target/gen_target.py`` builds it:
    ``M = sqrt(K/(K-1)) (I_K - 1 1^T / K) U`` with ``U`` the orthonormal-row polar factor of a
    Gaussian ``K x d`` matrix. Needs ``K <= d``: the official assert allows ``K = d + 1``, but then the
    polar factor has orthonormal columns, not rows, and the result is not an ETF (docs/methods.md §15.6).
    The official file has no seed; any rotation of an ETF is an ETF, so ``seed`` only fixes which
    one (float64, returned as float32)."""
    if num_anchors < 2:
        raise ValueError(f"num_anchors={num_anchors}: a simplex needs at least 2 anchors")
    if num_anchors > dim:
        raise ValueError(
            f"num_anchors={num_anchors} anchors: the official construction gives a simplex only for "
            f"num_anchors <= proj_output_dim = {dim}: lower gh.num_anchors or raise proj_output_dim"
        )
    g = torch.Generator().manual_seed(seed)
    return etf_from_gaussian(torch.randn(num_anchors, dim, generator=g, dtype=torch.float64)).float()


def etf_from_gaussian(a: torch.Tensor) -> torch.Tensor:
    """``sqrt(K/(K-1)) (I - 1 1^T / K) U`` for the polar factor ``U`` of ``a`` (``K x d``, ``K <= d``):
    ``a = U P`` with ``U`` of orthonormal rows, i.e. ``U = L R^T`` from ``a = L S R^T``."""
    k = a.shape[0]
    left, _, right_t = torch.linalg.svd(a.double(), full_matrices=False)
    u = left @ right_t
    centre = torch.eye(k, dtype=torch.float64) - 1.0 / k
    return math.sqrt(k / (k - 1)) * centre @ u


def gh_logits(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``t = normalize(z M^T)``: the raw projector output (not L2-normalised) scored against the
    anchors and L2-normalised over the ``K`` anchors (official ``train_cifar.py``)."""
    with full_precision(z.device):
        return l2_normalize(upcast(z) @ target.to(upcast(z).dtype).T)


@torch.no_grad()
def gh_prior(memory: torch.Tensor, seen: torch.Tensor | None = None, floor: float = 0.0) -> torch.Tensor:
    """The class prior ``pi_k = (#{i: argmax_k m_i = k} + floor) / sum``: the histogram of the
    memory's arg-max anchors (official CIFAR code: no floor, so an anchor can get 0; its ImageNet code
    adds 100 per anchor). Only samples that have been seen count (``seen``)."""
    if memory.ndim != 2:
        raise ValueError(f"memory must be N x K, got shape {tuple(memory.shape)}")
    if floor < 0:
        raise ValueError(f"prior floor={floor} must be >= 0")
    rows = memory if seen is None else memory[seen]
    counts = torch.bincount(rows.argmax(dim=1), minlength=memory.shape[1]).to(torch.float64) + floor
    total = counts.sum()
    if not total > 0:
        return torch.full((memory.shape[1],), 1.0 / memory.shape[1], dtype=torch.float64, device=memory.device)
    return counts / total


def gh_loss(
    t1: torch.Tensor,
    t2: torch.Tensor,
    prior: torch.Tensor | None = None,
    epsilon: float = 0.05,
    iterations: int = 300,
    gamma: float = 0.1,
) -> torch.Tensor:
    """GH's loss as a ``2 x B`` matrix (official ``utils.GHLoss``), row ``v`` the term that predicts
    view ``v`` from the other view's code:

        L_GH = -mean_n sum_k q1_nk log softmax(t2_n / gamma)_k - mean_n sum_k q2_nk log softmax(t1_n / gamma)_k

    with ``q = Sinkhorn(t, epsilon, iterations, prior)`` (no gradient; rows sum to 1, anchor ``k``'s
    column to ``B prior_k`` over the global batch). Entry ``[v, n]`` is twice the term of sample
    ``n``, so that ``.mean()`` is ``L_GH`` (the official sum of the two directions) and
    ``(nt_xent(..., per_view=True) + w * gh_loss(...)).mean()`` is ``L_SSL + w L_GH``.

    Args:
        t1, t2: ``B x K`` GH logits of the two views (:func:`gh_logits`).
        prior: ``K`` marginals summing to 1 (``None``: uniform).
        epsilon: Sinkhorn's entropy regularisation (official ``GHLoss(0.05, ...)``).
        iterations: Sinkhorn iterations (official ``--sinkhorn_iter 300``).
        gamma: softmax temperature of the prediction (official ``gamma = 0.1`` in ``GHLoss.loss``).
    """
    check_positive("gamma", gamma)
    if t1.shape != t2.shape or t1.ndim != 2:
        raise ValueError(f"t1 and t2 must be B x K of one shape, got {tuple(t1.shape)} and {tuple(t2.shape)}")
    q1 = sinkhorn_knopp(t1, epsilon, iterations, prior)
    q2 = sinkhorn_knopp(t2, epsilon, iterations, prior)
    return 2.0 * swav_loss([t1, t2], [q1, q2], temperature=gamma, assign_views=(0, 1))
