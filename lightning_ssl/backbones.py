"""Backbones by name (timm or torchvision) or any ``nn.Module``, with the small-image stem.

The stem is chosen from the input size, never from a dataset name (solo-learn's anti-pattern):
for images of at most ``SMALL_IMAGE_MAX`` pixels a ResNet gets a 3×3 stride-1 first convolution and
no max-pool, the CIFAR variant of He et al. 2016 §4.2 used by SimCLR (App. B.9), SimSiam and MTTV.
"""

from __future__ import annotations

import timm
import torch
import torchvision
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

SMALL_IMAGE_MAX = 64


def _tiny_resnet(in_chans: int) -> nn.Module:
    """A 4-stage ResNet with one BasicBlock per stage and widths 16-128 (~0.7 M parameters):
    our choice for CPU tests and the embedded benchmark, not a paper model."""
    return ResNet(
        BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16, in_chans=in_chans, num_classes=0
    )


def _small_image_stem(model: nn.Module, in_chans: int) -> None:
    """Replace a ResNet's 7×7/2 conv + max-pool by a 3×3/1 conv (He et al. 2016 §4.2)."""
    conv = getattr(model, "conv1", None)
    if isinstance(conv, nn.Conv2d) and hasattr(model, "maxpool"):
        model.conv1 = nn.Conv2d(in_chans, conv.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()


def build_backbone(backbone: str | nn.Module, image_size: int = 224, in_chans: int = 3) -> tuple[nn.Module, int]:
    """Return ``(module, feature_dim)``; the module maps ``B×C×H×W`` to ``B×feature_dim``.

    Args:
        backbone: a timm model name (``resnet18``, ``resnet50``, ``vit_small_patch16_224``, ...),
            ``torchvision.<name>`` for a torchvision model, ``resnet_tiny`` for the CPU-sized test
            model, or an ``nn.Module`` (its output must be ``B×D``; ``D`` is found by a dry run).
        image_size: input side length; ``<= 64`` selects the small-image stem for ResNets.
        in_chans: input channels.
    """
    small = image_size <= SMALL_IMAGE_MAX
    if isinstance(backbone, nn.Module):
        model = backbone
    elif backbone == "resnet_tiny":
        model = _tiny_resnet(in_chans)
    elif backbone.startswith("torchvision."):
        name = backbone.split(".", 1)[1]
        if not hasattr(torchvision.models, name):
            raise ValueError(f"unknown torchvision model {name!r}")
        model = getattr(torchvision.models, name)(weights=None)
        if hasattr(model, "fc"):
            model.fc = nn.Identity()
        elif hasattr(model, "classifier"):
            model.classifier = nn.Identity()
    else:
        if not timm.is_model(backbone):
            raise ValueError(
                f"unknown backbone {backbone!r}: not a timm model name; see timm.list_models(), "
                f"use 'torchvision.<name>', 'resnet_tiny', or pass an nn.Module"
            )
        kwargs = {"num_classes": 0, "in_chans": in_chans, "pretrained": False}
        if "vit" in backbone or "deit" in backbone:
            kwargs["img_size"] = image_size
        model = timm.create_model(backbone, **kwargs)
    if small and not isinstance(backbone, nn.Module):
        _small_image_stem(model, in_chans)
    with torch.no_grad():
        was_training = model.training
        model.eval()
        dim = model(torch.zeros(1, in_chans, image_size, image_size)).flatten(1).shape[1]
        model.train(was_training)
    return model, dim
