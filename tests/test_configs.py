"""Every shipped method x dataset-family config parses and instantiates (model and datamodule)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.cli.lightning import SSLCLI
from lightning_ssl.config.registry import import_all_datamodules
from lightning_ssl.methods.base import SSLMethod

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
FAMILY_DATA = {"cifar": "cifar10_lt.yaml", "imagenet": "imagenet_lt.yaml"}
CASES = [(family, path.name) for family in FAMILY_DATA for path in sorted((CONFIGS / family).glob("*.yaml"))]


@pytest.mark.parametrize("family,method", CASES)
def test_config_instantiates(family: str, method: str) -> None:
    import_all_datamodules()
    from datamodules.base import LongTailDataModule

    cli = SSLCLI(
        SSLMethod,
        LongTailDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config",
            str(CONFIGS / "data" / FAMILY_DATA[family]),
            "--config",
            str(CONFIGS / family / method),
            "--model.backbone",
            "resnet_tiny",
            "--trainer.logger",
            "false",
            "--trainer.accelerator",
            "cpu",
            "--trainer.precision",
            "32-true",
        ],
    )
    assert isinstance(cli.model, SSLMethod)
    expected = 32 if family == "cifar" else 224
    assert cli.model.hparams.image_size == expected and cli.datamodule.image_size == expected


def test_every_data_config_instantiates() -> None:
    import_all_datamodules()
    from datamodules.base import LongTailDataModule

    for path in sorted((CONFIGS / "data").glob("*.yaml")):
        cli = SSLCLI(
            SSLMethod,
            LongTailDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=[
                "--config",
                str(path),
                "--model",
                "SimCLR",
                "--model.backbone",
                "resnet_tiny",
                "--trainer.logger",
                "false",
            ],
        )
        assert cli.datamodule.batch_size > 0, path
