"""BCL (docs/methods.md §13): the momentum loss and its weights against the official formulas, the
strength mapping, each RandAugment op against PIL, stronger views for a larger memory, the hand-off
to the datamodule during a fit, and exact resume (with SDCLR's masks and BN, GH and TS)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image as Image
import PIL.ImageDraw as ImageDraw
import PIL.ImageEnhance as ImageEnhance
import PIL.ImageOps as ImageOps
import pytest
import torch

from datamodules.augment import (
    RANDAUG_OPS,
    RandAugmentParams,
    apply_rand_augment,
    rand_augment,
    randaug_value,
)
from lightning_ssl.methods import BCL, BCLD, BCLI
from lightning_ssl.weights.bcl import bcl_strength, momentum_weights
from lightning_ssl.weights.memory import PerSampleMemory

ROOT = Path(__file__).resolve().parents[1]


# -- the memory and its weights ----------------------------------------------------------------------
def test_momentum_loss_follows_the_official_update() -> None:
    memory = PerSampleMemory()
    memory.resize(3)
    for loss, expected in ((2.0, 2.0), (1.0, 1.97), (1.0, 1.9409)):  # M_1 = l_1, then beta 0.97
        memory.update(torch.tensor([1]), torch.tensor([loss]), beta=0.97)
        assert float(memory.values[1]) == pytest.approx(expected, abs=1e-6)
    assert memory.seen.tolist() == [False, True, False]
    # keyed by index, whatever the order of the batch
    memory.update(torch.tensor([2, 0]), torch.tensor([5.0, 7.0]), beta=0.97)
    assert memory.values.tolist() == pytest.approx([7.0, 1.9409, 5.0], abs=1e-6)


def official_weights(m: torch.Tensor) -> torch.Tensor:
    """BCL's calculate_momentum_weight, as released."""
    z = (m - torch.mean(m)) / torch.std(m)
    return (z / torch.max(torch.abs(z))) / 2 + 1 / 2


def test_weights_equal_the_official_normalisation() -> None:
    assert momentum_weights(torch.tensor([1.0, 2.0, 3.0, 6.0])).tolist() == pytest.approx([1 / 6, 1 / 3, 1 / 2, 1.0])
    m = torch.rand(257, generator=torch.Generator().manual_seed(0)) * 4 + 1
    torch.testing.assert_close(momentum_weights(m), official_weights(m), atol=1e-6, rtol=1e-6)
    assert momentum_weights(torch.full((5,), 2.0)).tolist() == [0.5] * 5  # the official 0/0, guarded
    seen = torch.tensor([True, True, False, True])
    w = momentum_weights(torch.tensor([1.0, 3.0, 100.0, 2.0]), seen)
    assert w.tolist() == pytest.approx([0.0, 1.0, 0.0, 0.5])  # unseen: 0; the rest normalised among themselves


def test_strength_mapping_and_op_values() -> None:
    w = torch.tensor([1 / 6, 1 / 3, 1 / 2, 1.0])
    m, p = bcl_strength(w, 1)
    assert m.tolist() == pytest.approx([13.3333, 16.6667, 20.0, 30.0], abs=1e-4) and torch.equal(p, w)
    u = torch.tensor([0.5, 1.0, 0.0, 0.2])
    m2, p2 = bcl_strength(w, 2, uniform=u)
    assert m2.tolist() == pytest.approx((5 + 25 * w * u).tolist()) and torch.equal(p2, w)
    assert float(randaug_value("shear_x", torch.tensor(30.0))) == pytest.approx(0.6)
    assert float(randaug_value("rotate", torch.tensor(20.0))) == pytest.approx(40.0)
    assert float(randaug_value("solarize", torch.tensor(30.0))) == pytest.approx(110.0)
    assert float(randaug_value("contrast", torch.tensor(15.0))) == pytest.approx(1.0)
    assert [name for name, _, _ in RANDAUG_OPS][:5] == ["shear_x", "shear_y", "translate_x", "translate_y", "rotate"]
    with pytest.raises(ValueError, match="rand_strength=40"):
        bcl_strength(w, 1, rand_strength=40)


