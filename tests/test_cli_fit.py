"""`lssl fit` / `lssl probe` end to end on the embedded default, and a user's own method."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_ssl.cli.main import main
from tests.fixtures import write_cifar10

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model.backbone",
    "resnet_tiny",
    "--data",
    "DigitsLT",
    "--data.batch_size",
    "64",
    "--trainer.max_epochs",
    "2",
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def last_values(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every column of a CSVLogger file."""
    last: dict[str, float] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            last.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return last


def fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Path:
    monkeypatch.chdir(tmp_path)
    main(["fit", *args, *TINY])
    (run,) = sorted((tmp_path / "runs").iterdir())  # runs/<method>-<dataset>-<hash>/{checkpoints,csv,tb}
    return run / "csv"


@pytest.mark.slow
def test_fit_simclr_logs_probe_metrics_and_probe_reproduces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = fit(
        tmp_path,
        monkeypatch,
        "--model",
        "SimCLR",
        "--model.proj_hidden_dim",
        "64",
        "--model.proj_output_dim",
        "32",
        "--model.lr",
        "0.3",
    )
    metrics = last_values(run / "metrics.csv")
    online = metrics["online_linear/acc_top1"]
    knn = metrics["knn_k200_t0.1/acc_top1"]
    for column in ("online_linear/thirds/acc_many", "knn_k200_t0.1/thirds/acc_few", "knn_k200_t0.1/thirds/std"):
        assert column in metrics
    (ckpt,) = (tmp_path / "runs").glob("simclr-digitslt-*/checkpoints/last.ckpt")  # one folder per run
    assert ckpt.is_file()
    out = tmp_path / "probe.json"
    assert main(["probe", str(ckpt), "--out", str(out), "--linear_epochs", "30", "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["group_rule"] == "thirds" and len(result["per_class"]["linear_full"]) == 10
    probe_knn = result["metrics"]["knn_k200_t0.1/acc_top1"]
    # the offline kNN over the same bank and test set is the online kNN's number
    assert probe_knn == pytest.approx(knn, abs=1e-6)
    linear = result["metrics"]["linear_full/acc_top1"]
    assert 0.1 < linear <= 1.0 and 0.0 < online <= 1.0  # above chance (10 classes)

    # out-of-domain: the same backbone probed and fine-tuned on another datamodule (a CIFAR fixture)
    rng = np.random.default_rng(0)
    write_cifar10(
        tmp_path / "cifar",
        np.repeat(np.arange(10), 30),
        np.repeat(np.arange(10), 5),
        rng.integers(0, 256, (300, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8),
    )
    out = tmp_path / "transfer.json"
    assert (
        main(
            [
                "probe",
                str(ckpt),
                "--out",
                str(out),
                "--data",
                "CIFAR10LT",
                "--data.root",
                str(tmp_path / "cifar"),
                "--data.image_size",
                "16",
                "--data.profile",
                "balanced",
                "--linear_epochs",
                "5",
                "--knn_k",
                "20",
                "--finetune",
                "true",
                "--finetune_epochs",
                "1",
                "--finetune_iterations",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    transfer = json.loads(out.read_text())
    assert transfer["transfer"] and transfer["datamodule"].endswith("CIFAR10LT")
    assert transfer["class_counts"] == [30] * 10
    for key in ("linear_full/acc_top1", "knn_k20_t0.1/acc_top1", "finetune/acc_top1", "finetune/acc_mean_class"):
        assert 0.0 <= transfer["metrics"][key] <= 1.0, key


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [["--model", "MoCoV2", "--model.queue_size", "128", "--model.proj_hidden_dim", "64"], ["--model", "Supervised"]],
)
def test_fit_other_core_methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: list[str]) -> None:
    run = fit(tmp_path, monkeypatch, *model)
    metrics = last_values(run / "metrics.csv")
    assert "knn_k200_t0.1/acc_top1" in metrics and "online_linear/acc_top1" in metrics
    assert list((tmp_path / "runs").glob("*/checkpoints/last.ckpt"))


def readme_method_source() -> str:
    """The README's "Add your own method" code block: the test runs exactly that."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Add your own method", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_user_method_from_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = readme_method_source()
    assert source.strip() == (ROOT / "examples" / "my_method.py").read_text().strip()
    (tmp_path / "my_module.py").write_text(source)
    monkeypatch.delitem(sys.modules, "my_module", raising=False)  # another test's my_module may be imported
    monkeypatch.setattr(sys, "path", list(sys.path))  # lssl appends the cwd: undone after the test
    run = fit(tmp_path, monkeypatch, "--model", "my_module.MyMethod", "--model.proj_dim", "32")
    assert list((tmp_path / "runs").glob("*/checkpoints/last.ckpt"))
    metrics = last_values(run / "metrics.csv")  # the suite's probes ran on the user's method
    assert 0.0 < metrics["knn_k200_t0.1/acc_top1"] <= 1.0 and "online_linear/thirds/acc_few" in metrics
    shutil.rmtree(tmp_path / "runs")


def test_unknown_model_option_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--model", "SimCLR", "--model.temprature", "0.2", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "temprature" in err and "\n" not in err, err  # one line, without the union-type noise
    assert not (tmp_path / "runs").exists()
