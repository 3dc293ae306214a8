"""W&B without credentials: the run is logged offline, says so in one line, and holds the charts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("wandb")

from lightning_ssl.cli.main import main  # noqa: E402


@pytest.mark.slow
def test_wandb_offline_run_has_config_and_charts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with W&B credentials
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
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
            "--model.temperature",
            "0.37",
            "--data",
            "DigitsLT",
            "--data.batch_size",
            "64",
            "--trainer.max_epochs",
            "1",
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_progress_bar",
            "false",
            "--wandb",
            "lssl-test",
            "--wandb_id",
            "run0042",
        ]
    )
    out = capsys.readouterr().out
    assert out.count("W&B: no credentials found") == 1 and "logging offline" in out
    # the given id names the run, so a resumed run (same id) continues the same W&B run
    found = sorted((tmp_path / "runs" / "wandb").glob("offline-run-*-run0042/run-run0042.wandb"))
    assert len(found) == 1, sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    run_file = found[0]
    data = run_file.read_bytes()
    assert b"0.37" in data and b"temperature" in data  # the config
    for key in (
        b"online_linear/per_class",
        b"acc_vs_frequency",
        b"knn_k200_t0.1/thirds/acc_few",
        b"online_linear/thirds/acc_many",
    ):
        assert key in data, key
