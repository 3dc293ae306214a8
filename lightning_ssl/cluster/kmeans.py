"""k-means for Divide-and-Contrast's clustering stage (Tian, Hénaff & van den Oord, ICCV 2021).

DnC clusters the 4096-d hidden layer of the base model's projector once, with "vanilla k-means
with cosine distance" (spherical k-means: Lloyd iterations on L2-normalised features, centroids
re-normalised after each update) into K = 5 or 10 clusters (the paper's clustering stage,
summarised in docs/methods.md §6.2).

Three backends with one contract: FAISS on the GPU, FAISS on the CPU, and a pure-torch fallback
that runs on the features' device. Only the Lloyd iterations differ between them: the seeded
subsampling, the greedy k-means++ seeding, the final assignment and the objective are the same
torch code for every backend, so their results are directly comparable.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed

log = logging.getLogger(__name__)

BACKENDS = ("faiss-gpu", "faiss-cpu", "torch")
# Elements of the N×K score matrix computed at once (64 MiB of float32); our choice.
_SCORE_BUDGET = 1 << 24


@dataclass
class KMeansResult:
    """Outcome of one k-means run.

    ``objective`` is the mean cosine similarity of each sample to its assigned centroid when
    spherical (higher is better), else the mean squared Euclidean distance (lower is better).
    """

    centroids: Tensor
    assignments: Tensor
    backend: str
    objective: float


def _import_faiss() -> Any:
    import faiss  # noqa: PLC0415 (optional at run time: the torch backend works without it)

    return faiss


def _faiss_gpu_problem() -> str | None:
    """Why faiss-gpu cannot run here, or None when it can."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    try:
        faiss = _import_faiss()
    except ImportError:
        return "faiss is not installed"
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return "the installed faiss has no GPU support"
    return None


def available_backends() -> list[str]:
    """Backends that can run in this environment, in the order ``backend="auto"`` prefers them."""
    found = []
    if _faiss_gpu_problem() is None:
        found.append("faiss-gpu")
    try:
        _import_faiss()
        found.append("faiss-cpu")
    except ImportError:
        pass
    found.append("torch")
    return found


def _resolve_backend(backend: str) -> str:
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"backend={backend!r} is not one of {['auto', *BACKENDS]}")
    if backend == "auto":
        return available_backends()[0]
    if backend == "faiss-gpu" and (problem := _faiss_gpu_problem()) is not None:
        raise RuntimeError(
            f"k-means backend 'faiss-gpu' is unavailable ({problem}); install it with "
            "pip install 'lightning-ssl[gpu]' on a CUDA machine, or use backend='auto'"
        )
    if backend == "faiss-cpu" and "faiss-cpu" not in available_backends():
        raise RuntimeError(
            "k-means backend 'faiss-cpu' is unavailable (faiss does not import); faiss-cpu is a "
            "core dependency: reinstall with pip install lightning-ssl (or pip install faiss-cpu)"
        )
    return backend


def _validate(features: Tensor, k: int, iterations: int, max_points_per_centroid: int | None) -> None:
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must be a non-empty N×D matrix, got shape {tuple(features.shape)}")
    n = features.shape[0]
    if k < 1 or k > n:
        raise ValueError(
            f"k={k} clusters requested for N={n} samples; k must be in [1, {n}] "
            "(DnC with more clusters than samples is undefined)"
        )
    if iterations < 1:
        raise ValueError(f"iterations={iterations} must be >= 1")
    if max_points_per_centroid is not None and max_points_per_centroid < 1:
        raise ValueError(f"max_points_per_centroid={max_points_per_centroid} must be >= 1 or None")
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or Inf; k-means needs finite features")


