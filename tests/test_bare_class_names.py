"""Every registered method and dataset is named in a YAML config by its bare class name, as
``lssl fit --model NAME`` names it on the command line (docs/design.md §5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_ssl.class_path import import_class
from lightning_ssl.cli.main import main
from lightning_ssl.config.registry import dataset_classes, method_classes

METHODS = method_classes()


def printed_config(tmp_path: Path, capsys: pytest.CaptureFixture, config: dict) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        code = main(["fit", "--config", str(path), "--print_config"])
    except SystemExit as stop:  # jsonargparse ends --print_config with exit 0
        code = stop.code
    out = capsys.readouterr().out
    assert code in (0, None), out
    return yaml.safe_load(out)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_bare_method_class_path_in_yaml_resolves(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = {
        "model": {"class_path": name, "init_args": {"backbone": "resnet_tiny"}},
        "data": {"class_path": "DigitsLT"},
    }
    resolved = printed_config(tmp_path, capsys, config)
    assert import_class(resolved["model"]["class_path"]) is import_class(METHODS[name])
    assert resolved["model"]["init_args"]["backbone"] == "resnet_tiny"


def test_a_bare_dataset_class_path_in_yaml_resolves(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = {"model": {"class_path": "SimCLR"}, "data": {"class_path": "FashionMNISTLT"}}
    resolved = printed_config(tmp_path, capsys, config)
    assert import_class(resolved["data"]["class_path"]) is import_class(dataset_classes()["FashionMNISTLT"])
