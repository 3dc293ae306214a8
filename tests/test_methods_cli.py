"""Every method trains a few steps through `lssl fit`, on the embedded default and on a
CIFAR-shaped fixture (torchvision's on-disk format), including rwSAM as an option of any method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_ssl.cli.main import main
from tests.fixtures import write_cifar10

QUICK = [
    "--model.backbone",
    "resnet_tiny",
    "--trainer.max_steps",
    "2",
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
]
SMALL = {"proj_hidden_dim": "32", "proj_output_dim": "16"}
METHODS = {
    "SimSiam": ["--model.proj_hidden_dim", "32", "--model.proj_output_dim", "32", "--model.pred_hidden_dim", "16"],
    "SwAV": [
        "--model.num_prototypes",
        "20",
        "--model.proj_hidden_dim",
        "32",
        "--model.num_small_views",
        "2",
        "--data.small_size",
        "8",
        "--data.recipe",
        "swav",
    ],
    "MoCLR": ["--model.proj_hidden_dim", "32", "--model.proj_output_dim", "16", "--data.recipe", "byol"],
    "UOTASwAV": ["--model.uota_start_epoch", "0", "--model.num_small_views", "2", "--data.small_size", "8"],
    "MTTV": ["--data.clean_view", "true"],
    "SimCLR": ["--model.sam", '{"rho": 0.05, "weights": "label_exp"}', "--model.proj_hidden_dim", "32"],
    "MoCoV2": [
        "--model.sam",
        '{"rho": 0.5, "adaptive": true}',
        "--model.queue_size",
        "64",
        "--model.proj_hidden_dim",
        "32",
    ],
    "SDCLR": ["--model.proj_hidden_dim", "32", "--model.proj_output_dim", "16"],
    "BCL": ["--model.base", "sdclr"],
    "BCLI": [
        "--model.proj_hidden_dim",
        "32",
        "--model.gh",
        '{"num_anchors": 10, "warmup_epochs": 0, "iterations": 20}',
        "--model.temperature_schedule",
        '{"period_epochs": 2}',
    ],
}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("cifar")
    train_labels = np.repeat(np.arange(10), 60)
    test_labels = np.repeat(np.arange(10), 5)
    write_cifar10(
        root,
        train_labels,
        test_labels,
        rng.integers(0, 256, (600, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8),
    )
    return root


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("data", ["digits", "cifar"])
def test_method_trains_through_lssl_fit(
    method: str, data: str, cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if data == "digits":
        data_args = ["--data", "DigitsLT", "--data.batch_size", "16"]
    else:
        data_args = [
            "--data",
            "CIFAR10LT",
            "--data.root",
            str(cifar_root),
            "--data.imbalance_ratio",
            "0.1",
            "--data.batch_size",
            "16",
        ]
    cli = main(["fit", "--model", method, *data_args, *QUICK, *METHODS[method]])
    assert cli == 0


@pytest.mark.parametrize("method", ["SimCLR", "SwAV"])
def test_bf16_autocast_and_channels_last_path(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path GPUs run (device-resident uint8 data, bf16 autocast, channels_last), on the CPU."""
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "fit",
                "--model",
                method,
                "--data",
                "DigitsLT",
                "--data.batch_size",
                "16",
                "--data.resident",
                "true",
                *QUICK,
                "--trainer.precision",
                "bf16-mixed",
                "--model.channels_last",
                "true",
                *METHODS[method],
            ]
        )
        == 0
    )
