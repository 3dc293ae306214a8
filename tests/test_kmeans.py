"""k-means for DnC's clustering stage: hand-computed cases, brute force, faiss parity, gloo ranks."""

from __future__ import annotations

import logging
import math
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from lightning_ssl.cluster import available_backends, distributed_kmeans, kmeans
from lightning_ssl.cluster.kmeans import assign, lloyd

BACKENDS = available_backends()
FAISS_BACKENDS = [b for b in BACKENDS if b.startswith("faiss")]


def ari(truth: torch.Tensor, found: torch.Tensor) -> float:
    from sklearn.metrics import adjusted_rand_score  # here: keeps the spawned ranks' import light

    return adjusted_rand_score(truth.numpy(), found.numpy())


def blobs(sizes: list[int], dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Well-separated Gaussian blobs: centres at radius 3 (pairwise ≥ 3.7 apart), σ = 0.05."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(sizes), dim, generator=g), dim=1) * 3
    x = torch.cat([c + noise * torch.randn(n, dim, generator=g) for c, n in zip(centres, sizes)])
    y = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spherical", [True, False])
@pytest.mark.parametrize("sizes", [[60] * 5, [200, 80, 30, 12, 5]], ids=["balanced", "long-tailed"])
def test_recovers_well_separated_blobs(backend, spherical, sizes):
    x, y = blobs(sizes)
    for seed in range(3):
        result = kmeans(x, len(sizes), seed=seed, spherical=spherical, backend=backend)
        assert result.backend == backend
        assert ari(y, result.assignments) == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_euclidean(backend):
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    result = kmeans(x, 2, spherical=False, backend=backend)
    order = result.centroids[:, 0].argsort()
    assert torch.allclose(result.centroids[order, 0], torch.tensor([0.5, 10.5]))
    assert result.assignments.tolist() == [order[0].item()] * 2 + [order[1].item()] * 2
    assert result.assignments.dtype == torch.int64
    assert result.objective == pytest.approx(0.25)  # every point 0.5 from its centre


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_spherical(backend):
    """Directions 0°, 20° (cluster A) and 90°, 110° (B), with arbitrary norms: norms must not matter."""
    deg = torch.tensor([0.0, 20.0, 90.0, 110.0]) * math.pi / 180
    norms = torch.tensor([3.0, 0.5, 1.0, 7.0])
    x = torch.stack([deg.cos(), deg.sin()], dim=1) * norms[:, None]
    result = kmeans(x, 2, spherical=True, backend=backend)
    angles = torch.atan2(result.centroids[:, 1], result.centroids[:, 0]) * 180 / math.pi
    assert torch.allclose(angles.sort().values, torch.tensor([10.0, 100.0]), atol=1e-4)
    assert torch.allclose(result.centroids.norm(dim=1), torch.ones(2))
    assert result.objective == pytest.approx(math.cos(math.radians(10)), abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_converged_result_is_a_lloyd_fixed_point(backend):
    """Brute force: every row is assigned to its most cosine-similar centroid, and every centroid
    is the normalised mean of its rows (spherical k-means' stationarity conditions)."""
    x, _ = blobs([40, 30, 20], dim=8, noise=0.3, seed=1)
    result = kmeans(x, 3, iterations=50, backend=backend)
    xn = x / x.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(len(xn)):
        sims = [float(xn[i] @ c) for c in result.centroids]
        assert result.assignments[i].item() == max(range(3), key=lambda j: sims[j])
        total += max(sims)
    assert result.objective == pytest.approx(total / len(xn), abs=1e-6)
    for j in range(3):
        members = xn[result.assignments == j]
        mean = members.sum(0) / members.sum(0).norm()
        assert torch.allclose(result.centroids[j], mean, atol=1e-5)


@pytest.mark.skipif(not FAISS_BACKENDS, reason="faiss not importable")
@pytest.mark.parametrize("spherical", [True, False])
def test_torch_matches_faiss_on_a_hard_random_set(spherical):
    """Isotropic noise has no true clusters; only the optimiser decides the objective."""
    x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(0))
    for seed in range(2):
        ours = kmeans(x, 10, seed=seed, spherical=spherical, backend="torch")
        ref = kmeans(x, 10, seed=seed, spherical=spherical, backend=FAISS_BACKENDS[-1])
        assert abs(ours.objective - ref.objective) <= 0.01 * abs(ref.objective)
        agree = (ours.assignments == ref.assignments).float().mean()
        assert agree >= 0.99  # same seeding, so the same local optimum


def test_euclidean_objective_matches_sklearn():
    """Independent reference: scikit-learn's best of 10 k-means++ runs (inertia / N)."""
    from sklearn.cluster import KMeans

    x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(1))
    sk = KMeans(10, n_init=10, random_state=0).fit(x.numpy()).inertia_ / len(x)
    ours = kmeans(x, 10, spherical=False, backend="torch").objective
    assert ours == pytest.approx(sk, rel=0.02)


