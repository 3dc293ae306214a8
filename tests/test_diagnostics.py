"""Collapse diagnostics against their definitions: RankMe (Garrido et al. 2023), alignment and
uniformity (Wang & Isola 2020), SimSiam's normalised std; hand-computed and known values."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from lightning_ssl.eval.diagnostics import (
    CollapseMonitor,
    alignment,
    describe,
    loss_trend,
    normalised_std,
    rankme,
    uniformity,
)


def test_rankme_known_values() -> None:
    # p = [0.75, 0.25] + 1e-5: exp(-(p log p).sum()) by hand
    p = torch.tensor([0.75, 0.25], dtype=torch.float64) + 1e-5
    assert rankme(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(
        float(torch.exp(-(p * p.log()).sum())), abs=1e-9
    )
    assert rankme(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(1.754760, abs=1e-6)
    assert rankme(torch.eye(8)) == pytest.approx(8.000691, abs=1e-6)
    assert rankme(torch.ones(8, 8)) == pytest.approx(1.000796, abs=1e-6)  # all rows equal: collapsed


def test_rankme_of_low_rank_and_isotropic_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(2048, 128, generator=g)
    assert 120 < rankme(iso) <= 128  # near full rank
    low = torch.randn(2048, 8, generator=g) @ torch.randn(8, 128, generator=g)
    assert rankme(low) == pytest.approx(8, abs=1.0)
    assert rankme(torch.zeros(4, 4)) == 0.0


def test_alignment_uniformity_std_hand_computed() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: e1, e2 at squared distance 2
    assert uniformity(x) == pytest.approx(-4.0)  # log exp(-2 * 2)
    assert alignment(x, x) == 0.0
    assert alignment(x, x.flip(0)) == pytest.approx(2.0)
    same = torch.ones(16, 4)
    assert uniformity(same) == pytest.approx(0.0) and normalised_std(same) == pytest.approx(0.0)
    # std of the normalised rows: e1, e2 -> per-dim std sqrt(0.5) each, times sqrt(2) = 1
    assert normalised_std(x) == pytest.approx(math.sqrt(0.5) * math.sqrt(2))
    iso = torch.randn(4096, 64, generator=torch.Generator().manual_seed(1))
    assert normalised_std(iso) == pytest.approx(1.0, abs=0.03)
    d = describe(iso[:100], iso[:100])
    assert set(d) == {"rankme", "dim", "uniformity", "std", "alignment"} and d["alignment"] == 0.0


def test_loss_trend_tells_a_falling_loss_from_a_flat_one() -> None:
    falling = [10.0 - 0.1 * i for i in range(80)]
    flat = [5.0] * 40 + [5.0 + 0.001 * (i % 2) for i in range(40)]
    assert loss_trend(falling)["still_falling"] is True
    assert loss_trend(flat)["still_falling"] is False
    assert loss_trend([1.0, 2.0]) is None  # too short to say


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 3)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x = batch[0]
        z = self.net(x)
        return {"loss": z.pow(2).mean(), "features": x, "embeddings": torch.stack([z, z + 0.1])}

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):  # noqa: ANN201
        data = torch.utils.data.TensorDataset(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)))
        return torch.utils.data.DataLoader(data, batch_size=8)


def test_monitor_logs_every_n_steps_and_keeps_every_loss(tmp_path) -> None:  # noqa: ANN001
    monitor = CollapseMonitor(every_n_steps=2)
    logger = pl.loggers.CSVLogger(tmp_path)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[monitor],
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(Tiny())
    assert len(monitor.losses) == 16  # 64 / 8 x 2 epochs, every step kept
    text = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    header = text.splitlines()[0].split(",")
    for key in ("diag/embedding_rankme", "diag/embedding_alignment", "diag/features_uniformity", "diag/embedding_std"):
        assert key in header
    assert CollapseMonitor(every_n_steps=None).state_dict() == {"losses": []}
    with pytest.raises(ValueError, match="every_n_steps=0"):
        CollapseMonitor(every_n_steps=0)