# -- the 15 ops against PIL --------------------------------------------------------------------------
def pil_op(img: Image.Image, name: str, v: float, sign: float, centre: np.ndarray) -> Image.Image:
    """The official randaug.py op, written out with PIL."""
    w, h = img.size
    sv = v * sign
    ops = {
        "shear_x": lambda: img.transform(img.size, Image.AFFINE, (1, sv, 0, 0, 1, 0)),
        "shear_y": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, sv, 1, 0)),
        "translate_x": lambda: img.transform(img.size, Image.AFFINE, (1, 0, sv * w, 0, 1, 0)),
        "translate_y": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, sv * h)),
        "rotate": lambda: img.rotate(sv),
        "auto_contrast": lambda: ImageOps.autocontrast(img),
        "invert": lambda: ImageOps.invert(img),
        "equalize": lambda: ImageOps.equalize(img),
        "solarize": lambda: ImageOps.solarize(img, v),
        "posterize": lambda: ImageOps.posterize(img, max(1, int(v))),
        "contrast": lambda: ImageEnhance.Contrast(img).enhance(v),
        "color": lambda: ImageEnhance.Color(img).enhance(v),
        "brightness": lambda: ImageEnhance.Brightness(img).enhance(v),
        "sharpness": lambda: ImageEnhance.Sharpness(img).enhance(v),
    }
    if name != "cutout":
        return ops[name]()
    if v <= 0:
        return img
    side = v * w
    x0, y0 = int(max(0, centre[0] * w - side / 2.0)), int(max(0, centre[1] * h - side / 2.0))
    out = img.copy()
    ImageDraw.Draw(out).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), (125, 123, 114))
    return out


@pytest.mark.parametrize("op", range(len(RANDAUG_OPS)))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_each_op_equals_pil(op: int, mode: str) -> None:
    name, lo, hi = RANDAUG_OPS[op]
    if mode == "L" and name == "cutout":
        pytest.skip("PIL draws the grey fill (125, 123, 114) only on RGB images")
    rng = np.random.default_rng(op)
    channels = 3 if mode == "RGB" else 1
    for trial in range(12):
        shape = (13, 17, channels)
        a = rng.integers(0, 256, shape) if trial % 2 else rng.integers(60, 180, shape)  # full and narrow ranges
        a = a.astype(np.uint8)
        m = float(rng.uniform(0, 30))
        v = m / 30 * (hi - lo) + lo
        sign, centre = (-1.0 if trial % 3 == 0 else 1.0), rng.uniform(0, 1, 2)
        pil_in = Image.fromarray(a if mode == "RGB" else a[..., 0], mode)
        ref = np.asarray(pil_op(pil_in, name, v, sign, centre)).astype(np.int64).reshape(13, 17, channels)
        x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
        params = RandAugmentParams(
            op=torch.tensor([op]),
            apply=torch.tensor([True]),
            value=torch.tensor([v], dtype=torch.float32),
            sign=torch.tensor([sign]),
            centre=torch.from_numpy(centre[None]).float(),
        )
        got = torch.round(apply_rand_augment(x, params)[0].permute(1, 2, 0) * 255).long().numpy()
        np.testing.assert_array_equal(got, ref, err_msg=f"{name} at v={v:.4f}, sign {sign}")


def test_a_batch_gives_each_image_its_own_op_and_probability_zero_is_the_identity() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 12, 12, generator=g)
    same = rand_augment(x, 2, torch.full((64,), 30.0), torch.zeros(64), torch.Generator().manual_seed(1))
    assert torch.equal(same, x)  # BCL's first epoch: w = 0, no op fires
    out = rand_augment(x, 1, torch.full((64,), 30.0), torch.ones(64), torch.Generator().manual_seed(1))
    changed = (out - x).abs().flatten(1).amax(1) > 1 / 255
    assert changed.float().mean() > 0.8  # an op fired on (almost) every image (a few ops can be no-ops)
    # one image's result does not depend on the others in the batch
    alone = rand_augment(x[:1], 1, torch.full((1,), 30.0), torch.ones(1), torch.Generator().manual_seed(1))
    assert alone.shape == (1, 3, 12, 12)


