"""A method declares its views once; ``lssl fit`` (and the sweep, through the same parser) sets the
datamodule from it, and an explicit data option that contradicts it is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from datamodules.digits import DigitsLT
from lightning_ssl.cli.main import main
from lightning_ssl.config.cli import apply_views
from lightning_ssl.config.errors import UsageError
from lightning_ssl.methods import MTTV, MoCoV2, SimCLR, SwAV
from lightning_ssl.methods.declared_views import Views
from lightning_ssl.sweep.resolve import resolve_config

TINY = [
    "--model.backbone",
    "resnet_tiny",
    "--data.batch_size",
    "32",
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def data_options(**given: object) -> dict[str, object]:
    """The view options of a parsed DigitsLT config: the datamodule's defaults, updated by ``given``."""
    return {"num_large_views": 2, "num_small_views": 0, "small_size": None, "clean_view": False, **given}


@pytest.mark.parametrize(
    ("cls", "options", "expected"),
    [
        (SimCLR, {"num_large_views": 3}, {"num_large_views": 3}),
        (MoCoV2, {"num_large_views": 3}, {"num_large_views": 3}),
        (MTTV, {}, {"clean_view": True}),
        (SwAV, {"num_large_views": 2, "num_small_views": 4}, {"num_small_views": 4}),
        (SwAV, {"num_large_views": 2}, {}),  # no small crops: the datamodule's default already
    ],
)
def test_declared_views_set_the_datamodule(cls: type, options: dict, expected: dict) -> None:
    data = data_options()
    assert apply_views(cls, DigitsLT, options, data) == expected
    assert data == data_options(**expected)


def test_an_explicit_data_option_that_contradicts_the_method_names_both() -> None:
    with pytest.raises(
        UsageError,
        match=r"--data.num_small_views 6 contradicts --model SwAV \(num_large_views=2, "
        r"num_small_views=2\), which reads num_small_views=2",
    ):
        apply_views(SwAV, DigitsLT, {"num_large_views": 2, "num_small_views": 2}, data_options(num_small_views=6))
    # agreeing values are fine, and a plain LightningModule declares nothing
    assert apply_views(SwAV, DigitsLT, {"num_small_views": 2}, data_options(num_small_views=2)) == {}
    assert apply_views(object, DigitsLT, {}, data_options(clean_view=True)) == {}


def test_views_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="at least one large view"):
        Views(num_large_views=0)
    assert Views(num_large_views=2, clean_view=True).data_options() == {"num_large_views": 2, "clean_view": True}


def test_the_method_declares_and_the_data_follows_one_way_only() -> None:
    """The view counts are stated on the method; a data option never sets the method's."""
    resolved = resolve_config(
        {"model": {"class_path": "SwAV", "init_args": {"num_small_views": 2}}, "data": {"class_path": "DigitsLT"}}
    )
    assert resolved["data"]["init_args"]["num_small_views"] == 2
    with pytest.raises(
        ValueError,
        match=r"--data.num_small_views 2 contradicts --model SwAV "
        r"\(num_large_views=2, num_small_views=0\)",
    ):
        resolve_config(
            {
                "model": {"class_path": "SwAV", "init_args": {"num_small_views": 0}},
                "data": {"class_path": "DigitsLT", "init_args": {"num_small_views": 2}},
            }
        )


def test_a_method_that_builds_another_class_declares_that_class_views() -> None:
    """``UOTA`` builds ``UOTASwAV`` (its ``concrete_class``): SwAV's declaration applies, so small crops
    asked of the data alone are refused when the config is read, not at the first training step."""
    with pytest.raises(
        ValueError,
        match=r"--data.num_small_views 2 contradicts --model UOTA .*which reads "
        r"num_small_views=0",
    ):
        resolve_config(
            {"model": {"class_path": "UOTA"}, "data": {"class_path": "DigitsLT", "init_args": {"num_small_views": 2}}}
        )
    resolved = resolve_config(
        {"model": {"class_path": "UOTASwAV", "init_args": {"num_small_views": 2}}, "data": {"class_path": "DigitsLT"}}
    )
    assert resolved["data"]["init_args"]["num_small_views"] == 2


def test_the_sweep_parser_applies_the_declaration() -> None:
    resolved = resolve_config(
        {"model": {"class_path": "MTTV", "init_args": {"backbone": "resnet_tiny"}}, "data": {"class_path": "DigitsLT"}}
    )
    assert resolved["data"]["init_args"]["clean_view"] is True
    with pytest.raises(ValueError, match="contradicts --model SwAV"):
        resolve_config(
            {
                "model": {"class_path": "SwAV", "init_args": {"num_small_views": 2}},
                "data": {"class_path": "DigitsLT", "init_args": {"num_small_views": 4}},
            }
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "extra", "expected"),
    [
        ("MTTV", [], {"clean_view": True}),
        ("SwAV", ["--model.num_prototypes", "20", "--model.proj_hidden_dim", "32"], {"num_small_views": 0}),
        (
            "SwAV",
            ["--model.num_prototypes", "20", "--model.proj_hidden_dim", "32", "--model.num_small_views", "2"],
            {"num_small_views": 2},
        ),
    ],
)
def test_methods_just_run(
    method: str, extra: list[str], expected: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--model", method, "--data", "DigitsLT", *TINY, *extra]) == 0
    (config,) = (tmp_path / "runs").glob("*/csv/config.yaml")
    data = yaml.safe_load(config.read_text())["data"]["init_args"]
    for key, value in expected.items():
        assert data[key] == value, key
    assert list((tmp_path / "runs").glob("*/checkpoints/last.ckpt"))
