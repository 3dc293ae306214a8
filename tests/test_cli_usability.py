"""A researcher's day: short per-method help, loss / lr curves on tiny datasets in CSV and
TensorBoard, a final table, run folders by name, short names everywhere, and a working directory
that cannot shadow the suite's packages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_ssl.cli.help import help_text
from lightning_ssl.cli.main import main
from lightning_ssl.config.callbacks import log_interval
from lightning_ssl.config.registry import expand_short_names, method_classes
from tests.fixtures import write_cifar100
from tests.test_cli_fit import last_values


@pytest.mark.parametrize("method", sorted(method_classes()))
def test_method_help_is_short_and_complete(method: str) -> None:
    text = help_text(method)
    lines = text.splitlines()
    assert len(lines) < 100, len(lines)
    assert max(len(line) for line in lines) <= 100
    for option in ("--model.backbone", "--model.lr = 0.3", "--model.sam"):  # inherited options are listed
        assert option in text
    assert "Conv2d" not in text and "TransformerEncoder" not in text  # no listing of nn.Module classes


def test_help_shows_the_docstring_and_default_and_the_views() -> None:
    text = help_text("swav")
    assert "--model.num_prototypes int  (default: 3000)" in text
    assert "K (3000 on ImageNet, App. A;" in text
    assert "views (set on the datamodule for you): --data.num_large_views 2" in text
    assert "--data.batch_size" in help_text("digits_lt")


def test_fit_help_is_the_method_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["fit", "--model", "SimCLR", "--help"]) == 0
    assert capsys.readouterr().out.strip() == help_text("SimCLR").strip()
    assert main(["help", "MTTV"]) == 0
    assert "--model.key_momentum float  (default: 0.9)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["probe", "dnc"])
def test_command_help_lists_options_not_every_known_class(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "--data CONFIG | CLASS_PATH_OR_NAME" in text and "(lssl data stats NAME)" in text
    assert "known subclasses" not in text and "datamodules.cifar.CIFAR10LT" not in text
    assert len(text.splitlines()) < {"probe": 70, "dnc": 130}[command]


@pytest.mark.parametrize("command,option", [("sweep", "--dry-run"), ("report", "--readme"), ("bench", "--spec")])
def test_sweep_report_and_bench_help_load_neither_torch_nor_lightning(command: str, option: str) -> None:
    code = (
        f"import sys; from lightning_ssl.cli.main import main; code = main([{command!r}, '--help']); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules)); sys.exit(code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"usage: lssl {command}" in out and option in out
    assert out.rstrip().endswith("[]"), out[-200:]


def test_short_names_expand_in_any_case() -> None:
    args = expand_short_names(["--model", "simclr", "--data=cifar100_lt", "--data.root", "x", "--model.lr", "1"])
    assert args == [
        "--model",
        "lightning_ssl.methods.simclr.SimCLR",
        "--data=datamodules.cifar.CIFAR100LT",
        "--data.root",
        "x",
        "--model.lr",
        "1",
    ]
    assert expand_short_names(["--model", "my_module.MyBYOL"]) == ["--model", "my_module.MyBYOL"]
    with pytest.raises(ValueError, match="unknown method 'SimCRL'; valid methods: .*SimCLR"):
        expand_short_names(["--model", "SimCRL"])


@pytest.mark.parametrize(("batches", "expected"), [(1, 1), (2, 1), (7, 1), (40, 10), (450, 50), (10**6, 50)])
def test_log_interval_follows_the_epoch_length(batches: int, expected: int) -> None:
    assert log_interval(batches) == expected


@pytest.mark.slow
def test_default_fit_logs_loss_and_lr_and_probes_by_short_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """DigitsLT at its default batch size has 2 steps per epoch: Lightning's 50-step logging period
    would log no loss at all."""
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "fit",
                "--model",
                "simclr",
                "--data",
                "digits_lt",
                "--model.backbone",
                "resnet_tiny",
                "--model.proj_hidden_dim",
                "32",
                "--trainer.max_epochs",
                "2",
                "--trainer.accelerator",
                "cpu",
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("simclr-digitslt-") and len(run.name.rsplit("-", 1)[1]) == 8
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # one copy, not two
    assert (
        "final metrics after epoch 2" in out and "knn_k200_t0.1" in out and f"{run.name}/checkpoints/last.ckpt" in out
    )
    csv_rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    loss_rows = [r for r in csv_rows[1:] if r.split(",")[header.index("train/loss")]]
    assert len(loss_rows) >= 2 and "lr" in header and "train/images_per_s" in header
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "lr", "knn_k200_t0.1/thirds/acc_few"} <= set(scalars)
    assert len(events.Scalars("train/loss")) >= 2
    assert {"knn_k200_t0.1/per_class", "online_linear/per_class"} <= set(events.Tags()["images"])

    rng = np.random.default_rng(0)  # `lssl probe CKPT --data CIFAR100LT` (the README's transfer command)
    write_cifar100(
        tmp_path / "c100",
        np.repeat(np.arange(100), 3),
        np.repeat(np.arange(100), 1),
        rng.integers(0, 256, (300, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8),
    )
    result = tmp_path / "transfer.json"
    assert (
        main(
            [
                "probe",
                str(run / "checkpoints" / "last.ckpt"),
                "--data",
                "CIFAR100LT",
                "--data.root",
                str(tmp_path / "c100"),
                "--data.image_size",
                "16",
                "--data.profile",
                "balanced",
                "--linear_steps",
                "10",
                "--knn_k",
                "5",
                "--device",
                "cpu",
                "--out",
                str(result),
            ]
        )
        == 0
    )
    assert '"datamodule": "datamodules.cifar.CIFAR100LT"' in result.read_text()
    assert last_values(run / "csv" / "metrics.csv")["lr"] >= 0


def test_the_working_directory_cannot_shadow_the_suite(tmp_path: Path) -> None:
    """A user's own ``datamodules/`` package in the working directory: the suite's is used."""
    (tmp_path / "datamodules").mkdir()
    (tmp_path / "datamodules" / "__init__.py").write_text("raise ImportError('the user package was imported')\n")
    (tmp_path / "user_module.py").write_text("VALUE = 1\n")
    code = (
        "import sys; from lightning_ssl.cli.main import main; rc = main(['data', 'card', 'DigitsLT']); "
        "import user_module; sys.exit(rc)"
    )
    lssl = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert lssl.returncode == 0, lssl.stderr[-2000:]
    assert "name: digits_lt" in lssl.stdout


def test_fit_help_fits_a_screen_and_help_all_lists_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    short = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--help-all"])
    full = capsys.readouterr().out
    assert len(short.splitlines()) < 70 < 400 < len(full.splitlines())
    assert "[options] fit [--config FILE] [--model NAME] [--data NAME]" in short.splitlines()[0]
    for option in (
        "--trainer.max_epochs",
        "--trainer.devices",
        "--model CONFIG",
        "--data CONFIG",
        "--resume",
        "--wandb",
    ):
        assert option in short and option in full
    for option in ("--trainer.gradient_clip_val", "--trainer.profiler", "--weights_only", "--model.help"):
        assert option not in short and option in full
    hidden = len(re.findall(r"^  --", full, re.M)) - len(re.findall(r"^  --", short, re.M))
    assert short.rstrip().endswith(f"{hidden} more options (most of them the Trainer's): lssl fit --help-all")
    assert "(default: [OnlineLinearProbe, KNNMonitor," in " ".join(short.split())  # classes by name, not dicts
    assert "The method: a name such as SimCLR (lssl help NAME)" in short and "<class '" not in short