@torch.no_grad()
def assign(x: Tensor, centroids: Tensor, spherical: bool, chunk_rows: int | None = None) -> tuple[Tensor, Tensor]:
    """Nearest centroid of each row, in chunks of rows so that N×K never materialises at once.

    Returns ``(labels, score)``: ``score`` is the cosine similarity to the assigned centroid when
    ``spherical`` (rows and centroids assumed L2-normalised), else the squared distance to it.
    """
    k = centroids.shape[0]
    chunk = chunk_rows or max(1024, _SCORE_BUDGET // k)
    c_sq = torch.linalg.vector_norm(centroids, dim=1).square()
    labels, scores = [], []
    for rows in x.split(chunk):
        dots = rows @ centroids.T
        if spherical:
            score, label = dots.max(dim=1)
        else:
            r_sq = torch.linalg.vector_norm(rows, dim=1).square()
            dist = (r_sq[:, None] - 2 * dots + c_sq[None, :]).clamp_min_(0)
            score, label = dist.min(dim=1)
        labels.append(label)
        scores.append(score)
    return torch.cat(labels), torch.cat(scores)


@torch.no_grad()
def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; greedy variant as in scikit-learn).

    Each new centre is the best, by the resulting potential sum(D²), of ``2 + ln k`` candidates
    drawn with probability ∝ D² (scikit-learn's trial count; plain k-means++ too often misses a
    small cluster, which long-tailed data always has). ``generator`` is a CPU generator; its
    draws are mapped to the device by inverse-CDF search, so a seed gives the same centres on a
    given device.
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    x_sq = torch.linalg.vector_norm(x, dim=1).square()
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [first]
    d2 = _sq_dists(x, x_sq, x[[first]])[:, 0]
    for _ in range(1, k):
        cdf = d2.cumsum(0)
        u = torch.rand(trials, generator=generator, dtype=torch.float64)
        if float(cdf[-1]) > 0:
            candidates = torch.searchsorted(cdf, (u * cdf[-1].cpu()).to(x.device)).clamp_(max=n - 1)
        else:  # every point coincides with a chosen centre (duplicated data)
            candidates = (u * n).long().clamp_(max=n - 1).to(x.device)
        new_d2 = torch.minimum(d2[:, None], _sq_dists(x, x_sq, x[candidates]))
        best = int(new_d2.sum(0).argmin())
        centres.append(int(candidates[best]))
        d2 = new_d2[:, best]
    return x[centres].clone()


def _sq_dists(x: Tensor, x_sq: Tensor, points: Tensor) -> Tensor:
    """N×P float64 squared distances of the rows of ``x`` to a few ``points`` (no N×D temporary)."""
    d2 = x_sq[:, None] - 2 * (x @ points.T) + points.square().sum(1)[None, :]
    return d2.clamp_min_(0).double()


