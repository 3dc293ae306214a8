"""OnlineLinearProbe and KNNMonitor inside a real (CPU, single-process) Lightning Trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ssl.eval.callbacks import KNNMonitor, OnlineLinearProbe
from lightning_ssl.eval.knn import knn_predict
from lightning_ssl.eval.metrics import group_report

NUM_CLASSES, DIM, BATCH = 6, 8, 4


class TinyMethod(pl.LightningModule):
    """Frozen random backbone (so features are a fixed function of the input) and a dummy loss."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(DIM, DIM)
        with torch.no_grad():
            self.backbone.weight.copy_(
                torch.eye(DIM) + 0.1 * torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(0))
            )
            self.backbone.bias.zero_()
        self.backbone.requires_grad_(False)
        self.dummy = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        views, _, _ = batch
        feats = self(views[0])
        return {"loss": (self.dummy * feats.mean()).pow(2), "features": feats.detach()}

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        image, target, _ = batch
        return {"features": self(image), "target": target}

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    return torch.eye(NUM_CLASSES, DIM)[y] * 2 + 0.5 * torch.randn(n, DIM, generator=g), y


class TinyData(pl.LightningDataModule):
    """6 classes; training targets hold -1 (unknown) for some samples, batch 1 entirely."""

    def __init__(self, groups: dict[str, list[int]] | None = None, rule: str = "thirds") -> None:
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.class_counts = np.array([50, 40, 20, 10, 5, 2])
        self.class_groups = {
            k: np.array(v, dtype=np.int64)
            for k, v in (groups or {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}).items()
        }
        self.group_rule = rule
        self.probe_sets = ["full"]
        self.probe_calls = 0
        x, y = _blobs(16, seed=1)
        y_train = y.clone()
        y_train[[1, 4, 5, 6, 7, 10]] = -1
        self.train_x, self.train_y = x, y_train
        self.probe_x, self.probe_y = _blobs(24, seed=2)
        self.test_x, self.test_y = _blobs(18, seed=3)

    def train_dataloader(self) -> DataLoader:
        data = TensorDataset(self.train_x, self.train_x + 0.01, self.train_y, torch.arange(16))
        return DataLoader(
            data,
            batch_size=BATCH,
            collate_fn=lambda b: (
                [torch.stack([s[0] for s in b]), torch.stack([s[1] for s in b])],
                torch.stack([s[2] for s in b]),
                torch.stack([s[3] for s in b]),
            ),
        )

    def _eval(self, x: torch.Tensor, y: torch.Tensor) -> DataLoader:
        return DataLoader(TensorDataset(x, y, torch.arange(len(y))), batch_size=5)

    def val_dataloader(self) -> DataLoader:
        return self._eval(self.test_x, self.test_y)

    def test_dataloader(self) -> DataLoader:
        return self._eval(self.test_x, self.test_y)

    def probe_dataloader(self, name: str = "full") -> DataLoader:
        self.probe_calls += 1
        return self._eval(self.probe_x, self.probe_y)


def _trainer(callbacks: list, max_epochs: int = 1) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def _replica_head(dm: TinyData, model: TinyMethod, lr: float, epochs: int) -> nn.Linear:
    """The head trained by hand: zero init, SGD(momentum 0.9), batches 0..2, unknown labels skipped."""
    head = nn.Linear(DIM, NUM_CLASSES)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for b in range(3):
            x, y = dm.train_x[b * BATCH : (b + 1) * BATCH], dm.train_y[b * BATCH : (b + 1) * BATCH]
            keep = y >= 0
            if not keep.any():
                continue
            with torch.no_grad():
                feats = model(x[keep])
            loss = F.cross_entropy(head(feats), y[keep])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


def test_online_probe_trains_like_a_hand_loop_and_logs_group_metrics() -> None:
    dm, model, probe = TinyData(), TinyMethod(), OnlineLinearProbe(lr=0.5)
    trainer = _trainer([probe])
    trainer.fit(model, datamodule=dm)

    expected_head = _replica_head(dm, model, lr=0.5, epochs=1)
    assert torch.allclose(probe.head.weight, expected_head.weight, atol=1e-6)
    assert torch.allclose(probe.head.bias, expected_head.bias, atol=1e-6)
    assert probe.head.weight.abs().sum() > 0  # it did train

    with torch.no_grad():
        pred = expected_head(model(dm.test_x)).argmax(1)
    expected = group_report(pred, dm.test_y, NUM_CLASSES, dm.class_groups, "thirds", "online_linear")
    assert "online_linear/thirds/acc_few" in expected
    for key, value in expected.items():
        assert trainer.callback_metrics[key].item() == pytest.approx(value, abs=1e-6), key
    assert probe.last_metrics == pytest.approx(expected)
    per_class = probe.last_per_class["online_linear"]
    assert per_class.shape == (NUM_CLASSES,)
    assert np.nanmean(per_class) == pytest.approx(expected["online_linear/acc_mean_class"])


def test_online_probe_resume_is_exact(tmp_path) -> None:  # noqa: ANN001
    dm = TinyData()
    straight = OnlineLinearProbe(lr=0.5)
    _trainer([straight], max_epochs=2).fit(TinyMethod(), datamodule=dm)

    first = OnlineLinearProbe(lr=0.5)
    trainer = _trainer([first], max_epochs=1)
    trainer.fit(TinyMethod(), datamodule=dm)
    ckpt = tmp_path / "one_epoch.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = OnlineLinearProbe(lr=0.5)
    _trainer([resumed], max_epochs=2).fit(TinyMethod(), datamodule=dm, ckpt_path=ckpt)

    # A restart without the head state (zero head) or without momentum buffers would differ.
    assert torch.equal(resumed.head.weight, straight.head.weight)
    assert torch.equal(resumed.head.bias, straight.head.bias)
    assert not torch.equal(first.head.weight, straight.head.weight)


