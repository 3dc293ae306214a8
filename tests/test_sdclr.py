"""SDCLR (docs/methods.md §12): the official global-magnitude rule, the official two-backward gradient,
the pruned branch's own batch-norm, every backbone, and the GPU-path options on the CPU."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_ssl.losses import nt_xent
from lightning_ssl.methods import SDCLR, SimCLR
from lightning_ssl.pruning import PrunedBranch, global_magnitude_masks, prunable_weights


class HandBuilt(nn.Module):
    """Two 1x1 convolutions of 4 weights each and a linear layer: layer A, layer B, a head."""

    def __init__(self, a: list[float], b: list[float]) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 1, 1, bias=False)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor(a).view(4, 1, 1, 1))
            self.b.weight.copy_(torch.tensor(b).view(1, 4, 1, 1))


def official_rule(weights: list[np.ndarray], fraction: float) -> list[np.ndarray]:
    """SDCLR's prune/mask.py, in numpy: one threshold over all weights, ``|w| >= thr`` kept."""
    flat = np.concatenate([w.flatten() for w in weights])
    n_prune = int(np.ceil(fraction * flat.size))
    thr = np.sort(np.abs(flat))[min(n_prune, flat.size - 1)]
    return [(np.abs(w) >= thr).astype(np.float32) for w in weights]


def test_global_threshold_on_a_hand_built_model() -> None:
    net = HandBuilt([0.1, -0.5, 0.3, 0.05], [0.9, -0.8, 0.7, 0.6])
    names = [n for n, _ in prunable_weights(net)]
    assert names == ["a.weight", "b.weight", "fc.weight"]  # convolutions and linear layers; no BN, no bias
    convs = [net.a.weight, net.b.weight]
    mask_a, mask_b = global_magnitude_masks(convs, 0.5)
    # one threshold (0.6) over both layers: A loses everything, B keeps everything; a per-layer 50 %
    # rule would have kept A's -0.5 and 0.3
    assert mask_a.flatten().tolist() == [0, 0, 0, 0] and mask_b.flatten().tolist() == [1, 1, 1, 1]
    # ties at the threshold are kept, as in the official code: only one weight goes
    (tie,) = global_magnitude_masks([torch.tensor([0.1, -0.2, 0.2, 0.3])], 0.5)
    assert tie.tolist() == [0, 1, 1, 1]


def test_masks_equal_the_official_rule_on_a_random_model() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 4, 1))
    with torch.no_grad():
        net[2].weight.mul_(0.3)  # a smaller-scale layer is pruned harder under one global threshold
    for fraction in (0.0, 0.3, 0.9, 0.99):
        ours = global_magnitude_masks([m.weight for m in (net[0], net[2], net[3])], fraction)
        ref = official_rule([m.weight.detach().numpy() for m in (net[0], net[2], net[3])], fraction)
        for o, r in zip(ours, ref):
            np.testing.assert_array_equal(o.numpy(), r)
    at_90 = global_magnitude_masks([m.weight for m in (net[0], net[2], net[3])], 0.9)
    assert 1 - at_90[1].mean() > 0.95  # the down-scaled layer loses more than 90 %
    branch = PrunedBranch({"backbone": net})
    branch.reprune({"backbone": net}, 0.9, epoch=3)
    for o, r in zip(
        branch.masks("backbone"), official_rule([m.weight.detach().numpy() for m in (net[0], net[2], net[3])], 0.9)
    ):
        np.testing.assert_array_equal(o.numpy(), r)
    assert int(branch.mask_epoch) == 3
    assert float(branch.sparsity) == pytest.approx(
        1
        - sum(r.sum() for r in official_rule([m.weight.detach().numpy() for m in (net[0], net[2], net[3])], 0.9))
        / sum(m.weight.numel() for m in (net[0], net[2], net[3]))
    )


def small_sdclr(**kwargs: object) -> SDCLR:
    torch.manual_seed(0)
    return SDCLR(backbone="resnet_tiny", image_size=16, proj_hidden_dim=32, proj_output_dim=16, **kwargs)


def batch(n: int = 8, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        [torch.randn(n, 3, 16, 16, generator=g), torch.randn(n, 3, 16, 16, generator=g)],
        torch.zeros(n, dtype=torch.long),
        torch.arange(n),
    )


def _pruned_copy(model: SDCLR, owner: str) -> nn.Module:
    """The self-competitor as a separate network (the official ``prune_flag=True`` forward): the
    dense module's copy with weights ``w * m`` as its own leaves and the pruned branch's BNs."""
    module = copy.deepcopy(getattr(model, owner))
    masks = dict((path, getattr(model.pruned, buffer)) for path, buffer in model.pruned.mask_names.get(owner, []))
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    for key, (bn_owner, path) in model.pruned.bn_paths.items():
        if bn_owner == owner:
            target = module.get_submodule(path)
            target.load_state_dict(model.pruned.bn[key].state_dict())
    return module


