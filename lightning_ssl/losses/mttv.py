"""MTTV's NT-Xent with "extreme-feature" masking (Sharma & Padmanabhan 2025), clean version."""

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


def masked_nt_xent(
    u: torch.Tensor,
    v: torch.Tensor,
    temperature: float = 0.3,
    low: float = 0.1,
    high: float = 0.9,
    mask_positive: bool = False,
    log_of_mean: bool = False,
) -> torch.Tensor:
    """NT-Xent over the global batch in which extreme similarities drop out (docs/methods.md §8.3).

    The ``2N`` embeddings ``u_1..u_N, v_1..v_N`` of all ranks are each an anchor; an anchor's
    positive is the other side of its pair. A similarity ``S`` (cosine) is *extreme* when
    ``|S| > high`` or ``|S| < low``; extreme negatives are removed from the denominator. The anchor
    itself is always excluded. Per anchor ``a`` with positive ``p``:

        ratio_a = exp(S_ap / t) / (exp(S_ap / t) + sum_{n != a, p; not extreme} exp(S_an / t))

    Default (the clean re-implementation recommended in docs/methods.md §8.3): the positive is
    never masked and the loss is the mean of ``-log ratio_a``; entry ``i`` is the mean over the
    anchors ``u_i`` and ``v_i``, so ``.mean()`` is the loss over the global batch.

    Replicating the official code's choices:

    * ``mask_positive=True``: an extreme positive is removed from numerator and denominator, so
      its ratio is 0. With mean-of-logs that anchor's loss is set to 0 (it drops out of the
      sum but still counts in the mean), since ``-log 0`` has no finite value.
    * ``log_of_mean=True``: the official ``L = -log(1/(2N) sum_a ratio_a)``, one number for the
      whole global batch, not a sum of per-sample terms. It is returned broadcast to ``B`` on
      every rank, so ``.mean()`` is ``L`` (and DDP's gradient averaging then gives ``dL``);
      sample weights cannot act on it per sample.

    The official code's other quirk is not replicated: with ``high < 1`` the self-similarity
    (``= 1``) is already masked, yet it subtracts ``exp(1/t)`` from the denominator again, which
    can make the denominator negative on small batches. With ``high >= 1`` both agree.

    Args:
        u: ``B x D`` fused query-side embeddings (with gradient), L2-normalised here.
        v: ``B x D`` fused key-side embeddings (EMA encoder, no gradient in MTTV), same ``B`` on
            every rank.
        temperature: t; 0.3 is the official config (``training.temperature``).
        low, high: lambda_l and lambda_h of the official CIFAR config (0.1, 0.9). For ImageNet the
            official code keeps only the ``low`` mask: pass ``high >= 1``. ``low = 0`` disables the
            low mask. Need ``0 <= low < high``.
        mask_positive: also mask an extreme positive (official behaviour).
        log_of_mean: official log-of-mean reduction (see above).
    """
    check_embeddings(u=u, v=v)
    check_positive("temperature", temperature)
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= low < high, got low={low!r}, high={high!r}")
    with full_precision(u.device):
        z = [l2_normalize(upcast(u)), l2_normalize(upcast(v))]
        anchors = torch.cat(z)
        candidates = torch.cat([distributed.gather_with_grad(side) for side in z])
        batch, n_global = z[0].shape[0], candidates.shape[0] // 2
        instance = distributed.rank() * batch + torch.arange(batch, device=anchors.device)
        self_col = torch.cat([instance, instance + n_global])
        pos_col = torch.cat([instance + n_global, instance])
        sim = anchors @ candidates.T
        with torch.no_grad():
            extreme = (sim.abs() > high) | (sim.abs() < low)
            is_pos = F.one_hot(pos_col, num_classes=2 * n_global).bool()
            is_self = F.one_hot(self_col, num_classes=2 * n_global).bool()
            pos_kept = ~(extreme & is_pos).any(dim=1) | (not mask_positive)
            # the positive stays in every softmax, so a dropped anchor's log-ratio stays finite
            keep = (~extreme | is_pos) & ~is_self
        logits = (sim / temperature).masked_fill(~keep, float("-inf"))
        log_ratio = logits.gather(1, pos_col[:, None]).squeeze(1) - logits.logsumexp(dim=1)
        if not log_of_mean:
            per_anchor = torch.where(pos_kept, -log_ratio, torch.zeros_like(log_ratio))
            return per_anchor.view(2, -1).mean(0)
        ratio = torch.where(pos_kept, log_ratio.exp(), torch.zeros_like(log_ratio))
        loss = -distributed.gather_with_grad(ratio).mean().log()
        return loss.expand(batch)
