"""UOTA's view weights (Wang et al., "Improving Self-supervised Learning with Automated
Unsupervised Outlier Arbitration", NeurIPS 2021; docs/methods.md §7.2).

Each view's deviation from its image's centre (the mean of the reference views) is scored by a
Mahalanobis distance under one covariance shared by the whole global batch; views far out get
small weights through a softmax over all views of all images. The official code forms an
``MN x MN`` matrix and takes its diagonal; here the distance is a row-wise quadratic form.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed

if TYPE_CHECKING:
    from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod


def _check_ref_views(ref_views: Sequence[int], n_views: int) -> tuple[int, ...]:
    refs = tuple(int(r) for r in ref_views)
    if not refs or len(set(refs)) != len(refs) or not all(0 <= r < n_views for r in refs):
        raise ValueError(f"ref_views must be distinct view indices in [0, {n_views - 1}], got {tuple(ref_views)}")
    return refs


@torch.no_grad()
def uota_view_weights(
    embeddings: Tensor,
    ref_views: Sequence[int] = (0, 1),
    tau: float = 350.0,
    eps: float = 1e-8,
) -> Tensor:
    """UOTA weights ``V x B`` of the local views, normalised over the global batch (docs/methods.md §7.2).

    With ``e_iv`` the L2-normalised embedding of view ``v`` of image ``i``:

    1. centre ``mu_i = mean_{r in ref_views} e_ir`` (the two global crops);
    2. deviations ``delta_iv = e_iv - mu_i`` for every view, reference views included;
    3. ``Sigma = 1/(V N) sum_{i,v} delta_iv delta_iv^T + eps I`` over the global batch of ``N``
       images (deviations all-gathered from every rank; no mean subtracted; re-estimated per call);
    4. ``d_iv = delta_iv^T Sigma^-1 delta_iv / tau`` (Eq. M.9-M.10);
    5. ``w_iv = V N exp(-d_iv) / sum_{all i', v'} exp(-d_i'v')`` (Eq. M.11): mean 1 over the
       global batch. Each rank returns its own slice.

    Runs without gradient. The covariance solve and the distances are computed in float64: with
    fewer global views than dimensions ``Sigma`` is singular up to ``eps``, and float32 would lose
    all precision in the solve (the deviations lie in Sigma's range, so the distances stay finite).

    Args:
        embeddings: ``V x B x D`` per-view embeddings of the local batch (normalised here; SwAV's
            are already unit-norm). Ranks may hold different ``B``.
        ref_views: views whose mean is the image's centre (SwAV's two 224 crops: (0, 1)).
        tau: temperature tau_u of the distance (350, official code; a typical
            ``d * tau`` is about ``D``, so the weights are soft).
        eps: ridge on the covariance (1e-8, official code).

    Returns:
        ``V x B`` weights in the dtype of ``embeddings`` (float32 at least).
    """
    if embeddings.ndim != 3:
        raise ValueError(f"embeddings must be V x B x D, got shape {tuple(embeddings.shape)}")
    if tau <= 0 or eps < 0:
        raise ValueError(f"need tau > 0 and eps >= 0, got tau={tau}, eps={eps}")
    n_views, batch, dim = embeddings.shape
    refs = _check_ref_views(ref_views, n_views)
    out_dtype = torch.promote_types(embeddings.dtype, torch.float32)
    e = F.normalize(embeddings.to(torch.float64), dim=-1)
    delta = e - e[list(refs)].mean(dim=0, keepdim=True)  # V x B x D
    local = delta.transpose(0, 1).reshape(batch, n_views * dim)  # B x (V D), rows are images
    rows = distributed.all_gather(local).reshape(-1, dim)  # (N V) x D over the global batch
    cov = rows.T @ rows / rows.shape[0] + eps * torch.eye(dim, dtype=rows.dtype, device=rows.device)
    d_all = (rows * torch.linalg.solve(cov, rows.T).T).sum(dim=1) / tau
    flat = delta.reshape(-1, dim)
    d_local = (flat * torch.linalg.solve(cov, flat.T).T).sum(dim=1) / tau
    log_w = -d_local - torch.logsumexp(-d_all, dim=0) + math.log(d_all.numel())
    return log_w.exp().view(n_views, batch).to(out_dtype)


class UOTAWeighter:
    """A ``loss_weighters`` entry that applies UOTA's view weights from ``start_epoch`` on.

    Returns ``None`` (no weights) before ``start_epoch`` (0-based; the official run switches on at
    epoch index 100 of 200, docs/methods.md §7.3), then :func:`uota_view_weights` of the method's
    ``LossOutput.embeddings``, which must be ``V x B x D`` with the same ``V`` as the ``V x B``
    losses. The weights multiply the loss of each *predicted* view (Eq. M.12).
    """

    def __init__(self, tau: float = 350.0, start_epoch: int = 100, ref_views: Sequence[int] = (0, 1)) -> None:
        if tau <= 0:
            raise ValueError(f"UOTA tau={tau} must be > 0")
        if start_epoch < 0:
            raise ValueError(f"UOTA start_epoch={start_epoch} must be >= 0")
        if len(ref_views) < 1:
            raise ValueError(f"UOTA ref_views={tuple(ref_views)} must name at least one view")
        self.tau = float(tau)
        self.start_epoch = int(start_epoch)
        self.ref_views = tuple(int(r) for r in ref_views)
        self._warned = False

    def __call__(self, module: SSLMethod, batch: Batch, out: LossOutput) -> Tensor | None:
        if module.current_epoch < self.start_epoch:
            return None
        emb = out.embeddings
        if emb is None or emb.ndim != 3:
            raise ValueError(
                f"UOTA needs V x B x D embeddings from {type(module).__name__}.compute_losses, "
                f"got {None if emb is None else tuple(emb.shape)}"
            )
        if out.losses.ndim != 2 or out.losses.shape != emb.shape[:2]:
            raise ValueError(
                f"UOTA needs V x B per-view losses matching the embeddings {tuple(emb.shape[:2])}, "
                f"got losses of shape {tuple(out.losses.shape)}"
            )
        if set(range(emb.shape[0])) <= set(self.ref_views) and not self._warned:
            warnings.warn(
                f"UOTA with {emb.shape[0]} views, all of them reference views {self.ref_views}: with two "
                "views the deviations are +-(e1 - e2)/2, both views of an image get the same weight and "
                "UOTA only re-weights images (docs/methods.md §7.5); use multi-crop (--model.num_small_views 6)",
                stacklevel=2,
            )
            self._warned = True
        return uota_view_weights(emb, self.ref_views, self.tau)
