"""SimCLR's NT-Xent and its multi-positive form, per local sample, global-batch negatives."""

from __future__ import annotations

from collections.abc import Sequence

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


def _multi_view_logits(views: Sequence[torch.Tensor], temperature: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Cosine logits of every local embedding against every embedding of the global batch.

    Row ``v * B + i`` is view ``v`` of local sample ``i``; column ``v * N + g`` is view ``v`` of
    global sample ``g`` (``N`` = global batch, ranks in order). Self-similarities are ``-inf``.
    Returns the logits, the global indices of the local samples, and ``N``.
    """
    z = [l2_normalize(upcast(v)) for v in views]
    anchors = torch.cat(z)
    candidates = torch.cat([distributed.gather_with_grad(v) for v in z])
    n_views, batch = len(z), z[0].shape[0]
    n_global = candidates.shape[0] // n_views
    instance = distributed.rank() * batch + torch.arange(batch, device=anchors.device)
    self_col = (torch.arange(n_views, device=anchors.device)[:, None] * n_global + instance).flatten()
    logits = anchors @ candidates.T / temperature
    is_self = F.one_hot(self_col, num_classes=candidates.shape[0]).bool()
    return logits.masked_fill(is_self, float("-inf")), instance, n_global


def _check_views(views: Sequence[torch.Tensor], temperature: float) -> None:
    if len(views) < 2:
        raise ValueError(f"need at least 2 views per image, got {len(views)}")
    check_embeddings(**{f"views[{v}]": view for v, view in enumerate(views)})
    check_positive("temperature", temperature)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, per_view: bool = False) -> torch.Tensor:
    """NT-Xent of SimCLR (Chen et al. 2020, Eq. 1), one value per local sample.

    Cosine similarity over the ``2N`` embeddings of the *global* batch (all ranks, gathered with
    gradient): each of the two views of a sample is an anchor whose positive is the other view and
    whose negatives are the other ``2N - 2`` embeddings. Entry ``i`` is the mean of the two
    anchors' losses, so ``.mean()`` over all samples is the paper's ``L = 1/(2N) sum_k l(k)``.

    Args:
        z1, z2: ``B x D`` projections of the two views (any norm; they are L2-normalised here).
            Every rank must hold the same ``B`` (``drop_last=True``).
        temperature: tau in Eq. 1. 0.5 is SimCLR's CIFAR-10 value (Appendix B.9); its ImageNet
            runs at batch 4096 use 0.1 (Table 5 compares tau). A lower tau weights hard negatives
            more and suits large batches and many classes; small batches favour 0.2-0.5.
        per_view: return the ``2 x B`` per-anchor losses (row ``v``: view ``v`` as the anchor),
            for view weights (UOTA); their mean over rows is the default output.

    Returns:
        ``B`` per-sample losses (float32 or float64), or ``2 x B`` with ``per_view``.
    """
    check_embeddings(z1=z1, z2=z2)
    check_positive("temperature", temperature)
    with full_precision(z1.device):
        logits, instance, n_global = _multi_view_logits([z1, z2], temperature)
        positive = torch.cat([instance + n_global, instance])
        per_anchor = F.cross_entropy(logits, positive, reduction="none")
    per_anchor = per_anchor.view(2, -1)
    return per_anchor if per_view else per_anchor.mean(0)


def nt_xent_multi(views: Sequence[torch.Tensor], temperature: float = 0.5, per_view: bool = False) -> torch.Tensor:
    """Multi-positive NT-Xent for ``V >= 2`` views per image, one value per local sample.

    Every embedding of the global batch is an anchor; its positives are the ``V - 1`` other views
    of the same image and its denominator all ``V N - 1`` other embeddings. The anchor's loss is
    the mean over its positives of ``-log softmax`` (Khosla et al. 2020, Eq. 2, "L_out", with
    instance labels as the classes); entry ``i`` is the mean over the ``V`` anchors of sample
    ``i``. With two views this equals :func:`nt_xent`. Averaging per positive (not summing) keeps
    the scale comparable across ``V``; this is Khosla et al.'s choice, SimCLR does not define it.

    Args:
        views: ``V`` tensors of shape ``B x D`` (L2-normalised here), same ``B`` on every rank.
        temperature: tau, as for :func:`nt_xent`.
        per_view: return the ``V x B`` per-anchor losses instead of their mean over views.
    """
    _check_views(views, temperature)
    n_views = len(views)
    with full_precision(views[0].device):
        logits, instance, n_global = _multi_view_logits(views, temperature)
        others = torch.tensor([[w for w in range(n_views) if w != v] for v in range(n_views)], device=logits.device)
        positive = (others[:, None, :] * n_global + instance[None, :, None]).flatten(0, 1)
        log_prob = logits.log_softmax(dim=1).gather(1, positive)
    per_anchor = -log_prob.mean(1).view(n_views, -1)
    return per_anchor if per_view else per_anchor.mean(0)