def test_one_backward_equals_the_official_two_backward_gradient() -> None:
    model = small_sdclr()
    model.pruned.reprune({"backbone": model.backbone}, 0.9, 0)
    ref = copy.deepcopy(model)
    views, target, index = batch()
    T = model.hparams.temperature

    # ours: one forward per branch, one backward
    model.compute_losses((views, target, index)).losses.mean().backward()

    # the official prune_simCLR.py: pass A with the pruned branch under no_grad, pass B with the
    # dense branch detached, one optimiser step on the sum of the two backward passes
    bb_p, pj_p = _pruned_copy(ref, "backbone"), _pruned_copy(ref, "projector")
    with torch.no_grad():
        z_p_nograd = pj_p(bb_p(views[1]).flatten(1))
    z_d = ref.projector(ref.backbone(views[0]).flatten(1))
    nt_xent(z_d, z_p_nograd, T).mean().backward()  # pass A
    bb_p2, pj_p2 = _pruned_copy(ref, "backbone"), _pruned_copy(ref, "projector")
    z_p = pj_p2(bb_p2(views[1]).flatten(1))
    nt_xent(z_d.detach(), z_p, T).mean().backward()  # pass B
    masks = dict((path, getattr(ref.pruned, buffer)) for path, buffer in ref.pruned.mask_names["backbone"])
    bb_p2_params, pj_p2_params = dict(bb_p2.named_parameters()), dict(pj_p2.named_parameters())
    bn_paths = {path for owner, path in ref.pruned.bn_paths.values()}

    def is_bn(name: str) -> bool:
        return name.rsplit(".", 1)[0] in bn_paths

    checked = 0
    for owner, branch_params in (("backbone", bb_p2_params), ("projector", pj_p2_params)):
        for name, p in getattr(model, owner).named_parameters():
            dense_grad = dict(getattr(ref, owner).named_parameters())[name].grad
            expected = dense_grad.clone()
            if not is_bn(name):  # a shared weight: pass B reaches it through w * m, i.e. as g * m
                pruned_grad = branch_params[name].grad
                expected += pruned_grad * masks[name] if owner == "backbone" and name in masks else pruned_grad
            torch.testing.assert_close(p.grad, expected, atol=1e-6, rtol=1e-5, msg=f"{owner}.{name}")
            checked += 1
    # the pruned branch's own BN parameters get pass B's gradient only
    for key, (owner, path) in model.pruned.bn_paths.items():
        branch_params = bb_p2_params if owner == "backbone" else pj_p2_params
        for name, p in model.pruned.bn[key].named_parameters():
            torch.testing.assert_close(p.grad, branch_params[f"{path}.{name}"].grad, atol=1e-6, rtol=1e-5)
            checked += 1
    assert checked > 20
    # a pruned weight receives gradient from the dense branch only
    name, mask = next((n, m) for n, m in masks.items() if (m == 0).any())
    dense_only = dict(ref.backbone.named_parameters())[name].grad
    got = dict(model.backbone.named_parameters())[name].grad
    torch.testing.assert_close(got[mask == 0], dense_only[mask == 0], atol=1e-7, rtol=1e-6)


def test_the_pruned_branch_has_its_own_batch_norm() -> None:
    model = small_sdclr()
    model.pruned.reprune({"backbone": model.backbone}, 0.9, 0)
    dense_bn = model.backbone.bn1
    pruned_bn = next(model.pruned.bn[k] for k, (o, p) in model.pruned.bn_paths.items() if (o, p) == ("backbone", "bn1"))
    before_dense, before_pruned = dense_bn.running_mean.clone(), pruned_bn.running_mean.clone()
    model.train()
    model.pruned_forward(torch.randn(8, 3, 16, 16) + 3.0)
    assert torch.equal(dense_bn.running_mean, before_dense)  # the pruned forward leaves the dense BN alone
    assert not torch.equal(pruned_bn.running_mean, before_pruned)
    # with every mask at 1 the pruned branch in eval mode is the dense network with the other BN stats
    model.pruned.reprune({"backbone": model.backbone}, 0.0, 1)
    for bn in model.pruned.bn.values():
        bn.running_mean.zero_(), bn.running_var.fill_(1.0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.zero_(), m.running_var.fill_(1.0)
    model.eval()
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(model.pruned_forward(x), model(x))
    # state_dict: the masks and the second BN are in the checkpoint; the dense keys are a plain backbone's
    keys = model.state_dict().keys()
    assert any(k.startswith("pruned.mask__backbone__") for k in keys) and "pruned.bn.bn0.running_mean" in keys
    assert set(k for k in keys if k.startswith("backbone.")) == set(
        f"backbone.{k}" for k in model.backbone.state_dict()
    )


def test_sdclr_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"prune_ratio=1.0 must be in \[0, 1\)"):
        SDCLR(backbone="resnet_tiny", image_size=16, prune_ratio=1.0)
    with pytest.raises(ValueError, match="num_large_views=3 must be 2"):
        SDCLR(backbone="resnet_tiny", image_size=16, num_large_views=3)
    assert SDCLR.views_needed().num_large_views == 2
    assert SDCLR(backbone="resnet_tiny", image_size=16).hparams.temperature == 0.2  # official CIFAR commands


