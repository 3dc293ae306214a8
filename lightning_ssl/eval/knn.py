"""Weighted cosine k-nearest-neighbour classifier on frozen features.

The vote is the one of InstDisc (Wu et al., CVPR 2018, §3.4 "weighted k-NN"), used by the MoCo
CIFAR-10 demo and by MTTV's monitor (docs/protocols.md §6): features are L2-normalised, the k most
cosine-similar bank entries vote for their label with weight ``exp(sim / T)``, and the class with
the largest summed weight wins. Defaults k = 200, T = 0.1 are theirs; solo-learn uses k = 20,
T = 0.07, and rwSAM's code k = 1 (docs/protocols.md §6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk_size: int,
    bank_chunk_size: int | None,
) -> None:
    if query.ndim != 2 or bank.ndim != 2:
        raise ValueError(f"query and bank must be 2-D (N×D), got shapes {tuple(query.shape)} and {tuple(bank.shape)}")
    if query.shape[1] != bank.shape[1]:
        raise ValueError(f"feature dims differ: query {query.shape[1]} vs bank {bank.shape[1]}")
    if bank.shape[0] == 0:
        raise ValueError("bank is empty: the kNN classifier needs at least one labelled feature")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must have shape ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    lo, hi = int(bank_labels.min()), int(bank_labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"bank_labels hold class ids in [{lo}, {hi}], outside the valid range [0, {num_classes - 1}]")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if bank_chunk_size is not None and bank_chunk_size < 1:
        raise ValueError(f"bank_chunk_size must be >= 1 or None, got {bank_chunk_size}")


def _topk_over_bank(
    q: torch.Tensor, bank: torch.Tensor, k: int, bank_chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k similarities and bank positions of ``q`` rows, visiting the bank in chunks."""
    best_sim = q.new_empty((q.shape[0], 0))
    best_idx = torch.empty((q.shape[0], 0), dtype=torch.long, device=q.device)
    for start in range(0, bank.shape[0], bank_chunk_size):
        sim = q @ bank[start : start + bank_chunk_size].T
        sim, idx = sim.topk(min(k, sim.shape[1]), dim=1)
        best_sim = torch.cat([best_sim, sim], dim=1)
        best_idx = torch.cat([best_idx, idx + start], dim=1)
        best_sim, keep = best_sim.topk(min(k, best_sim.shape[1]), dim=1)
        best_idx = best_idx.gather(1, keep)
    return best_sim, best_idx


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    bank_chunk_size: int | None = None,
) -> torch.Tensor:
    """Predict a class for each query row by an ``exp(cos / T)``-weighted vote of its k neighbours.

    Args:
        query: ``Q×D`` features to classify (any device; moved to the bank's device chunk-wise).
        bank: ``N×D`` labelled memory bank: the clean (un-augmented) features of the whole
            balanced probe set (docs/protocols.md §6), not augmented training views.
        bank_labels: ``N`` class ids in ``[0, num_classes)``.
        num_classes: number of classes ``C``.
        k: neighbours that vote; a ``k`` larger than the bank means "all of the bank".
        temperature: ``T`` of the vote weight ``exp(sim / T)``.
        chunk_size: queries per matmul; the work buffer is ``chunk_size × bank_chunk_size`` floats.
        bank_chunk_size: bank rows per matmul (``None``: the whole bank at once); set it for
            ImageNet-sized banks so that memory stays bounded, the top-k is merged across chunks.

    Returns:
        ``Q`` int64 predicted class ids on ``query``'s device. Ties go to the lower class id.
    """
    bank_labels = bank_labels.to(bank.device).long()
    _check(query, bank, bank_labels, num_classes, k, temperature, chunk_size, bank_chunk_size)
    bank = F.normalize(bank.float(), dim=1)
    step = bank.shape[0] if bank_chunk_size is None else bank_chunk_size
    preds = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].to(bank.device).float(), dim=1)
        sim, idx = _topk_over_bank(q, bank, k, step)
        # Shifting by the row maximum rescales a row's weights by one positive constant: the vote
        # is unchanged and exp cannot overflow for small T.
        weight = ((sim - sim[:, :1]) / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, device=bank.device, dtype=weight.dtype)
        scores.scatter_add_(1, bank_labels[idx], weight)
        preds.append(scores.argmax(dim=1))
    if not preds:
        return torch.empty(0, dtype=torch.long, device=query.device)
    return torch.cat(preds).to(query.device)
