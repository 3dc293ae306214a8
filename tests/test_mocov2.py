"""MoCo v2: multi-view queries against the other views' keys, and the FIFO queue."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_ssl.losses import info_nce_with_queue
from lightning_ssl.methods import MoCoV2


def test_three_views_average_the_other_views_keys() -> None:
    torch.manual_seed(0)
    model = MoCoV2(
        backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=8, queue_size=32, num_large_views=3
    ).eval()
    views = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    out = model.compute_losses((views, torch.full((4,), -1), torch.arange(4)))
    assert out.losses.shape == (3, 4)
    with torch.no_grad():
        q = [F.normalize(model.projector(model(v)), dim=1) for v in views]
        k = [model._keys(v) for v in views]
        expected = (
            info_nce_with_queue(q[1], k[0], model.queue, 0.2) + info_nce_with_queue(q[1], k[2], model.queue, 0.2)
        ) / 2
    torch.testing.assert_close(out.losses[1].detach(), expected)
    assert model._pending_keys.shape == (12, 8)


def test_queue_is_fifo_and_wraps() -> None:
    model = MoCoV2(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=4, queue_size=5)
    a, b = torch.ones(3, 4), 2 * torch.ones(3, 4)
    model._enqueue(a)
    model._enqueue(b)
    assert int(model.queue_ptr) == 1
    assert model.queue[:, 0].tolist() == [2.0, 1.0, 1.0, 2.0, 2.0]  # a filled 0-2; b filled 3, 4, 0


def _moco(**kw):  # noqa: ANN003, ANN202
    return MoCoV2(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=4, queue_size=8, **kw)


def _stub_trainer(world_size: int, device: str):  # noqa: ANN202
    from types import SimpleNamespace

    return SimpleNamespace(world_size=world_size, strategy=SimpleNamespace(root_device=torch.device(device)))


def test_sync_bn_converts_both_encoders_under_ddp_only() -> None:
    """sync_bn under DDP (world size 2, CUDA) turns every BatchNorm of the query and key encoders
    into SyncBatchNorm with the same state_dict keys and values; one device leaves plain BN; DDP
    on CPU is refused (torch has no CPU SyncBatchNorm)."""
    from torch import nn

    def kinds(model):  # noqa: ANN001, ANN202
        return {
            type(m)
            for enc in (model.backbone, model.key_backbone)
            for m in enc.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        }

    model = _moco(sync_bn=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model._trainer = _stub_trainer(1, "cpu")
    model.setup("fit")
    assert kinds(model) == {nn.BatchNorm2d}
    model._trainer = _stub_trainer(2, "cuda")
    model.setup("fit")
    assert kinds(model) == {nn.SyncBatchNorm}
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in model.key_backbone.parameters())  # still frozen
    plain = _moco()
    plain._trainer = _stub_trainer(2, "cuda")
    plain.setup("fit")
    assert kinds(plain) == {nn.BatchNorm2d}  # off by default
    cpu = _moco(sync_bn=True)
    cpu._trainer = _stub_trainer(2, "cpu")
    import pytest

    with pytest.raises(ValueError, match="sync_bn=True.*CUDA.*--model.sync_bn false"):
        cpu.setup("fit")
