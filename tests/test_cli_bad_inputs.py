"""Bad input to ``lssl fit`` / ``lssl probe``: one line on stderr naming the input and the fix, exit
status 2, no traceback (unless ``--debug``), and nothing already computed lost or overwritten."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lightning_ssl.cli.main import main
from lightning_ssl.config.errors import UsageError

RUN = Path("runs") / "simclr-digitslt-0123abcd"
TINY = [
    "--model",
    "SimCLR",
    "--data",
    "DigitsLT",
    "--model.backbone",
    "resnet_tiny",
    "--trainer.max_epochs",
    "1",
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
]
CASES = {
    "max_epochs 0": (
        ["fit", *TINY, "--trainer.max_epochs", "0"],
        "--trainer.max_epochs 0: a run needs at least one epoch; pass --trainer.max_epochs N with N >= 1",
    ),
    "probe a folder": (
        ["probe", str(RUN)],
        f"{RUN} is a folder, not a checkpoint: pass a .ckpt file; e.g. {RUN / 'checkpoints' / 'last.ckpt'}",
    ),
    "probe a missing file": (["probe", "nope.ckpt"], "checkpoint nope.ckpt does not exist"),
    "config is an image": (
        ["fit", "--config", "plot.png", *TINY],
        "--config plot.png: not a text file; pass a YAML config",
    ),
    "config is not a mapping": (
        ["fit", "--config", "list.yaml", *TINY],
        "--config list.yaml: a config is a YAML mapping",
    ),
    "batch_size 0": (["fit", *TINY, "--data.batch_size", "0"], "batch_size=0 must be an integer >= 1"),
    "negative lr": (["fit", *TINY, "--model.lr", "-0.1"], "lr=-0.1 must be > 0"),
    "unknown method": (["fit", *TINY, "--model", "SimCRL"], "unknown method 'SimCRL'; valid methods:"),
    "views contradict": (
        ["fit", *TINY, "--model", "SwAV", "--model.num_small_views", "2", "--data.num_small_views", "4"],
        "--data.num_small_views 4 contradicts --model SwAV",
    ),
}


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding an earlier run's checkpoint and logs, and two bad config files."""
    monkeypatch.chdir(tmp_path)
    (RUN / "checkpoints").mkdir(parents=True)
    (RUN / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's weights")
    (RUN / "csv").mkdir()
    (RUN / "csv" / "metrics.csv").write_text("epoch,train/loss\n0,1.5\n")
    Path("plot.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    Path("list.yaml").write_text("- model\n- data\n")
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_status_2(case: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    argv, message = CASES[case]
    before = snapshot(workdir)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"lssl {argv[0]}: ") and message in err, err
    assert snapshot(workdir) == before  # nothing lost, overwritten or added


def test_debug_shows_the_traceback(workdir: Path) -> None:
    with pytest.raises(UsageError, match="is a folder, not a checkpoint"):
        main(["probe", str(RUN), "--debug"])
