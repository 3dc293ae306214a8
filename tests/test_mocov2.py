"""MoCo v2: multi-view queries against the other views' keys, and the FIFO queue."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_ssl.losses import info_nce_with_queue
from lightning_ssl.methods import MoCoV2


def test_three_views_average_the_other_views_keys() -> None:
    torch.manual_seed(0)
    model = MoCoV2(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=8,
                   queue_size=32, num_views=3).eval()
    views = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    out = model.compute_losses((views, torch.full((4,), -1), torch.arange(4)))
    assert out.losses.shape == (3, 4)
    with torch.no_grad():
        q = [F.normalize(model.projector(model(v)), dim=1) for v in views]
        k = [model._keys(v) for v in views]
        expected = (info_nce_with_queue(q[1], k[0], model.queue, 0.2)
                    + info_nce_with_queue(q[1], k[2], model.queue, 0.2)) / 2
    torch.testing.assert_close(out.losses[1].detach(), expected)
    assert model._pending_keys.shape == (12, 8)


def test_queue_is_fifo_and_wraps() -> None:
    model = MoCoV2(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=4, queue_size=5)
    a, b = torch.ones(3, 4), 2 * torch.ones(3, 4)
    model._enqueue(a)
    model._enqueue(b)
    assert int(model.queue_ptr) == 1
    assert model.queue[:, 0].tolist() == [2.0, 1.0, 1.0, 2.0, 2.0]  # a filled 0-2; b filled 3, 4, 0
