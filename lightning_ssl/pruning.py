"""SDCLR's self-competitor: global magnitude masks and a pruned branch with its own batch-norm
(Jiang, Chen, Mortazavi, Wang; "Self-Damaging Contrastive Learning", ICML 2021; docs/methods.md §12).

The pruned branch shares every weight of the dense network; it multiplies the prunable weights by
their masks and uses its own copy of every BatchNorm (affine parameters and running statistics),
as the official ``batch_norm_multiple`` layers do. It runs the very same modules through
``torch.func.functional_call`` with those tensors swapped in, so it works on any backbone (timm,
torchvision, ``resnet_tiny``, a user's module) without rewriting it, and the dense module, its
``state_dict`` keys and every probe stay those of an ordinary backbone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_ssl import distributed

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, weight)`` of every convolution and linear layer of ``module``: what the official
    ``prune_conv2d`` layers cover in a ResNet (the stem, every block convolution and every 1x1
    downsample; the suite's backbones have no classifier layer). Biases and norm parameters are
    never pruned."""
    return [
        (f"{name}.weight" if name else "weight", m.weight)
        for name, m in module.named_modules()
        if isinstance(m, PRUNABLE) and isinstance(getattr(m, "weight", None), nn.Parameter)
    ]


@torch.no_grad()
def global_magnitude_threshold(weights: Sequence[Tensor], fraction: float) -> Tensor:
    """The official threshold (``prune/mask.py``): over the magnitudes of all ``N`` weights together,
    ``n = ceil(fraction N)`` and ``thr = sorted(|w|)[min(n, N - 1)]``; one threshold for every layer."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"prune_ratio={fraction} must be in [0, 1) (SDCLR: 0.9 on CIFAR, 0.3 on ImageNet-100)")
    magnitudes = torch.cat([w.detach().abs().flatten().float() for w in weights])
    total = magnitudes.numel()
    k = min(math.ceil(fraction * total), total - 1)  # 0-based position in the sorted magnitudes
    return torch.kthvalue(magnitudes, k + 1).values


@torch.no_grad()
def global_magnitude_masks(weights: Sequence[Tensor], fraction: float) -> list[Tensor]:
    """Masks ``|w| >= thr`` of :func:`global_magnitude_threshold` (ties at ``thr`` are kept, so fewer
    than ``ceil(fraction N)`` weights can be pruned, as in the official code). Each mask has its
    weight's dtype, device and memory format."""
    thr = global_magnitude_threshold(weights, fraction)
    return [(w.detach().abs() >= thr.to(w.device, w.dtype)).to(w.dtype) for w in weights]


def _key(name: str) -> str:
    return name.replace(".", "__")


class PrunedBranch(nn.Module):
    """The pruned branch's own state for some modules of a method (SDCLR: backbone and projector):
    one mask per prunable weight (buffers ``mask__<module>__<path>``) and a copy of every
    BatchNorm (``bn.bn0``, ``bn.bn1``, ... in module order), all in the checkpoint.

    Args:
        modules: ``{name: module}`` whose BatchNorms get a pruned-branch copy.
        prune: names of the modules whose prunable weights are masked (SDCLR: the backbone only).
    """

    def __init__(self, modules: Mapping[str, nn.Module], prune: Sequence[str] = ("backbone",)) -> None:
        super().__init__()
        self.bn = nn.ModuleDict()
        self.bn_paths: dict[str, tuple[str, str]] = {}  # bn key -> (owner, path inside the owner)
        self.mask_names: dict[str, list[tuple[str, str]]] = {}
        for owner, module in modules.items():
            for path, sub in module.named_modules():
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    key = f"bn{len(self.bn)}"
                    self.bn[key] = copy.deepcopy(sub)
                    self.bn_paths[key] = (owner, path)
            if owner in prune:
                entries = []
                for path, weight in prunable_weights(module):
                    buffer = _key(f"mask.{owner}.{path}")
                    self.register_buffer(buffer, torch.ones_like(weight.detach()))
                    entries.append((path, buffer))
                self.mask_names[owner] = entries
        self.register_buffer("mask_epoch", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("sparsity", torch.zeros(()))  # fraction of the prunable weights masked

    def masks(self, owner: str) -> list[Tensor]:
        return [getattr(self, buffer) for _, buffer in self.mask_names.get(owner, [])]

    @torch.no_grad()
    def reprune(self, modules: Mapping[str, nn.Module], fraction: float, epoch: int) -> None:
        """Recompute every mask from the current dense weights, from scratch (not cumulatively), by the
        global magnitude rule over all pruned modules together; the threshold is broadcast from rank 0
        so that every rank holds the same masks (docs/methods.md §12.3)."""
        weights = [
            dict(prunable_weights(modules[owner]))[path]
            for owner, entries in self.mask_names.items()
            for path, _ in entries
        ]
        if not weights:
            raise ValueError("SDCLR found no convolution or linear weight to prune in the backbone")
        thr = distributed.broadcast(global_magnitude_threshold(weights, fraction).reshape(1).clone())[0]
        it = iter(weights)
        for entries in self.mask_names.values():
            for _, buffer in entries:
                w = next(it)
                setattr(self, buffer, (w.detach().abs() >= thr.to(w.device, w.dtype)).to(w.dtype))
        self.mask_epoch.fill_(epoch)
        masks = [m for owner in self.mask_names for m in self.masks(owner)]
        self.sparsity.copy_(1.0 - sum(m.sum() for m in masks) / sum(m.numel() for m in masks))

    def tensors(self, owner: str, module: nn.Module) -> dict[str, Tensor]:
        """What ``functional_call`` swaps into ``module`` (named ``owner`` above) for the pruned
        branch: masked weights ``w * m`` (the gradient reaches ``w`` as ``g * m``) and the pruned
        BatchNorms' parameters and running statistics (updated in place by the forward)."""
        out: dict[str, Tensor] = {}
        params = dict(module.named_parameters())
        for path, buffer in self.mask_names.get(owner, []):
            out[path] = params[path] * getattr(self, buffer)
        for key, bn in self.bn.items():
            bn_owner, path = self.bn_paths[key]
            if bn_owner != owner:
                continue
            for name, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
                out[f"{path}.{name}" if path else name] = tensor
        return out

    def forward_with(
        self,
        owner: str,
        module: nn.Module,
        x: Tensor,
        call: Callable[[dict[str, Tensor], Tensor], Tensor] | None = None,
    ) -> Tensor:
        """``module(x)`` as the pruned branch computes it (``call`` may be a compiled
        ``functional_call`` of the same module)."""
        tensors = self.tensors(owner, module)
        return call(tensors, x) if call is not None else functional_call(module, tensors, (x,))