# -- the view path --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():  # noqa: ANN201
    from datamodules.digits import DigitsLT

    dm = DigitsLT(batch_size=64)
    dm.setup("fit")
    return dm


def view_distance(dm, index: torch.Tensor, seed: int = 3) -> torch.Tensor:  # noqa: ANN001
    images = dm.splits.pretrain.images[index]
    boosted = dm.view_transform(images, seed=seed, index=index)
    dm.view_transform.set_sample_augmentation(0, None, None)
    plain = dm.view_transform(images, seed=seed, index=index)
    return torch.stack([(b - p).pow(2).flatten(1).mean(1) for b, p in zip(boosted, plain)]).mean(0)


@pytest.mark.parametrize("ops", [1, 2])
def test_samples_with_a_larger_memory_get_stronger_views(digits, ops: int) -> None:  # noqa: ANN001
    n = len(digits.splits.pretrain)
    memory = torch.linspace(1.0, 3.0, n)  # sample i's momentum loss grows with i
    w = momentum_weights(memory)
    uniform = torch.rand(n, generator=torch.Generator().manual_seed(0)) if ops == 2 else None
    magnitude, probability = bcl_strength(w, ops, uniform=uniform)
    digits.view_transform.set_sample_augmentation(ops, magnitude, probability)
    index = torch.arange(n)
    distance = view_distance(digits, index)
    order = torch.argsort(w)
    low, high = distance[order[: n // 4]].mean(), distance[order[-n // 4 :]].mean()
    assert distance[w == 0].abs().max() == 0  # w = 0: exactly the recipe's own views
    assert high > 3 * low, (float(low), float(high))
    rank = lambda t: torch.argsort(torch.argsort(t)).double()  # noqa: E731
    spearman = torch.corrcoef(torch.stack([rank(w), rank(distance)]))[0, 1]
    assert spearman > 0.5, float(spearman)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_ops_give_the_same_views_on_the_device() -> None:
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    params = [
        RandAugmentParams(
            op=torch.arange(32) % 15,
            apply=torch.ones(32, dtype=torch.bool),
            value=torch.rand(32) * 0.5 + 0.1,
            sign=torch.ones(32),
            centre=torch.rand(32, 2),
        )
    ]
    cpu = apply_rand_augment(x, params[0])
    cuda_params = RandAugmentParams(
        *(t.cuda() for t in (params[0].op, params[0].apply, params[0].value, params[0].sign, params[0].centre))
    )
    torch.testing.assert_close(apply_rand_augment(x.cuda(), cuda_params).cpu(), cpu, atol=1 / 255 + 1e-6, rtol=0)


# -- the method ------------------------------------------------------------------------------------------
def test_bcl_builds_its_base_and_checks_its_options() -> None:
    small = {"backbone": "resnet_tiny", "image_size": 16}
    assert type(BCL(**small)) is BCLI and type(BCL(base="sdclr", **small)) is BCLD
    assert BCL(**small).randaug_ops == 1 and BCL(base="sdclr", **small).randaug_ops == 2
    assert BCLI(**small).hparams.temperature == 0.2 and BCLD(**small).hparams.prune_ratio == 0.9
    with pytest.raises(ValueError, match="unknown BCL base 'moco'"):
        BCL(base="moco", **small)
    with pytest.raises(ValueError, match=r"loss_momentum=1.0 must be in \[0, 1\)"):
        BCL(loss_momentum=1.0, **small)
    with pytest.raises(ValueError, match="randaug_ops=0"):
        BCL(randaug_ops=0, **small)


def test_a_fit_hands_the_strengths_to_the_views(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    from datamodules.digits import DigitsLT

    dm = DigitsLT(batch_size=128, recipe="small_gray")  # 3 steps per epoch
    calls = []
    original = dm.set_sample_augmentation

    def spy(num_ops, magnitude, probability):  # noqa: ANN001, ANN202
        calls.append((num_ops, magnitude.clone(), probability.clone()))
        original(num_ops, magnitude, probability)

    dm.set_sample_augmentation = spy
    torch.manual_seed(0)
    model = BCLD(backbone="resnet_tiny", image_size=16, proj_hidden_dim=32, proj_output_dim=16, warmup_fraction=0.1)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    n = len(dm.splits.pretrain)
    assert [c[0] for c in calls] == [2, 2]  # one hand-off per epoch, BCL-D's k = 2
    assert calls[0][2].abs().max() == 0  # epoch 0: w = 0
    w = model.aug_weight
    assert w.shape == (n,) and int(model.weight_epoch) == 1
    seen = model.loss_memory.seen
    assert seen.sum() >= n - 128 and torch.equal(calls[1][2], w)  # p = w, from the first epoch's memory
    assert float(w[seen].min()) == pytest.approx(0.0, abs=1e-6) or float(w[seen].max()) == pytest.approx(1.0, abs=1e-6)
    assert ((calls[1][1] >= 5) & (calls[1][1] <= 30)).all()


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import pytorch_lightning as pl
    import torch
    from datamodules.digits import DigitsLT
    from lightning_ssl.checkpoints import AtomicModelCheckpoint, latest_valid_checkpoint
    from lightning_ssl.methods import BCLD
    from lightning_ssl.methods.gh import GHConfig
    from lightning_ssl.methods.temperature import TemperatureSchedule

    out, signal_at = sys.argv[1], int(sys.argv[2])

    class Interrupt(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == signal_at:
                os.kill(os.getpid(), signal.SIGKILL)

    pl.seed_everything(0)
    torch.use_deterministic_algorithms(True)
    model = BCLD(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=16, lr=0.05,
                 warmup_fraction=0.1, gh=GHConfig(num_anchors=10, warmup_epochs=1, ramp_epochs=1, prior_every=1,
                 iterations=20), temperature_schedule=TemperatureSchedule(period_epochs=0.5))
    ckpt_dir = os.path.join(out, "checkpoints")
    callbacks = [AtomicModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3)]
    if signal_at >= 0:
        callbacks.append(Interrupt())
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, deterministic=True,
                         callbacks=callbacks, default_root_dir=out)
    last = latest_valid_checkpoint(p for p in __import__("pathlib").Path(ckpt_dir).glob("*.ckpt")) \\
        if os.path.isdir(ckpt_dir) else None
    trainer.fit(model, DigitsLT(batch_size=64, recipe="small_gray"), ckpt_path=str(last) if last else None)
    torch.save(model.state_dict(), os.path.join(out, "final.pt"))
""")


def run_resume_script(out: Path, signal_at: int = -1) -> int:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(out), str(signal_at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path: Path) -> None:
    """BCL-D with GH and TS killed in the middle of the second epoch (7 steps per epoch; the masks,
    the pruned BN, the loss memory and its weights, GH's memory and prior are all in play) and
    resumed ends with exactly the weights and state of an uninterrupted run."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_resume_script(full)
    assert run_resume_script(resumed, signal_at=10) == -9
    assert not (resumed / "final.pt").exists()
    assert run_resume_script(resumed) == 0
    a, b = torch.load(full / "final.pt"), torch.load(resumed / "final.pt")
    assert a.keys() == b.keys()
    for key in ("loss_memory.values", "aug_weight", "gh.memory.values", "gh.prior", "pruned.bn.bn0.running_mean"):
        assert key in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(a["weight_epoch"]) == 1 and int(a["pruned.mask_epoch"]) == 1
