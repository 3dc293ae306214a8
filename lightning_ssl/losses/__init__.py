"""Loss functions: plain functions returning per-sample (or per-view) losses.

Each returns one value per local sample (``B``), or per view and sample (``V x B`` for SwAV), so
that the method base can reduce them with optional sample weights (rwSAM) or view weights (UOTA).
Cross-rank negatives and Sinkhorn sums go through :mod:`lightning_ssl.distributed`.
"""

from lightning_ssl.losses.contrastive import nt_xent, nt_xent_multi
from lightning_ssl.losses.distill import regression_distill
from lightning_ssl.losses.moco import info_nce_in_batch, info_nce_with_queue
from lightning_ssl.losses.mttv import masked_nt_xent
from lightning_ssl.losses.simsiam import negative_cosine
from lightning_ssl.losses.swav import sinkhorn_knopp, swav_loss

__all__ = [
    "info_nce_in_batch",
    "info_nce_with_queue",
    "masked_nt_xent",
    "negative_cosine",
    "nt_xent",
    "nt_xent_multi",
    "regression_distill",
    "sinkhorn_knopp",
    "swav_loss",
]
