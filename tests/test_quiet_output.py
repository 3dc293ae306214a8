"""Quiet by default: a two-run sweep prints one line per run and a summary with the next command
(before: a model summary and a progress bar per run, about 40 lines); ``--verbose`` brings
Lightning's output back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_ssl.cli.main import main

SPEC = {
    "name": "tiny",
    "base": {
        "model": {"init_args": {"backbone": "resnet_tiny", "proj_hidden_dim": 16, "proj_output_dim": 8}},
        "data": {"class_path": "DigitsLT", "init_args": {"batch_size": 32}},
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "num_sanity_val_steps": 0},
    },
    "grid": {"method": ["SimCLR", "MoCoV2"]},
    "floors": [],
}


def test_a_two_run_sweep_prints_a_line_per_run_and_the_next_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(yaml.safe_dump(SPEC))
    assert main(["sweep", "spec.yaml", "--results", "r", "--work", "w"]) == 0
    out, err = capfd.readouterr()
    progress = [line for line in err.splitlines() if line.strip()]  # the per-run lines go to stderr
    summary = [line for line in out.splitlines() if line.strip()]
    assert len(progress) + len(summary) <= 4, out + err  # before: ~40 (a model summary and a bar per run)
    assert progress[0].startswith("1/2 done ") and progress[1].startswith("2/2 done "), err
    assert summary == [f"sweep 'tiny': 2 done ({Path('r', 'tiny')}); next: lssl report spec.yaml"]
