"""Missing optional packages name the extra to install; a full disk loses nothing already written."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from lightning_ssl.io import atomic_write_json


@pytest.mark.parametrize(
    "module,call,extra",
    [
        ("wandb", lambda: __import__("lightning_ssl.loggers", fromlist=["x"]).wandb_logger_config("p"), "wandb"),
        (
            "submitit",
            lambda: __import__("lightning_ssl.sweep.launchers", fromlist=["x"]).slurm_executor(
                __import__("lightning_ssl.sweep.launchers", fromlist=["x"]).SlurmOptions(), "/tmp/x"
            ),
            "slurm",
        ),
    ],
)
def test_missing_optional_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, call, extra: str
) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf"pip install 'lightning-ssl\[{extra}\]'"):
        call()


def test_missing_faiss_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lightning_ssl.cluster import kmeans

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises((ImportError, RuntimeError), match="faiss"):
        kmeans(torch.randn(20, 4), 2, backend="faiss-cpu")


def test_disk_full_keeps_previous_result_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run.json"
    atomic_write_json(target, {"acc": 0.5})

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match=r"could not write .*run.json: No space left on device; nothing was overwritten"):
        atomic_write_json(target, {"acc": 0.9})
    assert target.read_text().strip().endswith("}") and '"acc": 0.5' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
