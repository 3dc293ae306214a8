"""Any LightningModule plugs in: a BYOL that knows only the batch contract ``(views, target,
index)`` and whose ``forward`` returns features runs through ``lssl fit``, ``lssl probe`` and a
sweep, evaluated by the suite's callbacks and offline protocol."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_ssl.cli.main import main
from lightning_ssl.sweep.runner import SweepPaths, run_one
from lightning_ssl.sweep.spec import expand, spec_from_dict
from tests.test_cli_fit import last_values


class PlainBYOL(pl.LightningModule):
    """BYOL (Grill et al., NeurIPS 2020): an online network predicts an EMA target's projection."""

    def __init__(self, dim: int = 32, lr: float = 0.05, momentum: float = 0.99) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.projector = nn.Sequential(nn.Linear(16, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, dim))
        self.predictor = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.target = copy.deepcopy(nn.Sequential(self.backbone, self.projector)).requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        (v1, v2, *_), _, _ = batch  # the labels are never read
        online = self.predictor(self.projector(self(torch.cat([v1, v2]))))
        with torch.no_grad():
            target = self.target(torch.cat([v2, v1]))
        loss = 2 - 2 * F.cosine_similarity(online, target, dim=-1).mean()
        self.log("train/loss", loss)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, *args) -> None:  # noqa: ANN002
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        for t, o in zip(self.target.parameters(), online):
            t.mul_(self.momentum).add_(o, alpha=1 - self.momentum)

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr, momentum=0.9)


MODEL = "test_plain_module.PlainBYOL"
TRAINER = {
    "max_epochs": 1,
    "limit_train_batches": 2,
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


@pytest.mark.slow
def test_plain_module_through_fit_and_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = [f"--trainer.{k}={str(v).lower()}" for k, v in TRAINER.items()]
    assert (
        main(["fit", "--model", MODEL, "--model.dim", "16", "--data", "DigitsLT", "--data.batch_size", "64", *trainer])
        == 0
    )
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("plainbyol-digitslt-")
    metrics = last_values(run / "csv" / "metrics.csv")  # the suite's probes evaluated the plain module
    assert 0 < metrics["knn_k200_t0.1/acc_top1"] <= 1 and "online_linear/thirds/acc_few" in metrics
    assert "train/loss" in metrics and "lr" in metrics
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "probe.json"
    assert main(["probe", str(ckpt), "--out", str(out), "--linear_steps", "20", "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["method"].endswith("PlainBYOL")
    # the offline kNN on the rebuilt module (config + state dict) is the online kNN of the fit
    assert result["metrics"]["knn_k200_t0.1/acc_top1"] == pytest.approx(metrics["knn_k200_t0.1/acc_top1"], abs=1e-6)


@pytest.mark.slow
def test_plain_module_in_a_sweep(tmp_path: Path) -> None:
    spec = spec_from_dict(
        {
            "name": "plain",
            "base": {
                "model": {"init_args": {"dim": 16}},
                "data": {"init_args": {"batch_size": 64}},
                "trainer": {**TRAINER, "num_sanity_val_steps": 0},
            },
            "grid": {"method": [MODEL], "dataset": ["DigitsLT"], "seed": [1]},
            "evaluation": {"linear_options": {"steps": 20}, "knn_k": 20},
        }
    )
    (run,) = expand(spec)
    assert run.config["model"]["class_path"] == MODEL
    paths = SweepPaths.of(spec, tmp_path / "results", tmp_path / "work")
    assert run_one(run, spec, paths) == "done"
    result = json.loads(paths.result(run.run_id).read_text())
    assert 0 <= result["metrics"]["linear_full/acc_top1"] <= 1 and len(result["per_class"]["linear_full"]) == 10
    assert "knn_k200_t0.1/acc_top1" in result["online"]  # the kNN monitor ran during the sweep's fit
