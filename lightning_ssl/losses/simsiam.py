"""SimSiam's negative cosine similarity with stop-gradient, per sample."""

from __future__ import annotations

import torch

from lightning_ssl.helpers import check_embeddings, l2_normalize, upcast


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``D(p, stopgrad(z)) = -p/||p|| . z/||z||`` (Chen & He 2021, Eq. 1 and Eq. 3), per sample.

    ``z`` is detached, so no gradient reaches it. The symmetrised SimSiam loss
    ``1/2 D(p1, z2) + 1/2 D(p2, z1)`` (Eq. 2) is the caller's job. Values lie in ``[-1, 1]``.

    Args:
        p: ``B x D`` predictor outputs.
        z: ``B x D`` projector outputs of the other view.
    """
    check_embeddings(p=p, z=z)
    p, z = upcast(p), upcast(z.detach())
    return -(l2_normalize(p) * l2_normalize(z)).sum(dim=1)
