"""Numerical faults and mismatched checkpoints: clear errors, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules.digits import DigitsLT
from lightning_ssl.methods import MoCoV2, SimCLR
from lightning_ssl.methods.base import LossOutput


class NaNAtStep(SimCLR):
    """SimCLR whose loss for dataset samples becomes NaN from optimiser step 2 on."""

    def compute_losses(self, batch):  # noqa: ANN001, ANN201
        out = super().compute_losses(batch)
        if self.trainer.global_step >= 2:
            losses = out.losses.clone()
            losses[:, 1] = float("nan")
            return LossOutput(losses, out.features, logs={"nt_xent": losses.mean()})
        return out


def trainer(tmp: Path, steps: int = 4) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
        limit_val_batches=0,
        enable_checkpointing=False,
    )


def tiny(cls: type = NaNAtStep, **kw) -> SimCLR:  # noqa: ANN003
    return cls(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=8, **kw)


def test_nan_loss_stops_with_step_method_terms_and_saves_last_good(tmp_path: Path) -> None:
    model = tiny()
    with pytest.raises(FloatingPointError) as err:
        trainer(tmp_path).fit(model, DigitsLT(batch_size=16))
    msg = str(err.value)
    assert "NaNAtStep: non-finite loss nan at step 2" in msg and "nt_xent=nan" in msg
    assert "1 of 16 samples non-finite" in msg
    ckpt = torch.load(tmp_path / "checkpoints" / "last-good.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_nan_loss_can_be_skipped_and_counted(tmp_path: Path) -> None:
    model = tiny(nonfinite="skip")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer(tmp_path, steps=2).fit(model, DigitsLT(batch_size=16))
    # steps 0 and 1 trained; later batches are skipped without touching the weights
    after_two = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(before[k], after_two[k]) for k in before)
    snapshots: list[torch.Tensor] = []

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            snapshots.append(pl_module.backbone.conv1.weight.detach().clone())

    t = pl.Trainer(
        max_epochs=1,
        limit_train_batches=6,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[Snapshot()],
    )
    model2 = tiny(nonfinite="skip")
    t.fit(model2, DigitsLT(batch_size=16))
    assert model2.skipped_steps == 4 and t.global_step == 6  # the step counter runs on
    assert not torch.equal(snapshots[0], snapshots[1])
    assert all(torch.equal(snapshots[1], s) for s in snapshots[2:])  # skipped steps leave the weights
    assert all(torch.isfinite(p).all() for p in model2.parameters())


def test_checkpoint_of_another_method_or_backbone_is_refused(tmp_path: Path) -> None:
    t = trainer(tmp_path, steps=1)
    simclr = tiny(SimCLR)
    t.fit(simclr, DigitsLT(batch_size=16))
    path = tmp_path / "simclr.ckpt"
    t.save_checkpoint(path)
    moco = MoCoV2(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=8, queue_size=16)
    with pytest.raises(
        ValueError, match="checkpoint is from method .*SimCLR, not .*MoCoV2: resume it with --model SimCLR"
    ):
        trainer(tmp_path, steps=2).fit(moco, DigitsLT(batch_size=16), ckpt_path=str(path))
    other = SimCLR(backbone="resnet18", image_size=16, proj_hidden_dim=16, proj_output_dim=8)
    with pytest.raises(ValueError, match="checkpoint backbone is 'resnet_tiny' but this model's is 'resnet18'"):
        trainer(tmp_path, steps=2).fit(other, DigitsLT(batch_size=16), ckpt_path=str(path))


def test_bad_nonfinite_option() -> None:
    with pytest.raises(ValueError, match="unknown nonfinite='warn'; valid: raise, skip, ignore"):
        tiny(SimCLR, nonfinite="warn")


def test_supervised_takes_num_classes_from_the_datamodule(tmp_path: Path) -> None:
    from lightning_ssl.methods import Supervised

    model = Supervised(backbone="resnet_tiny", image_size=16)
    t = trainer(tmp_path, steps=1)
    t.fit(model, DigitsLT(batch_size=16))
    assert model.classifier.out_features == 10 and model.hparams.num_classes == 10
    path = tmp_path / "sup.ckpt"
    t.save_checkpoint(path)
    assert Supervised.load_from_checkpoint(path).classifier.out_features == 10
    too_few = Supervised(backbone="resnet_tiny", image_size=16, num_classes=3)
    with pytest.raises(ValueError, match="Supervised has 3 classes but the batch has label"):
        trainer(tmp_path, steps=1).fit(too_few, DigitsLT(batch_size=64))