def _cluster_sums(x: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-cluster sums and counts; one-hot matmul on accelerators (atomics-free: deterministic)."""
    counts = torch.bincount(labels, minlength=k)
    if x.device.type == "cpu":
        return x.new_zeros(k, x.shape[1]).index_add_(0, labels, x), counts
    sums = x.new_zeros(k, x.shape[1])
    chunk = max(1024, _SCORE_BUDGET // k)
    for rows, lab in zip(x.split(chunk), labels.split(chunk)):
        sums += F.one_hot(lab, k).to(x.dtype).T @ rows
    return sums, counts


@torch.no_grad()
def lloyd(x: Tensor, centroids: Tensor, iterations: int, spherical: bool) -> Tensor:
    """Lloyd iterations from ``centroids``; stops early when the assignment no longer changes.

    An empty cluster is re-seeded at the point farthest from its own centroid (largest squared
    distance, or lowest cosine similarity when ``spherical``); our choice, as in FAISS the aim is
    to never return fewer than K used centroids.
    """
    previous = None
    for _ in range(iterations):
        labels, score = assign(x, centroids, spherical)
        if previous is not None and torch.equal(labels, previous):
            break
        previous = labels
        sums, counts = _cluster_sums(x, labels, centroids.shape[0])
        centroids = sums / counts.clamp_min(1)[:, None].to(x.dtype)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel() > 0:
            farthest = torch.topk(-score if spherical else score, empty.numel()).indices
            centroids[empty] = x[farthest]
        if spherical:
            centroids = F.normalize(centroids, dim=1)
    return centroids


def _training_rows(x: Tensor, k: int, mpc: int | None, generator: torch.Generator) -> Tensor:
    """All rows, or a seeded random subset of ``k * mpc`` rows when there are more."""
    if mpc is None or x.shape[0] <= k * mpc:
        return x
    subset = torch.randperm(x.shape[0], generator=generator)[: k * mpc].sort().values
    return x[subset.to(x.device)]


def faiss_lloyd(x: Tensor, centroids: Tensor, iterations: int, spherical: bool, gpu: bool, seed: int = 0) -> Tensor:
    """FAISS's Lloyd iterations (``faiss.Clustering``) from the given initial ``centroids``.

    FAISS re-seeds an empty cluster by splitting a large one (``seed`` drives that choice); on the
    GPU it uses the features' CUDA device (else the current one).
    """
    faiss = _import_faiss()
    k, d = centroids.shape
    cp = faiss.ClusteringParameters()
    cp.niter = iterations
    cp.seed = seed
    cp.spherical = spherical
    cp.min_points_per_centroid = 1  # silence FAISS's "please provide at least 39*k points" notice
    cp.max_points_per_centroid = x.shape[0] // k + 1  # subsampling is done before, by us
    clus = faiss.Clustering(d, k, cp)
    faiss.copy_array_to_vector(centroids.cpu().contiguous().numpy().ravel(), clus.centroids)
    if gpu:
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = x.device.index if x.is_cuda else torch.cuda.current_device()
        resources = faiss.StandardGpuResources()
        index = (faiss.GpuIndexFlatIP if spherical else faiss.GpuIndexFlatL2)(resources, d, cfg)
    else:
        index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
    clus.train(x.cpu().contiguous().numpy(), index)
    trained = faiss.vector_to_array(clus.centroids).reshape(k, d)
    return torch.from_numpy(trained).to(x.device)


@torch.no_grad()
def kmeans(
    features: Tensor,
    k: int,
    iterations: int = 20,
    seed: int = 0,
    spherical: bool = True,
    backend: str = "auto",
    max_points_per_centroid: int | None = None,
    n_init: int = 1,
) -> KMeansResult:
    """Cluster the rows of ``features`` (N×D) into ``k`` clusters, keeping the best of ``n_init`` starts.

    Args:
        features: N×D features (DnC: the projector's hidden layer on centre-crop views).
        k: number of clusters, 1 ≤ k ≤ N. DnC uses K = 5 or 10 (docs/methods.md §6.2).
        iterations: Lloyd iterations. The paper is silent; 20 is our choice (FAISS uses 25).
        seed: seeds the initialisation and any subsampling; same seed, same result (torch backend).
        spherical: cosine-distance k-means on L2-normalised features, as in DnC; False gives
            plain Euclidean k-means.
        backend: "auto" (faiss-gpu if usable, else faiss-cpu, else torch), or one of those names.
        max_points_per_centroid: fit the centroids on a seeded random subset of at most
            k × this many samples, then assign every sample (DnC fits on a 1.5M-image subset of
            JFT/YFCC, docs/methods.md §6.2). None fits on all samples.
        n_init: independent starts (k-means++ seeding and Lloyd iterations, start ``i`` seeded
            with ``seed + i``); the one with the best objective over all N samples is kept
            (highest mean cosine similarity when spherical, lowest mean squared distance
            otherwise; the earlier start on a tie), as scikit-learn's ``n_init`` and FAISS's
            ``nredo``. 1 (the default) is a single start, as both libraries' defaults.
    """
    _validate(features, k, iterations, max_points_per_centroid)
    if n_init < 1:
        raise ValueError(f"n_init={n_init} must be >= 1 (the number of k-means starts)")
    chosen = _resolve_backend(backend)
    x = features.detach().float()
    if spherical:
        x = F.normalize(x, dim=1)
    best: KMeansResult | None = None
    for start in range(n_init):
        generator = torch.Generator().manual_seed(seed + start)
        train = _training_rows(x, k, max_points_per_centroid, generator)
        init = kmeans_plus_plus(train, k, generator)
        if chosen == "torch":
            centroids = lloyd(train, init, iterations, spherical)
        else:
            centroids = faiss_lloyd(train, init, iterations, spherical, chosen == "faiss-gpu", seed + start)
        if spherical:
            centroids = F.normalize(centroids, dim=1)
        labels, score = assign(x, centroids, spherical)
        objective = float(score.double().mean())
        log.info(
            "k-means (%s) start %d/%d: N=%d D=%d K=%d spherical=%s objective=%.6f",
            chosen,
            start + 1,
            n_init,
            x.shape[0],
            x.shape[1],
            k,
            spherical,
            objective,
        )
        if best is None or (objective > best.objective if spherical else objective < best.objective):
            best = KMeansResult(centroids=centroids, assignments=labels.long(), backend=chosen, objective=objective)
    assert best is not None
    return best


@torch.no_grad()
def distributed_kmeans(
    local_features: Tensor, k: int, replicated: bool = False, **kw: Any
) -> tuple[KMeansResult, Tensor]:
    """k-means over the union of every rank's rows, clustered once on rank 0.

    Rows are gathered in rank order (``lightning_ssl.distributed.all_gather``; shards may differ in
    size), rank 0 runs :func:`kmeans` with ``**kw``, and its centroids, assignments, objective and
    backend are broadcast, so every rank holds the identical result. Returns ``(result,
    local_assignments)``: the full result and the assignments of this rank's own rows.

    ``replicated=True`` says that every rank already holds all the rows, identically (the output of
    :func:`~lightning_ssl.eval.features.extract_features`, which gathers): nothing is gathered,
    rank 0 clusters them and broadcasts, and the local assignments are all N of them.
    """
    if not distributed.is_distributed():
        result = kmeans(local_features, k, **kw)
        return result, result.assignments
    device = local_features.device
    if replicated:
        sizes = None
        gathered = local_features.detach().float()
    else:
        sizes = distributed.all_gather(torch.tensor([local_features.shape[0]], device=device))
        gathered = distributed.all_gather(local_features.detach().float())
    n, d = gathered.shape
    _validate(gathered, k, kw.get("iterations", 1), kw.get("max_points_per_centroid"))
    centroids = torch.empty(k, d, device=device)
    labels = torch.empty(n, dtype=torch.long, device=device)
    # (succeeded, objective, backend index): a failure on rank 0 must not leave the others waiting
    meta = torch.zeros(3, dtype=torch.float64, device=device)
    error: Exception | None = None
    if distributed.rank() == 0:
        try:
            result = kmeans(gathered, k, **kw)
            centroids.copy_(result.centroids)
            labels.copy_(result.assignments)
            meta = torch.tensor(
                [1.0, result.objective, BACKENDS.index(result.backend)],
                dtype=torch.float64,
                device=device,
            )
        except Exception as exc:  # re-raised below, after telling the other ranks
            error = exc
    distributed.broadcast(meta)
    if error is not None:
        raise error
    if meta[0] != 1.0:
        raise RuntimeError("k-means failed on rank 0 (see its traceback)")
    distributed.broadcast(centroids)
    distributed.broadcast(labels)
    result = KMeansResult(centroids, labels, BACKENDS[int(meta[2])], float(meta[1]))
    if sizes is None:
        return result, labels
    start = int(sizes[: distributed.rank()].sum())
    return result, labels[start : start + local_features.shape[0]]
