"""Weighted cosine kNN against a brute-force Python loop (InstDisc vote, Wu et al. 2018)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.eval.knn import knn_predict


def brute_force_knn(query, bank, labels, num_classes, k, temperature):  # noqa: ANN001, ANN201
    """Float64 loops: cosine to every bank row, sort, exp(sim / T) vote, lowest class wins ties."""
    preds = []
    for q in query.double().tolist():
        qn = math.sqrt(sum(v * v for v in q))
        sims = []
        for j, b in enumerate(bank.double().tolist()):
            bn = math.sqrt(sum(v * v for v in b))
            sims.append((sum(x * y for x, y in zip(q, b)) / (qn * bn), j))
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for sim, j in sims[:k]:
            votes[int(labels[j])] += math.exp(sim / temperature)
        preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return torch.tensor(preds)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 8, generator=g)
    bank_labels = torch.randint(0, 5, (60,), generator=g)
    bank = centers[bank_labels] + 1.5 * torch.randn(60, 8, generator=g)
    query = centers[torch.randint(0, 5, (25,), generator=g)] + 1.5 * torch.randn(25, 8, generator=g)
    return query, bank * 3.0, bank_labels  # scaled bank: cosine must not depend on the norm


@pytest.mark.parametrize(
    ("k", "temperature", "chunk_size", "bank_chunk_size"),
    [
        (200, 0.1, 1024, None),
        (10, 0.07, 7, None),
        (1, 0.1, 4, 13),
        (7, 0.5, 25, 8),
        (5, 0.005, 3, 60),
    ],
)
def test_matches_brute_force(data, k, temperature, chunk_size, bank_chunk_size) -> None:  # noqa: ANN001
    query, bank, labels = data
    expected = brute_force_knn(query, bank, labels, 5, k, temperature)
    got = knn_predict(
        query,
        bank,
        labels,
        5,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
        bank_chunk_size=bank_chunk_size,
    )
    assert got.dtype == torch.long
    assert torch.equal(got, expected)


def test_k_larger_than_bank_uses_whole_bank(data) -> None:  # noqa: ANN001
    query, bank, labels = data
    assert torch.equal(knn_predict(query, bank, labels, 5, k=1000), knn_predict(query, bank, labels, 5, k=60))


def test_hand_example_weighting() -> None:
    # Two bank points of class 0 at 60° from the query (cos 0.5), one of class 1 identical (cos 1).
    # T = 1: class 0 gets 2·e^0.5 = 3.30 > e^1 = 2.72 -> class 0; T = 0.1: 2·e^5 = 297 < e^10 -> class 1.
    query = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[0.5, math.sqrt(3) / 2], [0.5, -math.sqrt(3) / 2], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    assert knn_predict(query, bank, labels, 2, k=3, temperature=1.0).item() == 0
    assert knn_predict(query, bank, labels, 2, k=3, temperature=0.1).item() == 1
    assert knn_predict(query, bank, labels, 2, k=1).item() == 1


def test_small_temperature_does_not_overflow(data) -> None:  # noqa: ANN001
    query, bank, labels = data  # exp(1 / 0.005) = exp(200) overflows float32 without the shift
    got = knn_predict(query, bank, labels, 5, k=20, temperature=0.005)
    assert torch.equal(got, brute_force_knn(query, bank, labels, 5, 20, 0.005))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_matches_cpu(data) -> None:  # noqa: ANN001
    query, bank, labels = data
    cpu = knn_predict(query, bank, labels, 5, k=10)
    gpu = knn_predict(query, bank.cuda(), labels.cuda(), 5, k=10)
    assert gpu.device == query.device and torch.equal(gpu, cpu)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be >= 1, got 0"),
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"bank_chunk_size": 0}, "bank_chunk_size must be >= 1"),
        ({"num_classes": 2}, r"bank_labels hold class ids in \[0, 4\]"),
    ],
)
def test_bad_arguments_raise(data, kwargs, match) -> None:  # noqa: ANN001
    query, bank, labels = data
    args = {"num_classes": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        knn_predict(query, bank, labels, **args)


def test_bad_shapes_raise(data) -> None:  # noqa: ANN001
    query, bank, labels = data
    with pytest.raises(ValueError, match="feature dims differ"):
        knn_predict(query[:, :4], bank, labels, 5)
    with pytest.raises(ValueError, match="bank_labels must have shape"):
        knn_predict(query, bank, labels[:10], 5)
