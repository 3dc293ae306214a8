"""The projector / predictor MLP builder shared by every method."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(dims: Sequence[int], last_bn: bool = False, last_bn_affine: bool = True, bn: bool = True) -> nn.Sequential:
    """``Linear -> BN -> ReLU`` for every hidden layer, then a last ``Linear`` (+ BN if ``last_bn``).

    ``mlp([512, 2048, 128])`` is SimCLR's CIFAR projector (Chen et al. 2020, App. B.9);
    ``mlp([2048, 4096, 256], last_bn=True)`` is MoCLR's (Tian et al. 2021 §3.1); SimSiam's projector
    ends in a BN without affine (Chen & He 2021 §3: ``last_bn_affine=False``).
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least input and output dims, got {list(dims)}")
    layers: list[nn.Module] = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm1d(dims[i + 1]))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(dims[-2], dims[-1], bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=last_bn_affine))
    return nn.Sequential(*layers)
