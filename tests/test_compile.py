"""The `compile=True` path (torch.compile of the backbone call) trains, keeps checkpoint keys, and
computes what the eager module computes."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_ssl.methods import SimCLR


def test_compiled_backbone_trains_with_unchanged_state_dict() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = SimCLR(
        backbone=backbone, image_size=8, proj_hidden_dim=8, proj_output_dim=4, compile=True, lr=0.1, warmup_epochs=0
    )
    before = backbone[0].weight.detach().clone()
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
    compiled = model.__dict__["_compiled_backbone"]
    assert type(compiled).__name__ == "OptimizedModule"
    assert not any("_orig_mod" in k for k in model.state_dict())
    assert not torch.equal(before, backbone[0].weight)  # the compiled call trained the module's weights
    x = torch.randn(4, 3, 8, 8)
    model.eval()
    torch.testing.assert_close(model(x), backbone(x).flatten(1))