@pytest.mark.parametrize(
    ("backbone", "size"),
    [
        ("resnet_tiny", 16),
        ("resnet18", 16),
        ("resnet50", 16),
        ("torchvision.resnet18", 16),
        ("vit_tiny_patch16_224", 32),
    ],
)
def test_every_backbone_prunes_and_trains(backbone: str, size: int) -> None:
    torch.manual_seed(0)
    model = SDCLR(backbone=backbone, image_size=size, proj_hidden_dim=32, proj_output_dim=16)
    model.pruned.reprune({"backbone": model.backbone}, 0.9, 0)
    weights = [w for _, w in prunable_weights(model.backbone)]
    total = sum(w.numel() for w in weights)
    assert float(model.pruned.sparsity) == pytest.approx(math.ceil(0.9 * total) / total, abs=1e-3)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 3, size, size, generator=g) for _ in range(2)]
    out = model.compute_losses((views, torch.zeros(4, dtype=torch.long), torch.arange(4)))
    out.losses.mean().backward()
    assert torch.isfinite(out.losses).all()
    assert all(w.grad is not None for w in weights)


def test_sdclr_differs_from_simclr_only_by_the_pruned_branch() -> None:
    """With nothing pruned and the same weights, the pruned branch computes the dense function (the
    two BNs start equal), so SDCLR's loss is NT-Xent of the two views through one network."""
    torch.manual_seed(0)
    sdclr = SDCLR(backbone="resnet_tiny", image_size=16, proj_hidden_dim=32, proj_output_dim=16, temperature=0.5)
    simclr = SimCLR(backbone="resnet_tiny", image_size=16, proj_hidden_dim=32, proj_output_dim=16, temperature=0.5)
    simclr.load_state_dict({k: v for k, v in sdclr.state_dict().items() if not k.startswith("pruned.")})
    sdclr.pruned.reprune({"backbone": sdclr.backbone}, 0.0, 0)
    views, target, index = batch()
    ours = sdclr.compute_losses((views, target, index)).losses
    # each branch normalises its own view's batch: SimCLR run on one view at a time
    z1 = simclr.projector(simclr(views[0]))
    z2 = simclr.projector(simclr(views[1]))
    torch.testing.assert_close(ours, nt_xent(z1, z2, 0.5, per_view=True), atol=1e-5, rtol=1e-5)


def test_channels_last_and_bf16_paths_on_the_cpu(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The GPU path (device-resident uint8 data, bf16 autocast, channels_last) through `lssl fit`."""
    from lightning_ssl.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "fit",
                "--model",
                "SDCLR",
                "--data",
                "DigitsLT",
                "--data.batch_size",
                "16",
                "--data.resident",
                "true",
                "--model.backbone",
                "resnet_tiny",
                "--model.proj_hidden_dim",
                "32",
                "--model.proj_output_dim",
                "16",
                "--trainer.max_steps",
                "1",
                "--trainer.limit_val_batches",
                "1",
                "--trainer.accelerator",
                "cpu",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
                "--trainer.logger",
                "false",
                "--trainer.callbacks",
                "[]",
                "--trainer.enable_checkpointing",
                "false",
                "--trainer.precision",
                "bf16-mixed",
                "--model.channels_last",
                "true",
            ]
        )
        == 0
    )


def test_compiled_pruned_branch_trains_and_matches_eager() -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    model = SDCLR(
        backbone=backbone, image_size=8, proj_hidden_dim=8, proj_output_dim=4, compile=True, lr=0.1, warmup_epochs=0
    )
    g = torch.Generator().manual_seed(0)
    data = [([torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g)], 0, i) for i in range(16)]
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=8))
    assert "_compiled_pruned" in model.__dict__
    assert not any("_orig_mod" in k for k in model.state_dict())
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    eager = model.pruned.forward_with("backbone", model.backbone, x)
    torch.testing.assert_close(model.pruned_forward(x), eager.flatten(1))
