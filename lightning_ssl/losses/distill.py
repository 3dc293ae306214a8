"""DnC's regression distillation loss (Tian et al. 2021), per sample."""

from __future__ import annotations

import torch

from lightning_ssl.helpers import check_embeddings, l2_normalize, upcast


def regression_distill(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/2 ||pred - target/||target|| ||^2`` per sample (Tian et al. 2021, distillation stage;
    docs/methods.md §6.4).

    The teacher's target is L2-normalised and detached; the student's regression-head output is
    *not* normalised (normalising it gives 75.4 vs 75.8 top-1, docs/methods.md §6.4). DnC's loss
    per view sums this over the base teacher and the image's cluster expert; that sum is the
    caller's job.

    Args:
        pred: ``B x D`` outputs of a regression head of the student.
        target: ``B x D`` projector outputs of the frozen teacher on the same view.
    """
    check_embeddings(pred=pred, target=target)
    pred = upcast(pred)
    target = l2_normalize(upcast(target.detach())).to(pred.dtype)
    return 0.5 * (pred - target).pow(2).sum(dim=1)
