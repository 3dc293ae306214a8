"""InfoNCE of a query against keys: MoCo v2's queue of negatives, or MoCLR's in-batch keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_ssl import distributed
from lightning_ssl.helpers import (
    check_embeddings,
    check_positive,
    full_precision,
    l2_normalize,
    upcast,
)


def info_nce_with_queue(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, temperature: float = 0.2
) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, Eq. 1), one value per local query.

    ``-log exp(q.k+ / T) / (exp(q.k+ / T) + sum_j exp(q.queue_j / T))``: the positive is the
    query's own key, the negatives are the rows of the queue. With ``queue=None`` the negatives
    are the other samples' keys of the global batch (:func:`info_nce_in_batch`).

    Args:
        q: ``B x D`` queries (L2-normalised here).
        k: ``B x D`` keys of the same images (L2-normalised here). In MoCo they come from the
            momentum encoder without gradient; this function does not detach them.
        queue: ``K x D`` negatives, rows already L2-normalised (detached here), or ``None``.
        temperature: T. 0.2 is MoCo v2's value (Chen et al. 2020b); MoCo v1 used 0.07.
    """
    if queue is None:
        return info_nce_in_batch(q, k, temperature)
    check_embeddings(q=q, k=k)
    check_positive("temperature", temperature)
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be K x {q.shape[1]}, got shape {tuple(queue.shape)}")
    with full_precision(q.device):
        q, k = l2_normalize(upcast(q)), l2_normalize(upcast(k))
        positive = (q * k).sum(dim=1, keepdim=True)
        negatives = q @ upcast(queue.detach()).to(q.dtype).T
        logits = torch.cat([positive, negatives], dim=1) / temperature
        return -logits.log_softmax(dim=1)[:, 0]


def info_nce_in_batch(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE with in-batch negatives, per local query: MoCLR's loss (Tian et al. 2021).

    For query ``i``: ``-log exp(s(q_i, k_i)/T) / sum_j exp(s(q_i, k_j)/T)``, ``j`` over the keys of
    the global batch (gathered from all ranks, with gradient if ``k`` has one); ``s`` is cosine
    similarity. Other queries are not negatives. MoCLR symmetrises by swapping the views:
    ``info_nce_in_batch(q1, k2) + info_nce_in_batch(q2, k1)``, which is the caller's job.

    Args:
        q, k: ``B x D`` queries and keys (L2-normalised here); same ``B`` on every rank.
        temperature: T. DnC does not state MoCLR's value (docs/methods.md §5.2); 0.1 is our choice.
    """
    check_embeddings(q=q, k=k)
    check_positive("temperature", temperature)
    with full_precision(q.device):
        q, k = l2_normalize(upcast(q)), l2_normalize(upcast(k))
        keys = distributed.gather_with_grad(k)
        logits = q @ keys.T / temperature
        own_key = distributed.rank() * q.shape[0] + torch.arange(q.shape[0], device=q.device)
        return F.cross_entropy(logits, own_key, reduction="none")
