"""`lssl data stats` and `lssl data card` on the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.cli.main import main


def test_data_stats_prints_table_groups_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    png = tmp_path / "counts.png"
    assert main(["data", "stats", "digits_lt", "--data.imbalance_ratio", "0.1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "pre-training set: 494 images, 10 classes" in out
    assert "groups (thirds): many 4 classes / 345 images" in out
    assert "test set: 539 images" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_data_stats_balanced_twin(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "stats", "digits_lt", "--data.balanced_twin", "true"]) == 0
    assert "imbalance ratio n_min/n_max: 1" in capsys.readouterr().out


def test_data_card(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "card", "digits_lt"]) == 0
    assert "sklearn" in capsys.readouterr().out


def test_unknown_dataset_lists_choices(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "stats", "mnist_lt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lssl data: unknown dataset 'mnist_lt'; did you mean fashion_mnist_lt?")
    listed = err.split("datasets: ", 1)[1].split(", ")
    assert listed == sorted(listed)  # test files may register datasets of their own: the built-in ones are there
    assert {"cifar100_lt", "cifar10_lt", "digits_lt", "fashion_mnist_lt", "image_folder_lt"} <= set(listed)
    assert "\n" not in err


def test_bad_ratio_names_the_numbers(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "stats", "digits_lt", "--data.imbalance_ratio", "2.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lssl data: imbalance_ratio=2.0 is outside (0, 1]") and "\n" not in err
