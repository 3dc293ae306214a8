"""A datamodule is registered where it is defined: one defined in this file, with no list edited
anywhere, is found by its card's name and its class name by ``lssl fit``, ``lssl data`` and the
name lookups the sweep uses."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.dataset_card import DatasetCard
from datamodules.in_memory import InMemoryLTDataModule, Source
from datamodules.names import datamodule_class, datamodule_classes
from lightning_ssl.cli.main import main
from lightning_ssl.config.registry import dataset_classes, dataset_path

TOY_CARD = DatasetCard(
    name="toy_lt",
    num_classes=4,
    image_size=16,
    channels=1,
    mean=(0.5,),
    std=(0.29,),
    group_rule="thirds",
    protocol="exp profile over 40 random images per class",
    source="made in tests/test_dataset_names.py",
)


class ToyLT(InMemoryLTDataModule):
    """Four classes of seeded random 16x16 grey images: a dataset a user adds in their own file."""

    card = TOY_CARD

    def load_source(self) -> Source:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(4), 40)
        images = torch.from_numpy(rng.integers(0, 256, (labels.size, 1, 16, 16), dtype=np.uint8))
        return Source(images, labels, images[::4].clone(), labels[::4].copy())


def test_found_by_card_name_and_class_name() -> None:
    assert datamodule_classes()["toy_lt"] is ToyLT
    assert datamodule_class("toy_lt") is ToyLT and datamodule_class("toylt") is ToyLT
    assert dataset_classes()["ToyLT"] == f"{__name__}.ToyLT"
    assert dataset_path("ToyLT") == dataset_path("toy_lt") == f"{__name__}.ToyLT"


def test_lssl_data_and_fit_take_it_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert main(["data", "stats", "toy_lt", "--data.imbalance_ratio", "0.5"]) == 0
    assert "pre-training set: 116 images, 4 classes" in capsys.readouterr().out  # 40 + 31 + 25 + 20 (exp)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "fit",
                "--model",
                "SimCLR",
                "--model.backbone",
                "resnet_tiny",
                "--model.proj_hidden_dim",
                "32",
                "--model.proj_output_dim",
                "16",
                "--data",
                "ToyLT",
                "--data.imbalance_ratio",
                "0.5",
                "--data.batch_size",
                "32",
                "--trainer.max_steps",
                "2",
                "--trainer.accelerator",
                "cpu",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
            ]
        )
        == 0
    )
    (ckpt,) = tmp_path.glob("runs/*/checkpoints/last.ckpt")
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["datamodule_class"] == f"{__name__}.ToyLT"


def test_two_datamodules_with_one_card_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("toy_clash")
    module.Clash = type("Clash", (InMemoryLTDataModule,), {"card": TOY_CARD, "__module__": "toy_clash"})
    monkeypatch.setitem(sys.modules, "toy_clash", module)
    with pytest.raises(ValueError, match=rf"'toy_lt' is claimed by {__name__}.ToyLT and toy_clash.Clash"):
        datamodule_classes()


def test_a_class_made_in_a_function_is_not_registered() -> None:
    local = type("LocalLT", (InMemoryLTDataModule,), {"card": TOY_CARD, "__module__": __name__})
    assert datamodule_classes()["toy_lt"] is ToyLT and local not in datamodule_classes().values()
