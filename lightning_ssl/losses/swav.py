"""SwAV (Caron et al. 2020): Sinkhorn-Knopp codes and the per-view swapped-prediction loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_ssl import distributed
from lightning_ssl.helpers import check_positive, full_precision, upcast


@torch.no_grad()
def sinkhorn_knopp(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft codes ``Q`` of the local batch by the Sinkhorn-Knopp algorithm (Caron et al. 2020,
    Eq. 3 and Alg. 1), over the global batch of all ranks.

    Starting from ``exp(scores / epsilon)``, ``iterations`` rounds alternately make every prototype
    hold ``1/K`` of the mass and every sample ``1/B`` (``B`` = global batch, ``K`` = prototypes);
    the per-prototype sums over the batch are all-reduced across ranks, as in the official code.
    The result is scaled by ``B``, so each returned row (a sample's code) sums to exactly 1 and
    each prototype's total over the global batch tends to ``B / K`` as ``iterations`` grows.

    Each prototype's scores are shifted by their global-batch maximum before ``exp`` (an
    all-gather of ``K`` numbers). The first row normalisation cancels that shift exactly, so the
    codes are those of the official code while ``exp`` cannot overflow; the official
    initial division by the total mass is dropped for the same reason. Runs in at least float32
    and without gradient.

    Args:
        scores: ``B_local x K`` prototype scores (dot products of normalised z and prototypes).
        epsilon: entropy regularisation of Eq. 3; 0.05 is the paper's and official code's value.
        iterations: Sinkhorn rounds; the paper finds 3 sufficient (Sec. 3.1).
        prior: ``K`` prototype marginals summing to 1 instead of the uniform ``1/K`` (GH's class
            prior, Zhou et al. NeurIPS 2023, official ``utils.sinkhorn``'s ``stat``; docs/methods.md
            §15.3): prototype ``k`` then holds ``prior[k]`` of the mass, i.e. ``B prior[k]`` of the
            returned codes' column total. ``None`` is SwAV's equipartition.

    Returns:
        ``B_local x K`` codes, rows summing to 1.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (batch x prototypes) tensor, got shape {tuple(scores.shape)}")
    check_positive("epsilon", epsilon)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations!r}")
    with full_precision(scores.device):
        s = upcast(scores.detach())
        prototype_max = distributed.all_gather(s.max(dim=0, keepdim=True).values).max(dim=0).values
        q = torch.exp((s - prototype_max) / epsilon).T  # K x B_local
        n_prototypes = q.shape[0]
        global_batch = distributed.all_reduce_sum(torch.tensor(float(q.shape[1]), device=q.device, dtype=q.dtype))
        if prior is not None:
            if prior.shape != (n_prototypes,):
                raise ValueError(
                    f"prior must hold one marginal per prototype ({n_prototypes}), got shape {tuple(prior.shape)}"
                )
            marginal = upcast(prior.detach()).to(q.dtype).view(-1, 1)
        for _ in range(iterations):
            if prior is None:
                q /= distributed.all_reduce_sum(q.sum(dim=1, keepdim=True)) * n_prototypes
            else:  # a zero marginal empties its row for good (GH's prior may hold empty anchors)
                rows = distributed.all_reduce_sum(q.sum(dim=1, keepdim=True))
                q *= torch.where(marginal > 0, marginal / rows, torch.zeros_like(rows))
            q /= q.sum(dim=0, keepdim=True) * global_batch
        return (q * global_batch).T


def swav_loss(
    scores: Sequence[torch.Tensor],
    codes: Sequence[torch.Tensor],
    temperature: float = 0.1,
    assign_views: Sequence[int] = (0, 1),
) -> torch.Tensor:
    """SwAV's swapped-prediction loss (Caron et al. 2020, Eq. 1-2) as a ``V x B`` matrix.

    With ``p_v = softmax(scores[v] / temperature)`` and ``l(c, v, i) = -sum_k q^c_ik log p_vik``
    (the code of assignment view ``c`` predicted from view ``v``), entry ``[v, i]`` is

        E[v, i] = V / (C (V - 1)) * sum_{c in assign_views, c != v} l(c, v, i),

    the loss of *predicting view v* of sample ``i`` (``C = len(assign_views)``). The factor makes
    ``E.mean()`` equal the official SwAV loss ``1/C sum_c 1/(V-1) sum_{v != c} mean_i l(c, v, i)``,
    and ``(w * E).mean()`` equal UOTA's weighted loss (Eq. M.12, docs/methods.md §7.3), whose weight
    ``w[v, i]`` multiplies the prediction view. Relative to the plain average of ``l(c, v, i)``
    over the ``n_v`` code views ``c != v``, ``E[v, i]`` is ``n_v V / (C (V - 1))`` times larger:
    exactly 1 for the two-crop case (V = C = 2), and 4/7 vs 8/7 for an assignment view vs a
    small crop with 2 + 6 crops. A view with no code view to predict (``V = 2``, one assignment
    view) has ``E[v] = 0``.

    Args:
        scores: ``V`` tensors ``B x K``, prototype scores of all crops (large crops first).
        codes: ``C`` tensors ``B x K``, Sinkhorn codes of ``scores[assign_views[j]]``, in that
            order (detached here).
        temperature: of the softmax over prototypes (Eq. 2); 0.1 is the paper's value.
        assign_views: indices of the views whose codes are computed; SwAV uses the two large
            crops (0, 1) (Sec. 3.2).
    """
    check_positive("temperature", temperature)
    n_views, n_codes = len(scores), len(assign_views)
    if n_views < 2:
        raise ValueError(f"need at least 2 views, got {n_views}")
    if len(codes) != n_codes:
        raise ValueError(f"got {len(codes)} codes for assign_views={tuple(assign_views)}")
    if n_codes == 0 or len(set(assign_views)) != n_codes or not all(0 <= c < n_views for c in assign_views):
        raise ValueError(f"assign_views must be distinct view indices in [0, {n_views - 1}], got {tuple(assign_views)}")
    shape = tuple(scores[0].shape)
    if len(shape) != 2 or any(tuple(t.shape) != shape for t in [*scores, *codes]):
        shapes = [tuple(t.shape) for t in [*scores, *codes]]
        raise ValueError(f"scores and codes must all be B x K of one shape, got {shapes}")
    with full_precision(scores[0].device):
        log_p = [(upcast(s) / temperature).log_softmax(dim=1) for s in scores]
        q = [upcast(c.detach()) for c in codes]
        rows = []
        for v in range(n_views):
            loss = log_p[v].new_zeros(shape[0])
            for c, code in zip(assign_views, q):
                if c != v:
                    loss = loss - (code * log_p[v]).sum(dim=1)
            rows.append(loss)
        return torch.stack(rows) * (n_views / (n_codes * (n_views - 1)))