class PlainModule(pl.LightningModule):
    """Knows only the batch contract: ``training_step`` returns the loss alone and there is no
    ``validation_step``; a BatchNorm (momentum 1: its running statistics are those of the last
    batch it saw in train mode) tells whether the probe's extra forward ran in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyMethod()
        self.norm = nn.BatchNorm1d(DIM, momentum=1.0, affine=False)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.inner(x))

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        self.seen.append(batch[0][0].clone())
        return (self.inner.dummy * self(batch[0][0]).mean()).pow(2)

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_callbacks_work_with_a_module_that_returns_only_its_loss() -> None:
    dm, model = TinyData(), PlainModule()
    probe, knn = OnlineLinearProbe(lr=0.5), KNNMonitor(k=5)
    trainer = _trainer([probe, knn])
    trainer.fit(model, datamodule=dm)
    model.eval()
    with torch.no_grad():  # the running statistics after training: the last batch's, as in train mode
        assert torch.allclose(model.norm.running_mean, model.inner(model.seen[-1]).mean(0), atol=1e-6)
    # the head: trained on model(views[0]) in eval mode, i.e. normalised by the running statistics,
    # which (momentum 1) are those of the same batch
    head = nn.Linear(DIM, NUM_CLASSES)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    for b, x in enumerate(model.seen):
        y = dm.train_y[b * BATCH : (b + 1) * BATCH]
        keep = y >= 0
        if not keep.any():
            continue
        inner = model.inner(x).detach()
        feats = (inner - inner.mean(0)) / torch.sqrt(
            inner.var(0, unbiased=True) + model.norm.eps
        )  # running_var is unbiased
        loss = F.cross_entropy(head(feats[keep]), y[keep])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(probe.head.weight, head.weight, atol=1e-5)
    # validation ran (the module got a feature validation_step): both probes logged their metrics
    for key in ("online_linear/acc_top1", "knn_k5_t0.1/thirds/acc_few"):
        assert key in trainer.callback_metrics
    with torch.no_grad():
        pred = knn_predict(model(dm.test_x), model(dm.probe_x), dm.probe_y, NUM_CLASSES, k=5, temperature=0.1)
    expected = group_report(pred, dm.test_y, NUM_CLASSES, dm.class_groups, "thirds", "knn_k5_t0.1")
    assert trainer.callback_metrics["knn_k5_t0.1/acc_top1"].item() == pytest.approx(expected["knn_k5_t0.1/acc_top1"])


def test_knn_monitor_logs_named_metrics_equal_to_direct_knn() -> None:
    dm, model = TinyData(), TinyMethod()
    knn = KNNMonitor(k=5, temperature=0.07)
    trainer = _trainer([knn])
    trainer.fit(model, datamodule=dm)

    with torch.no_grad():
        pred = knn_predict(model(dm.test_x), model(dm.probe_x), dm.probe_y, NUM_CLASSES, k=5, temperature=0.07)
    expected = group_report(pred, dm.test_y, NUM_CLASSES, dm.class_groups, "thirds", "knn_k5_t0.07")
    assert "knn_k5_t0.07/thirds/std" in expected
    for key, value in expected.items():
        assert trainer.callback_metrics[key].item() == pytest.approx(value, abs=1e-9), key
    assert knn.last_per_class["knn_k5_t0.07"].shape == (NUM_CLASSES,)
    assert dm.probe_calls == 1  # not during the sanity check


def test_knn_monitor_every_n_epochs_and_last_epoch() -> None:
    dm = TinyData()
    _trainer([KNNMonitor(every_n_epochs=2, k=3)], max_epochs=3).fit(TinyMethod(), datamodule=dm)
    assert dm.probe_calls == 2  # epoch 2 (period) and epoch 3 (last), not epoch 1 nor sanity check


def test_empty_group_is_logged_as_nan() -> None:
    dm = TinyData(groups={"many": [0, 1, 2], "medium": [3, 4, 5], "few": []}, rule="thresholds>100/20-100/<20")
    trainer = _trainer([KNNMonitor(k=3), OnlineLinearProbe()])
    trainer.fit(TinyMethod(), datamodule=dm)
    for prefix in ("knn_k3_t0.1", "online_linear"):
        assert math.isnan(trainer.callback_metrics[f"{prefix}/thresholds>100_20-100_<20/acc_few"].item())
        assert trainer.callback_metrics[f"{prefix}/thresholds>100_20-100_<20/acc_many"].item() >= 0


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: OnlineLinearProbe(lr=0), "lr must be > 0, got 0"),
        (lambda: OnlineLinearProbe(momentum=1.0), r"momentum must lie in \[0, 1\)"),
        (lambda: KNNMonitor(every_n_epochs=0), "every_n_epochs must be >= 1"),
        (lambda: KNNMonitor(k=0), "k must be >= 1"),
        (lambda: KNNMonitor(temperature=-1.0), "temperature must be > 0"),
    ],
)
def test_bad_arguments_raise(factory, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        factory()
