"""Offline linear probe on pre-extracted features (MTTV / rwSAM recipes, METHODS.md §0.3)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.eval.linear import _lr_at, predict, train_linear_probe


def separable(
    n_per_class: int = 40,
    num_classes: int = 4,
    dim: int = 16,
    seed: int = 0,
    scale: float = 1.0,
    offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs of radius ~0.3 around one-hot centres 1 apart: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = torch.eye(num_classes, dim)[labels] * 3.0 + 0.1 * torch.randn(
        len(labels), dim, generator=g
    )
    return feats * scale + offset, labels


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"optimizer": "sgd", "batch_size": 32, "milestones": [6, 8], "epochs": 10}],
)
def test_separable_features_reach_full_accuracy(kwargs) -> None:  # noqa: ANN001
    feats, labels = separable()
    test_feats, test_labels = separable(seed=1)
    layer = train_linear_probe(feats, labels, 4, **{"epochs": 30, **kwargs})
    assert isinstance(layer, torch.nn.Linear) and not layer.training
    assert torch.equal(predict(layer, feats), labels)
    assert torch.equal(predict(layer, test_feats, batch_size=7), test_labels)


def test_standardize_handles_badly_scaled_features_and_folds_into_layer() -> None:
    # Tiny spread on a large offset: 5 epochs of the raw recipe stay at chance, standardised
    # features separate; the returned layer takes the raw features (statistics folded in).
    feats, labels = separable(scale=0.01, offset=5.0)
    kwargs = {"epochs": 5, "batch_size": 32, "optimizer": "sgd"}
    raw = train_linear_probe(feats, labels, 4, **kwargs)
    assert (predict(raw, feats) == labels).float().mean() < 0.5
    folded = train_linear_probe(feats, labels, 4, standardize=True, **kwargs)
    assert torch.equal(predict(folded, feats), labels)


def test_deterministic_for_a_seed() -> None:
    feats, labels = separable()
    a = train_linear_probe(feats, labels, 4, epochs=3, batch_size=16, seed=3)
    b = train_linear_probe(feats, labels, 4, epochs=3, batch_size=16, seed=3)
    c = train_linear_probe(feats, labels, 4, epochs=3, batch_size=16, seed=4)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)  # the seed orders the mini-batches


def test_trains_inside_inference_mode() -> None:
    feats, labels = separable()
    with torch.inference_mode():
        layer = train_linear_probe(feats, labels, 4, epochs=5)
    assert torch.equal(predict(layer, feats), labels)


def test_schedules() -> None:
    # cosine: base at step 0, half at the middle, ~0 at the end
    assert _lr_at(0, 100, 10, 0.005, None) == pytest.approx(0.005)
    assert _lr_at(50, 100, 10, 0.005, None) == pytest.approx(0.0025)
    assert _lr_at(99, 100, 10, 0.005, None) == pytest.approx(
        0.005 * 0.5 * (1 + math.cos(math.pi * 0.99))
    )
    # rwSAM: lr 30, x0.1 at epochs 60 and 80 (10 steps per epoch)
    assert _lr_at(599, 1000, 10, 30.0, [60, 80]) == pytest.approx(30.0)
    assert _lr_at(600, 1000, 10, 30.0, [60, 80]) == pytest.approx(3.0)
    assert _lr_at(800, 1000, 10, 30.0, [60, 80]) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "lbfgs"}, r"optimizer must be one of \('adamw', 'sgd'\), got 'lbfgs'"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"milestones": [0, 200]}, r"milestones must lie in \(0, 100\)"),
    ],
)
def test_bad_arguments_raise(kwargs, match) -> None:  # noqa: ANN001
    feats, labels = separable()
    with pytest.raises(ValueError, match=match):
        train_linear_probe(feats, labels, 4, **kwargs)


def test_unknown_labels_raise() -> None:
    feats, labels = separable()
    labels[0] = -1
    with pytest.raises(ValueError, match=r"class ids in \[-1, 3\]"):
        train_linear_probe(feats, labels, 4)
