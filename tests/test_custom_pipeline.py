"""A two-stage method and a dataset defined in this file run through ``lssl sweep`` with nothing
added to the package: the method names its pipeline (a class attribute), the spec names both by
class path and sets the pipeline's options in its own section; the runner evaluates and records
what the pipeline trained, a second call re-uses the result, and a run whose result is gone
re-uses its finished first stage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from datamodules.dataset_card import DatasetCard
from datamodules.in_memory import InMemoryLTDataModule, Source
from lightning_ssl.cli.main import main
from lightning_ssl.sweep.pipelines import Pipeline, Trained
from lightning_ssl.sweep.resolve import instantiate
from lightning_ssl.sweep.runner import load_results
from lightning_ssl.sweep.spec import Run, expand, spec_from_dict


class BarsLT(InMemoryLTDataModule):
    """Four classes of 8x8 grey images, class c a bright bar on rows 2c and 2c+1, plus noise."""

    card = DatasetCard(
        name="bars_lt_test",
        num_classes=4,
        image_size=8,
        channels=1,
        mean=(0.3,),
        std=(0.4,),
        group_rule="thirds",
        protocol="exp profile over 30 images per class",
        source="drawn by tests/test_custom_pipeline.py",
    )

    def __init__(self, image_size: int | None = 8, recipe: str = "small_gray", **kwargs: Any) -> None:
        super().__init__(image_size=image_size, recipe=recipe, **kwargs)

    def load_source(self) -> Source:
        rng = np.random.default_rng(0)

        def draw(per_class: int) -> tuple[torch.Tensor, np.ndarray]:
            labels = np.repeat(np.arange(4), per_class)
            images = rng.integers(0, 60, size=(labels.size, 1, 8, 8), dtype=np.uint8)
            for i, c in enumerate(labels):
                images[i, 0, 2 * c : 2 * c + 2] = 230
            return torch.from_numpy(images), labels

        return Source(*draw(30), *draw(10))


class TinyContrastive(pl.LightningModule):
    """A linear encoder that pulls the two views of an image together against the batch's other
    images (InfoNCE at temperature 0.2)."""

    pipeline = "test_custom_pipeline.TwoStages"

    def __init__(self, width: int = 16, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        # the datamodule repeats grey images to 3 channels (its default)
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.ReLU())
        self.projector = nn.Linear(width, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (v1, v2, *_), _, _ = batch
        z1, z2 = (F.normalize(self.projector(self(v)), dim=1) for v in (v1, v2))
        loss = F.cross_entropy(z1 @ z2.T / 0.2, torch.arange(len(z1)))
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class TwoStages(Pipeline):
    """Stage 1 trains the configured model for ``first_epochs``; stage 2 trains a new one, started
    from stage 1's weights, for ``second_epochs`` at a tenth of the learning rate. A stage whose
    checkpoint is there is not trained again."""

    section = "two_stages"
    OPTIONS = {"first_epochs": 1, "second_epochs": 1}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; valid keys: {', '.join(cls.OPTIONS)}")

    @classmethod
    def train(cls, run: Run, config: dict[str, Any], run_dir: Path) -> Trained:
        options = {**cls.OPTIONS, **(run.options or {})}
        first = run_dir / "first" / "model.ckpt"
        reused = first.is_file()
        if not reused:
            stage = instantiate({**config, "trainer": {**config["trainer"], "max_epochs": options["first_epochs"]}})
            stage.trainer.fit(stage.model, datamodule=stage.datamodule)
            first.parent.mkdir(parents=True, exist_ok=True)
            stage.trainer.save_checkpoint(first.with_suffix(".tmp"))
            os.replace(first.with_suffix(".tmp"), first)  # the stage is done once its file is whole
        second_config = {**config, "trainer": {**config["trainer"], "max_epochs": options["second_epochs"]}}
        second_config["model"] = {
            **config["model"],
            "init_args": {**config["model"]["init_args"], "lr": config["model"]["init_args"]["lr"] / 10},
        }
        stage = instantiate(second_config)
        stage.model.load_state_dict(torch.load(first, weights_only=False)["state_dict"])
        stage.trainer.fit(stage.model, datamodule=stage.datamodule)
        train = {"epochs": options["first_epochs"] + options["second_epochs"], "first_stage_reused": reused}
        return Trained.of(stage.model, stage.datamodule, stage.trainer, train)


SPEC = {
    "name": "two_stage",
    "base": {
        "model": {"class_path": "test_custom_pipeline.TinyContrastive", "init_args": {"width": 16}},
        "data": {"class_path": "test_custom_pipeline.BarsLT", "init_args": {"batch_size": 16, "imbalance_ratio": 0.5}},
        "trainer": {"accelerator": "cpu", "limit_train_batches": 2, "num_sanity_val_steps": 0},
    },
    "grid": {"seed": [0]},
    "two_stages": {"first_epochs": 2, "second_epochs": 1},
    "evaluation": {"linear_options": {"steps": 20}, "knn_k": 5},
}


def sweep(spec_path: Path, tmp_path: Path) -> int:
    return main(["sweep", str(spec_path), "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")])


def test_a_two_stage_method_from_a_test_file_runs_through_lssl_sweep(tmp_path: Path) -> None:
    spec_path = tmp_path / "two_stage.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    assert sweep(spec_path, tmp_path) == 0
    (record,) = load_results(tmp_path / "results" / "two_stage")
    assert record["pipeline"] == "test_custom_pipeline.TwoStages"
    assert record["pipeline_options"] == {"first_epochs": 2, "second_epochs": 1}
    assert record["train"] == {
        "epochs": 3,
        "first_stage_reused": False,
        "eval_seconds": pytest.approx(record["train"]["eval_seconds"]),
    }
    assert record["config"]["data"]["class_path"] == "test_custom_pipeline.BarsLT"
    assert record["evaluation"]["class_counts"] == [int(30 * 0.5 ** (c / 3)) for c in range(4)]  # LDAM's exp
    assert 0.25 < record["metrics"]["linear_full/acc_top1"] <= 1 and len(record["per_class"]["linear_full"]) == 4
    run_dir = tmp_path / "work" / "two_stage" / record["run_id"]
    first = run_dir / "first" / "model.ckpt"
    stamp = first.stat().st_mtime_ns

    result = tmp_path / "results" / "two_stage" / f"{record['run_id']}.json"
    finished = result.stat().st_mtime_ns
    assert sweep(spec_path, tmp_path) == 0  # finished: nothing is run again
    assert result.stat().st_mtime_ns == finished

    result.unlink()  # the result is gone, the first stage is not: only the second trains again
    assert sweep(spec_path, tmp_path) == 0
    (again,) = load_results(tmp_path / "results" / "two_stage")
    assert again["run_id"] == record["run_id"] and again["train"]["first_stage_reused"] is True
    assert first.stat().st_mtime_ns == stamp


def test_the_pipeline_section_is_checked_and_changes_the_run_id() -> None:
    with pytest.raises(ValueError, match=r"two_stages: unknown key\(s\) \['third_epochs'\]"):
        spec_from_dict({**SPEC, "two_stages": {"third_epochs": 1}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['three_stages'\]"):
        spec_from_dict({**SPEC, "three_stages": {}})
    (a,) = expand(spec_from_dict(SPEC), validate=False)
    (b,) = expand(spec_from_dict({**SPEC, "two_stages": {"first_epochs": 3}}), validate=False)
    assert a.pipeline == "test_custom_pipeline.TwoStages" and a.options == SPEC["two_stages"]
    assert a.run_id != b.run_id
