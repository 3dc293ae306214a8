"""The runner on one tiny real run: result JSON, no re-run, and resume after an interruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl

from lightning_ssl.sweep.runner import SweepPaths, load_results, run_one, run_status
from lightning_ssl.sweep.spec import expand, spec_from_dict

MARKER = "LSSL_TEST_FAIL_MARKER"


class FailOnce(pl.Callback):
    """Raises at the end of the second epoch while the marker file named by $LSSL_TEST_FAIL_MARKER
    exists (removing it): a run interrupted after its first checkpoint. Not part of what it computes."""

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        marker = os.environ.get(MARKER)
        if trainer.current_epoch == 1 and marker and Path(marker).exists():
            Path(marker).unlink()
            raise RuntimeError("simulated crash in epoch 2")


SPEC = {
    "name": "tiny",
    "base": {
        "model": {
            "class_path": "SimCLR",
            "init_args": {"backbone": "resnet_tiny", "proj_hidden_dim": 32, "proj_output_dim": 16, "warmup_epochs": 0},
        },
        "data": {"class_path": "DigitsLT", "init_args": {"batch_size": 64}},
        "trainer": {
            "max_epochs": 2,
            "limit_train_batches": 2,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "callbacks": [
                {"class_path": "lightning_ssl.eval.callbacks.OnlineLinearProbe"},
                {"class_path": "test_sweep_runner.FailOnce"},
            ],
        },
    },
    "grid": {"seed": [3]},
    "evaluation": {"linear_options": {"steps": 50}, "knn_k": 20},
    "floors": [],
}


def test_interrupted_run_resumes_and_finished_run_is_not_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_from_dict(SPEC)
    (run,) = expand(spec)
    paths = SweepPaths.of(spec, tmp_path / "results", tmp_path / "work")
    marker = tmp_path / "fail"
    marker.touch()
    monkeypatch.setenv(MARKER, str(marker))

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_one(run, spec, paths)
    assert not paths.result(run.run_id).exists()
    assert paths.last_checkpoint(run.run_id).is_file()  # epoch 1 was saved
    failure = json.loads(paths.failed(run.run_id).read_text())
    assert "simulated crash" in failure["error"]
    assert not paths.lock(run.run_id).exists()  # released
    assert run_status(paths, run.run_id) == "failed"
    assert [p.name for p in paths.results.iterdir() if p.name.startswith(".")] == []  # no half-written file

    assert run_one(run, spec, paths) == "done"
    result = json.loads(paths.result(run.run_id).read_text())
    assert not paths.failed(run.run_id).exists()
    train = result["train"]
    assert train["resumed_from"] == "checkpoints/last.ckpt"  # relative to the run folder, no machine path
    assert train["session_epochs"] == 1 and train["epochs"] == 2  # only the missing epoch was trained
    assert train["train_images"] == 2 * 64 and train["images_per_s"] > 0
    assert result["run_id"] == run.run_id and result["seed"] == 3 and result["config"] == run.config
    assert len(result["per_class"]["linear_full"]) == 10 and 0 <= result["metrics"]["linear_full/acc_top1"] <= 1
    assert any(k.startswith("knn_k20_t0.1/") for k in result["metrics"])
    assert "online_linear/acc_top1" in result["online"]
    assert result["peak_memory"]["bytes"] > 0 and result["hardware"]["cpu_count"] >= 1
    assert result["versions"]["torch"] and result["wall_time_s"] > 0
    assert result["num_pretrain"] == sum(result["evaluation"]["class_counts"])

    stamp = paths.result(run.run_id).stat().st_mtime_ns
    assert run_one(run, spec, paths) == "finished"
    assert paths.result(run.run_id).stat().st_mtime_ns == stamp
    assert run_status(paths, run.run_id) == "finished"
    assert [r["run_id"] for r in load_results(paths.results)] == [run.run_id]