def _six_blobs() -> torch.Tensor:
    """Six blobs of 30 points (σ 0.3, centres σ 4) into k = 4: several local optima, so some
    k-means++ starts end in a bad one (found by trying seeds; the test checks it is so)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 2, generator=g) * 4
    return torch.cat([c + 0.3 * torch.randn(30, 2, generator=g) for c in centres])


@pytest.mark.parametrize("backend", BACKENDS)
def test_n_init_keeps_the_best_start_and_reaches_sklearns_optimum(backend):
    """Start i is seeded seed + i; n_init keeps the lowest mean squared distance, which here is
    scikit-learn's best inertia / N over 50 starts, while some single starts are >= 5 % worse."""
    from sklearn.cluster import KMeans

    x = _six_blobs()
    best_sklearn = KMeans(4, n_init=50, random_state=0).fit(x.numpy()).inertia_ / len(x)
    starts = [kmeans(x, 4, seed=1 + i, spherical=False, backend=backend).objective for i in range(10)]
    assert max(starts) > 1.05 * best_sklearn  # a bad start exists
    result = kmeans(x, 4, seed=1, n_init=10, spherical=False, backend=backend)
    assert result.objective == min(starts)
    assert result.objective == pytest.approx(best_sklearn, rel=1e-5)
    _, score = assign(x, result.centroids, spherical=False)
    assert float(score.double().mean()) == pytest.approx(result.objective)  # the kept centroids' objective
    spherical = [kmeans(x, 4, seed=1 + i, backend=backend).objective for i in range(4)]
    assert kmeans(x, 4, seed=1, n_init=4, backend=backend).objective == max(spherical)  # cosine: higher is better
    with pytest.raises(ValueError, match="n_init=0"):
        kmeans(x, 4, n_init=0, backend=backend)


def test_empty_cluster_is_reseeded_at_the_farthest_point():
    """Centroid -100 attracts nothing; after step 1 the centres are 0.5, 17 (= (10+11+30)/3) and
    the re-seed 30 (farthest from its centre); step 2 moves 10 and 11 to 17, which becomes 10.5."""
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [30.0]])
    init = torch.tensor([[0.5], [10.5], [-100.0]])
    centroids = lloyd(x, init, iterations=10, spherical=False)
    assert torch.allclose(centroids[:, 0], torch.tensor([0.5, 10.5, 30.0]))


def test_chunked_assignment_equals_brute_force():
    g = torch.Generator().manual_seed(2)
    x, c = torch.randn(103, 5, generator=g), torch.randn(7, 5, generator=g)
    truth = torch.cdist(x.double(), c.double()).argmin(dim=1)
    labels, dist = assign(x, c, spherical=False, chunk_rows=10)
    assert torch.equal(labels, truth)
    assert torch.allclose(dist.double(), torch.cdist(x.double(), c.double()).min(1).values ** 2, atol=1e-4)


