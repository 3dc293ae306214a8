"""A run killed in the middle of an epoch (SIGKILL) or stopped by SIGTERM, then resumed, ends with
exactly the weights of an uninterrupted run with the same seed (CPU, deterministic settings)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import pytorch_lightning as pl
    import torch
    from datamodules.digits import DigitsLT
    from lightning_ssl.checkpoints import AtomicModelCheckpoint, latest_valid_checkpoint
    from lightning_ssl.eval.callbacks import OnlineLinearProbe
    from lightning_ssl.methods import MoCoV2

    out, signal_at, sig = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class Interrupt(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == signal_at:
                os.kill(os.getpid(), getattr(signal, sig))

    pl.seed_everything(0)
    torch.use_deterministic_algorithms(True)
    model = MoCoV2(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=8, queue_size=48,
                   lr=0.05, warmup_epochs=0.5)
    ckpt_dir = os.path.join(out, "checkpoints")
    callbacks = [OnlineLinearProbe(), AtomicModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2)]
    if signal_at >= 0:
        callbacks.append(Interrupt())
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, deterministic=True,
                         callbacks=callbacks, default_root_dir=out)
    last = latest_valid_checkpoint(p for p in __import__("pathlib").Path(ckpt_dir).glob("*.ckpt")) \\
        if os.path.isdir(ckpt_dir) else None
    trainer.fit(model, DigitsLT(batch_size=64), ckpt_path=str(last) if last else None)
    torch.save({"model": model.state_dict(), "probe": callbacks[0].state_dict()}, os.path.join(out, "final.pt"))
""")

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, signal_at: int = -1, sig: str = "SIGKILL") -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), str(signal_at), sig],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode not in (0, -9) and not (sig in ("SIGTERM", "SIGUSR1") and signal_at >= 0):
        raise AssertionError(proc.stderr[-3000:])
    return proc


def assert_same_final(a: Path, b: Path) -> None:
    fa, fb = torch.load(a / "final.pt", weights_only=False), torch.load(b / "final.pt", weights_only=False)
    assert fa["model"].keys() == fb["model"].keys()
    for key in fa["model"]:
        assert torch.equal(fa["model"][key], fb["model"][key]), key
    for pa, pb in zip(fa["probe"]["head"].values(), fb["probe"]["head"].values()):
        assert torch.equal(pa, pb)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full")
    run(out)
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(uninterrupted: Path, tmp_path: Path) -> None:
    # 494 images / 64 = 7 batches per epoch: step 10 is in the middle of the second epoch
    assert run(tmp_path, signal_at=10, sig="SIGKILL").returncode == -9
    assert not (tmp_path / "final.pt").exists()
    resumed = run(tmp_path)
    assert resumed.returncode == 0
    assert "not resumable" not in resumed.stderr  # the training loader tells Lightning it resumes mid-epoch
    assert_same_final(uninterrupted, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_preemption_signal_saves_gracefully_then_resume_is_exact(uninterrupted: Path, tmp_path: Path, sig: str) -> None:
    run(tmp_path, signal_at=4, sig=sig)
    assert not (tmp_path / "final.pt").exists()
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 4  # the signal came after step 4; Lightning stopped and saved there
    assert run(tmp_path).returncode == 0
    assert_same_final(uninterrupted, tmp_path)


def test_truncated_checkpoint_falls_back_to_previous_with_warning(tmp_path: Path) -> None:
    from lightning_ssl.checkpoints import latest_valid_checkpoint

    good, bad = tmp_path / "epoch=0.ckpt", tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, good)
    torch.save({"state_dict": {"w": torch.ones(1000)}}, bad)
    bad.write_bytes(bad.read_bytes()[:100])
    os.utime(good, (1, 1))
    with pytest.warns(UserWarning, match=r"last.ckpt is corrupted or truncated .* resuming from .*epoch=0.ckpt"):
        assert latest_valid_checkpoint([good, bad]) == good
