"""Transfer fine-tuning: rwSAM's out-of-domain recipe (ft_moco.py) as the default, the earlier
recipe as ``simple``, scaled down through arguments."""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.eval.finetune import (
    FineTuner,
    augment_batch,
    finetune_and_predict,
    finetune_recipe,
)


def test_rwsam_recipe_is_the_default() -> None:
    r = finetune_recipe()
    assert (r.name, r.epochs, r.iterations_per_epoch, r.batch_size) == ("rwsam", 20, 2000, 48)
    assert (r.head_lr, r.backbone_lr, r.weight_decay, r.momentum, r.nesterov) == (0.1, 0.01, 5e-4, 0.9, True)
    assert r.milestone_epochs() == [5, 10, 15] and r.augment == "random_resized_crop"
    simple = finetune_recipe("simple")
    assert (simple.iterations_per_epoch, simple.batch_size, simple.augment) == (None, None, "flip")
    assert finetune_recipe("rwsam", epochs=4, iterations_per_epoch=None).milestone_epochs() == [1, 2, 3]
    assert finetune_recipe("rwsam", epochs=None).epochs == 20  # None keeps the recipe's value
    with pytest.raises(ValueError, match="unknown fine-tuning recipe 'moco'"):
        finetune_recipe("moco")
    with pytest.raises(ValueError, match=r"unknown fine-tuning option\(s\) \['lr'\]"):
        finetune_recipe(lr=0.1)


def test_step_schedule_decays_tenfold_at_each_milestone_epoch() -> None:
    """4 epochs of 2 iterations: head lr 0.1, 0.01, 0.001, 0.0001 per epoch; backbone x0.1."""
    recipe = finetune_recipe(epochs=4, iterations_per_epoch=2)
    tuner = FineTuner(torch.nn.Linear(3, 3), 3, 2, recipe, steps_per_epoch=2)
    config = tuner.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert opt.defaults["nesterov"] and opt.defaults["weight_decay"] == 5e-4
    head, backbone = [], []
    for _ in range(8):
        backbone.append(opt.param_groups[0]["lr"])
        head.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    expected = [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4]
    assert head == pytest.approx(expected) and backbone == pytest.approx([0.1 * e for e in expected])


def test_augmentations() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 3, 16, 16)
    crops = augment_batch(x, "random_resized_crop")
    assert crops.shape == x.shape and not torch.allclose(crops, x)
    flipped = augment_batch(x, "flip")
    same_or_flip = [torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, x)]
    assert all(same_or_flip)


def test_finetune_runs_its_iterations_in_batches_of_48() -> None:
    from datamodules.digits import DigitsLT
    from lightning_ssl.methods import SimCLR

    dm = DigitsLT(eval_batch_size=256)
    dm.setup("fit")
    model = SimCLR(backbone="resnet_tiny", image_size=16, proj_hidden_dim=8, proj_output_dim=4)
    seen: list[int] = []
    original = FineTuner.training_step

    def counting(self, batch, batch_idx):  # noqa: ANN001, ANN202
        seen.append(int(batch[0].shape[0]))
        return original(self, batch, batch_idx)

    FineTuner.training_step = counting
    try:
        pred, target = finetune_and_predict(
            model, model.feature_dim, dm, finetune_recipe(epochs=2, iterations_per_epoch=3), accelerator="cpu"
        )
    finally:
        FineTuner.training_step = original
    assert seen == [48] * 6
    assert pred.shape == target.shape == (len(dm.test_dataloader().dataset),)
