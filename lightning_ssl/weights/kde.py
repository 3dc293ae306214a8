"""Label-free sample weights from a kernel density estimate (rwSAM, Liu et al. ICLR 2022 §4).

The paper weights rare examples up, estimating rarity by KDE "on top of the representations";
its KDE script is unreleased, so this follows docs/methods.md §9.3's faithful-in-spirit recipe:
Gaussian kernel on L2-normalised features, self excluded, bandwidth by the median heuristic,
``w = density ** -alpha`` normalised to mean 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def median_bandwidth(features: Tensor, max_points: int = 4096, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of L2-normalised features (Gretton et al. 2012's
    median heuristic), on a seeded subsample of at most ``max_points`` rows."""
    z = F.normalize(features.float(), dim=1)
    if z.shape[0] > max_points:
        g = torch.Generator(device="cpu").manual_seed(seed)
        z = z[torch.randperm(z.shape[0], generator=g)[:max_points].to(z.device)]
    d = torch.cdist(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    return float(torch.quantile(d[iu[0], iu[1]], 0.5).clamp_min(1e-6))


def log_kde_density(features: Tensor, bandwidth: float | None = None, chunk_size: int = 2048) -> Tensor:
    """``log p_j`` with ``p_j = 1/(n-1) sum_{i != j} exp(-||z_j - z_i||^2 / (2 h^2))``.

    Features are L2-normalised; computed chunk by chunk (memory ``chunk_size × N``) with a
    log-sum-exp so that small bandwidths do not underflow.
    """
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"a KDE needs at least 2 samples, got {n}")
    h = median_bandwidth(features) if bandwidth is None else float(bandwidth)
    if h <= 0:
        raise ValueError(f"kde bandwidth={h} must be > 0")
    z = F.normalize(features.float(), dim=1)
    out = torch.empty(n, device=z.device)
    for start in range(0, n, chunk_size):
        q = z[start : start + chunk_size]
        sq = (2.0 - 2.0 * q @ z.T).clamp_min(0.0)  # ||a - b||^2 of unit vectors
        logk = -sq / (2.0 * h * h)
        rows = torch.arange(q.shape[0], device=z.device)
        logk[rows, rows + start] = float("-inf")  # self excluded
        out[start : start + q.shape[0]] = torch.logsumexp(logk, dim=1) - math.log(n - 1)
    return out


def density_weights(log_density: Tensor, alpha: float = 0.5) -> Tensor:
    """``w_j ∝ p_j ** -alpha`` normalised to mean 1 (computed in log space)."""
    if alpha < 0:
        raise ValueError(f"kde alpha={alpha} must be >= 0")
    logw = -alpha * log_density
    w = torch.exp(logw - logw.max())
    return w / w.mean()


def label_exp_weights(target: Tensor, base: float = 1.2) -> Tensor:
    """The official rwSAM CIFAR script's oracle weights ``base ** y`` (docs/methods.md §9.3).

    USES LABELS: meaningful only where class index grows with rarity (LDAM's CIFAR-LT order);
    provided so that the released numbers can be compared, not as the label-free method.
    """
    if (target < 0).any():
        raise ValueError("label_exp weights need labels, but the batch has target -1 (unlabeled data)")
    return torch.pow(torch.as_tensor(base, dtype=torch.float32, device=target.device), target.float())