def test_torch_backend_is_deterministic():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(3))
    a, b = (kmeans(x, 8, seed=7, backend="torch") for _ in range(2))
    assert torch.equal(a.centroids, b.centroids)
    assert torch.equal(a.assignments, b.assignments)
    c = kmeans(x, 8, seed=8, backend="torch")
    assert not torch.equal(a.centroids, c.centroids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_points_per_centroid_fits_on_a_subset_and_assigns_all(backend):
    x, y = blobs([60] * 5)
    full = kmeans(x, 5, backend=backend)
    sub = kmeans(x, 5, backend=backend, max_points_per_centroid=4)  # 20 of 300 rows
    assert sub.assignments.shape == (300,)
    assert ari(y, sub.assignments) == 1.0
    assert not torch.allclose(sub.centroids, full.centroids, atol=1e-6)


def test_more_clusters_than_samples_is_refused():
    with pytest.raises(ValueError, match=r"k=6.*N=5"):
        kmeans(torch.randn(5, 3), 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": torch.randn(5), "k": 2}, "N×D"),
        ({"features": torch.randn(5, 3), "k": 0}, "k=0"),
        ({"features": torch.randn(5, 3), "k": 2, "iterations": 0}, "iterations=0"),
        ({"features": torch.randn(5, 3), "k": 2, "backend": "sklearn"}, "sklearn.*faiss-cpu"),
        ({"features": torch.randn(5, 3), "k": 2, "max_points_per_centroid": 0}, "max_points"),
        ({"features": torch.tensor([[0.0, float("nan")]] * 3), "k": 2}, "NaN"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans(**kwargs)


@pytest.mark.skipif("faiss-gpu" in BACKENDS, reason="faiss-gpu is usable here")
def test_unavailable_faiss_gpu_names_the_extra():
    with pytest.raises(RuntimeError, match=r"pip install 'lightning-ssl\[gpu\]'"):
        kmeans(torch.randn(10, 3), 2, backend="faiss-gpu")


def test_without_faiss_auto_falls_back_to_torch(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    assert available_backends() == ["torch"]
    with caplog.at_level(logging.INFO, logger="lightning_ssl.cluster.kmeans"):
        assert kmeans(torch.randn(10, 3), 2).backend == "torch"
    assert "k-means (torch)" in caplog.text
    with pytest.raises(RuntimeError, match="faiss-cpu"):
        kmeans(torch.randn(10, 3), 2, backend="faiss-cpu")


def _shards():
    x, _ = blobs([50, 40, 30], dim=8, noise=0.3, seed=4)
    return x[:70], x[70:]  # unequal shards: 70 and 50 rows


def _worker(rank: int, init_file: str, out_dir: str, backends: list[str]) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        local = _shards()[rank]
        for backend in backends:
            result, mine = distributed_kmeans(local, 3, seed=5, backend=backend)
            torch.save(
                {
                    "centroids": result.centroids,
                    "all": result.assignments,
                    "local": mine,
                    "objective": result.objective,
                    "backend": result.backend,
                },
                f"{out_dir}/{backend}_{rank}.pt",
            )
        # every rank already holds all 120 rows (extract_features gathers): no second gather
        full, mine = distributed_kmeans(torch.cat(_shards()), 3, replicated=True, seed=5, backend="torch", n_init=2)
        torch.save(
            {"all": full.assignments, "local": mine, "centroids": full.centroids}, f"{out_dir}/replicated_{rank}.pt"
        )
        try:  # an error on rank 0 only must reach rank 1 instead of leaving it waiting
            distributed_kmeans(local, 3, backend="no-such-backend")
        except (ValueError, RuntimeError) as exc:
            torch.save({"error": f"{type(exc).__name__}: {exc}"}, f"{out_dir}/error_{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_distributed_kmeans_matches_single_process(tmp_path):
    backends = ["torch", *FAISS_BACKENDS[-1:]]
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), backends), nprocs=2, join=True)
    x = torch.cat(_shards())
    for backend in backends:
        single = kmeans(x, 3, seed=5, backend=backend)
        r0, r1 = (torch.load(tmp_path / f"{backend}_{r}.pt") for r in range(2))
        assert torch.equal(r0["centroids"], r1["centroids"])
        assert torch.allclose(r0["centroids"], single.centroids, atol=1e-6)
        assert torch.equal(r0["all"], single.assignments) and torch.equal(r1["all"], single.assignments)
        assert torch.equal(r0["local"], single.assignments[:70])
        assert torch.equal(r1["local"], single.assignments[70:])
        assert r0["objective"] == r1["objective"] == pytest.approx(single.objective)
        assert r0["backend"] == r1["backend"] == backend
    single = kmeans(x, 3, seed=5, backend="torch", n_init=2)
    for r in range(2):
        rep = torch.load(tmp_path / f"replicated_{r}.pt")
        assert rep["all"].shape == rep["local"].shape == (120,)  # not 240: the rows were not gathered again
        assert torch.equal(rep["all"], single.assignments) and torch.equal(rep["local"], single.assignments)
        assert torch.equal(rep["centroids"], single.centroids)
    e0, e1 = (torch.load(tmp_path / f"error_{r}.pt")["error"] for r in range(2))
    assert e0.startswith("ValueError") and "no-such-backend" in e0
    assert e1.startswith("RuntimeError") and "rank 0" in e1
