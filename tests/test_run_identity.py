"""Run identity and stale results: an id made of what changes the result, not of every signature.

The id is computed from the resolved values that differ from the code's defaults; a stored result
whose recorded config or code version differs from what the current code would run is stale.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lightning_ssl.sweep import runner
from lightning_ssl.sweep.identity import COMPUTE_VERSION, stale_keys, stale_reason
from lightning_ssl.sweep.runner import SweepPaths, run_one, run_status
from lightning_ssl.sweep.spec import expand, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "model": {"init_args": {"backbone": "resnet_tiny"}},
    "data": {"class_path": "DigitsLT"},
    "trainer": {"max_epochs": 1},
}


def one(grid: dict, base: dict | None = None, **extra: object) -> runner.Run:
    runs = [r for r in expand(spec_from_dict({"name": "t", "base": base or BASE, "grid": grid, "floors": [], **extra}))]
    assert len(runs) == 1
    return runs[0]


def test_explicit_default_values_and_launch_options_leave_the_id_unchanged() -> None:
    a = one({"method": ["SimCLR"]})
    # check_val_every_n_epoch 1 (Lightning's) and temperature 0.5 (SimCLR's) are the code's defaults
    b = one({"method": ["SimCLR"], "trainer.check_val_every_n_epoch": [1], "model.temperature": [0.5]})
    c = one({"method": ["SimCLR"], "model.temperature": [0.2]})
    assert a.run_id == b.run_id != c.run_id
    assert "model.init_args.temperature" in c.settings and "model.init_args.temperature" not in a.settings
    assert a.settings["model.init_args.backbone"] == "resnet_tiny" and a.settings["seed_everything"] == 0


def test_an_added_option_at_its_default_is_not_stale_a_changed_value_is() -> None:
    run = one({"method": ["SimCLR"]})
    stored = copy.deepcopy(run.config)
    del stored["model"]["init_args"]["warmup_fraction"]  # written before the option existed
    assert stale_keys(stored, run.config) == []
    stored["model"]["init_args"]["lr"] = 0.123  # the code would now run another value
    assert stale_keys(stored, run.config) == ["model.init_args.lr"]
    stored["trainer"]["enable_progress_bar"] = not stored["trainer"].get("enable_progress_bar")
    assert stale_keys(stored, run.config) == ["model.init_args.lr"]  # where it runs is not what it computes


def test_a_renamed_option_is_stale_only_when_the_run_had_set_it() -> None:
    run = one({"method": ["SimCLR"]})
    stored = copy.deepcopy(run.config)
    stored["model"]["init_args"]["num_views_old_name"] = 2  # an option the code no longer has
    assert stale_keys(stored, run.config) == ["model.init_args.num_views_old_name"]  # no settings: unknown
    assert stale_keys(stored, run.config, run.settings) == []  # at its default when the run was computed
    was_set = {**run.settings, "model.init_args.num_views_old_name": 3}
    assert stale_keys(stored, run.config, was_set) == ["model.init_args.num_views_old_name"]


def record_of(run: runner.Run, **extra: object) -> dict:
    return {
        "run_id": run.run_id,
        "metrics": {"linear_full/acc_top1": 0.5},
        "config": run.config,
        "compute_version": COMPUTE_VERSION,
        "evaluation_protocol": run.evaluation,
        "transfer_protocol": run.transfer,
        **extra,
    }


def test_stale_reason_names_the_cause() -> None:
    run = one({"method": ["SimCLR"]})
    assert stale_reason(record_of(run), run) is None
    assert "code version 1" in stale_reason(record_of(run, compute_version=1), run)
    other = copy.deepcopy(run.config)
    other["data"]["init_args"]["batch_size"] = 7
    assert "data.init_args.batch_size" in stale_reason(record_of(run, config=other), run)


def test_sweep_keeps_stale_results_unless_asked_and_reruns_unreadable_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_from_dict({"name": "t", "base": BASE, "grid": {"method": ["SimCLR"]}, "floors": []})
    (run,) = expand(spec)
    paths = SweepPaths(tmp_path / "results", tmp_path / "work")
    paths.results.mkdir(parents=True)
    calls: list[str] = []

    def fake_execute(run: runner.Run, *args: object, **kwargs: object) -> dict:
        calls.append(run.run_id)
        return record_of(run, fresh=True)

    monkeypatch.setattr(runner, "execute", fake_execute)
    stale = record_of(run, compute_version=COMPUTE_VERSION - 1)
    paths.result(run.run_id).write_text(json.dumps(stale))
    before = paths.result(run.run_id).read_bytes()
    assert run_status(paths, run.run_id, run) == "stale"
    assert run_one(run, spec, paths) == "stale" and calls == []
    assert paths.result(run.run_id).read_bytes() == before  # nothing recomputed or overwritten
    assert run_one(run, spec, paths, rerun_stale=True) == "done" and calls == [run.run_id]
    assert json.loads(paths.result(run.run_id).read_text())["fresh"] is True
    assert run_status(paths, run.run_id, run) == "finished"
    # a truncated result is unfinished: moved aside (kept), and the run runs again
    paths.result(run.run_id).write_text('{"run_id": "x", "metr')
    assert run_status(paths, run.run_id, run) == "pending"
    assert run_one(run, spec, paths) == "done" and len(calls) == 2
    aside = list(paths.results.glob("*.bad"))
    assert len(aside) == 1 and aside[0].read_text() == '{"run_id": "x", "metr'


def test_uota_in_shipped_specs_gets_swavs_crops_and_a_half_way_start() -> None:
    from lightning_ssl.sweep.spec import load_spec

    for name in ("cifar10_lt", "imagenet_lt"):
        runs = {
            r.method: r
            for r in expand(load_spec(ROOT / "benchmarks" / f"{name}.yaml"))
            if r.method in ("SwAV", "UOTA") and not r.axes.get("balanced_twin")
        }
        swav, uota = runs["SwAV"].config, runs["UOTA"].config
        assert uota["model"]["class_path"].endswith("UOTASwAV"), name
        for section in ("model", "data"):
            for key in ("num_small_views",):
                assert uota[section]["init_args"][key] == swav[section]["init_args"][key] > 0, (name, section)
        assert uota["data"]["init_args"]["small_size"] == swav["data"]["init_args"]["small_size"]
        assert uota["model"]["init_args"]["num_prototypes"] == swav["model"]["init_args"]["num_prototypes"]


def test_rerun_stale_trains_afresh_instead_of_resuming_the_stale_checkpoint(tmp_path: Path) -> None:
    """A run finished under another code version: its result is stale and its last.ckpt is at the
    end of training. ``rerun_stale`` must train again from step 0 (not resume that checkpoint and
    train 0 epochs), and replace the result only once the new one is written."""
    base = {
        "model": {"init_args": {"backbone": "resnet_tiny", "proj_hidden_dim": 16, "proj_output_dim": 8}},
        "data": {"class_path": "DigitsLT", "init_args": {"batch_size": 64}},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "limit_val_batches": 0},
    }
    spec = spec_from_dict(
        {"name": "t", "base": base, "grid": {"method": ["SimCLR"]}, "floors": [], "evaluation": {"knn_k": 5}}
    )
    (run,) = expand(spec)
    paths = SweepPaths(tmp_path / "results", tmp_path / "work")
    assert run_one(run, spec, paths) == "done"
    first = json.loads(paths.result(run.run_id).read_text())
    assert first["train"]["session_epochs"] == 2 and first["train"]["resumed_from"] is None
    # the same result as written by an older code version, its finished checkpoint still on disk
    first["compute_version"] = COMPUTE_VERSION - 1
    paths.result(run.run_id).write_text(json.dumps(first))
    (paths.run_dir(run.run_id) / runner.IDENTITY).unlink()  # as that version left the folder
    assert paths.last_checkpoint(run.run_id).is_file()
    assert run_one(run, spec, paths, rerun_stale=True) == "done"
    again = json.loads(paths.result(run.run_id).read_text())
    assert again["compute_version"] == COMPUTE_VERSION
    assert again["train"]["resumed_from"] is None and again["train"]["session_epochs"] == 2
    assert again["train"]["global_step"] == 14  # 494 images // 64 (last batch dropped) x 2, from step 0
    # every record carries the collapse diagnostics and the loss curve's trend
    diag = again["diagnostics"]
    assert 1 < diag["features"]["rankme"] <= diag["features"]["dim"] and "alignment" in diag["embedding"]
    assert diag["rows"] == 494 and diag["loss_trend"]["first"] > 0


def test_checkpoint_callback_options_do_not_make_a_result_stale() -> None:
    run = one({"method": ["SimCLR"]})
    stored = copy.deepcopy(run.config)
    stored["trainer"]["callbacks"] = [
        *(stored["trainer"].get("callbacks") or []),
        {
            "class_path": "lightning_ssl.checkpoints.AtomicModelCheckpoint",
            "init_args": {"save_on_train_epoch_end": None},
        },
    ]
    assert stale_keys(stored, run.config) == []
    stored["trainer"]["callbacks"].append({"class_path": "lightning_ssl.eval.callbacks.KNNMonitor"})
    assert stale_keys(stored, run.config) == ["trainer.callbacks"]


def test_a_method_version_makes_only_that_methods_results_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_ssl.sweep import identity

    simclr = one({"method": ["SimCLR"]})
    monkeypatch.setattr(identity, "METHOD_VERSIONS", {"SimCLR": 3})
    assert "SimCLR version 0, the current code is version 3" in stale_reason(record_of(simclr), simclr)
    assert stale_reason(record_of(simclr, method_version=3), simclr) is None
    moco = one({"method": ["MoCoV2"]})
    assert stale_reason(record_of(moco), moco) is None  # another method's results stay current


def test_a_probe_that_ran_out_of_a_smaller_budget_is_stale_and_a_converged_one_is_not() -> None:
    from lightning_ssl.eval.linear import PROBE_RECIPES
    from lightning_ssl.sweep.identity import unconverged_probe

    budget = PROBE_RECIPES["lbfgs"].steps

    def record(steps: int, converged: bool, where: str = "evaluation") -> dict:
        linear = {
            "options": {},
            "runs": {"linear_full": {"recipe": {"name": "lbfgs", "steps": steps}, "converged": converged}},
        }
        return (
            {"evaluation": {"linear": linear}}
            if where == "evaluation"
            else {"transfer": {"digits": {"linear": linear}}}
        )

    assert unconverged_probe(record(500, True)) is None  # L-BFGS would stop at the same step today
    assert unconverged_probe(record(500, False)) == (
        f"linear_full stopped unconverged at its budget of 500 steps; the budget is now {budget}"
    )
    assert unconverged_probe(record(500, False, where="transfer")) is not None
    assert unconverged_probe(record(budget, False)) is None  # spent today's budget: more steps are not asked for
