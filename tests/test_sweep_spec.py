"""Sweep specs: expansion, run ids, and bad input failing before any run starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.cli.sweep import run as sweep_cli
from lightning_ssl.sweep.identity import run_hash
from lightning_ssl.sweep.spec import expand, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "model": {"init_args": {"backbone": "resnet_tiny"}},
    "data": {"class_path": "DigitsLT"},
    "trainer": {"max_epochs": 1},
}


def spec(grid: dict, **extra: object) -> object:
    return spec_from_dict({"name": "t", "base": BASE, "grid": grid, **extra})


def methods_only(grid: dict) -> object:
    return spec(grid, floors=[])


def test_grid_expansion_axes_and_variants() -> None:
    runs = expand(
        spec(
            {"method": ["SimCLR", "SimCLR+rwSAM"], "balanced_twin": [False, True], "seed": [0, 1], "model.lr": [0.2]},
            methods={"SimCLR+rwSAM": {"class": "SimCLR", "model.sam": {"rho": 0.05}}},
        )
    )
    # 8 method runs, then the floors: RawPixels per run set (nothing random), RandomInit per run set and seed
    floors = [r for r in runs if r.reference]
    assert [r.method for r in floors] == ["RawPixels"] * 2 + ["RandomInit"] * 4 and runs[:6] == floors
    assert len(runs) == 2 * 2 * 2 + 6 and len({r.run_id for r in runs}) == 14
    run = next(r for r in runs if r.method == "SimCLR+rwSAM" and r.seed == 1 and r.axes["balanced_twin"])
    model, data = run.config["model"], run.config["data"]
    assert model["class_path"].endswith("simclr.SimCLR") and model["init_args"]["sam"]["rho"] == 0.05
    assert model["init_args"]["lr"] == 0.2 and model["init_args"]["temperature"] is not None  # default filled in
    assert data["init_args"]["balanced_twin"] is True and data["init_args"]["view_seed"] == 1
    assert run.config["seed_everything"] == 1
    assert run.run_id == run_hash(run.hashed()) and len(run.run_id) == 10


def test_run_id_ignores_where_it_runs_but_not_what() -> None:
    (a,) = expand(methods_only({"method": ["SimCLR"]}))
    (b,) = expand(
        methods_only({"method": ["SimCLR"], "trainer.accelerator": ["cpu"], "trainer.enable_progress_bar": [False]})
    )
    (c,) = expand(methods_only({"method": ["SimCLR"], "trainer.max_epochs": [2]}))
    assert a.run_id == b.run_id != c.run_id


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"grid": {"method": ["SimCLX"]}}, ["unknown method 'SimCLX'", "SimCLR", "MoCoV2"]),
        (
            {"grid": {"method": ["SimCLR"], "dataset": ["Digits"]}},
            ["unknown dataset 'Digits'", "DigitsLT", "CIFAR10LT"],
        ),
        ({"grid": {"method": ["SimCLR"], "model.tempratur": [0.2]}}, ["'tempratur'", "valid options", "temperature"]),
        ({"grid": {"methd": ["SimCLR"]}}, ["unknown grid axis 'methd'", "method"]),
        ({"grid": {"method": ["SimCLR"]}, "evaluaton": {}}, ["unknown key(s) ['evaluaton']", "evaluation"]),
        ({"grid": {"method": ["SimCLR"]}, "evaluation": {"linear_epoch": 3}}, ["linear_epoch", "linear_recipe"]),
        (
            {"grid": {"method": ["SimCLR"]}, "evaluation": {"linear_recipe": "sdcrl"}},
            ["evaluation: unknown linear probe recipe 'sdcrl'", "sdclr"],
        ),
        (
            {"grid": {"method": ["SimCLR"]}, "evaluation": {"linear_options": {"step": 9}}},
            ["evaluation: unknown linear probe option(s) ['step']", "steps"],
        ),
    ],
)
def test_bad_spec_names_the_key_and_choices(raw: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        expand(spec_from_dict({"base": BASE, **raw}))
    for word in words:
        assert word in str(err.value)


def test_bad_spec_fails_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("base: {data: {class_path: DigitsLT}}\ngrid: {method: [SimCLR, Nope]}\n")
    assert sweep_cli([str(path), "--results", str(tmp_path / "r"), "--work", str(tmp_path / "w")]) == 2
    assert "unknown method 'Nope'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "w").exists()


def test_dry_run_expands_every_shipped_spec(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    specs = sorted((ROOT / "benchmarks").glob("*.yaml"))
    names = {p.stem for p in specs}
    assert {
        "default",
        "robustness",
        "robustness_fashion_mnist_cpu",
        "cifar10_lt",
        "cifar100_lt",
        "imagenet_lt",
        "places_lt",
    } <= names
    for path in specs:
        assert sweep_cli([str(path), "--dry-run", "--results", str(tmp_path)]) == 0, path
        out = capsys.readouterr().out
        assert " pending " in out and f"{tmp_path / path.stem}" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_exclude_drops_the_matching_grid_points_only() -> None:
    from lightning_ssl.sweep.spec import expand, spec_from_dict

    raw = {
        "name": "x",
        "base": {"model": {"init_args": {"backbone": "resnet_tiny"}}, "data": {"class_path": "DigitsLT"}},
        "grid": {"method": ["SimCLR", "MoCoV2", "Supervised"], "balanced_twin": [False, True]},
        "floors": [],
    }
    assert len(expand(spec_from_dict(raw), validate=False)) == 6
    raw["exclude"] = [{"balanced_twin": True, "method": ["MoCoV2", "Supervised"]}]
    kept = [(r.method, r.axes["balanced_twin"]) for r in expand(spec_from_dict(raw), validate=False)]
    assert sorted(kept) == [("MoCoV2", False), ("SimCLR", False), ("SimCLR", True), ("Supervised", False)]
    raw["exclude"] = [{"seed": 1}]
    with pytest.raises(ValueError, match="exclude entry"):
        spec_from_dict(raw)
