"""View recipes, MultiViewTransform and EvalTransform (CPU)."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision.transforms.functional as TF

from datamodules.augment import ViewSpec, augment
from datamodules.digits import DigitsLT
from datamodules.view_transforms import (
    VIEW_RECIPES,
    EvalTransform,
    MultiViewTransform,
    byol_specs,
    default_small_size,
    mocov2_spec,
    mttv_spec,
    recipe_specs,
    simclr_spec,
    swav_large_spec,
    swav_small_spec,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def images(n: int = 4, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def normalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """Reference normalisation, written out channel by channel."""
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    return torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)


# --------------------------------------------------------------------------- recipes


def test_simclr_recipe_values():
    big, small = simclr_spec(224), simclr_spec(32)
    assert big.scale == (0.08, 1.0) and big.jitter_p == 0.8 and big.grayscale_p == 0.2
    assert (big.brightness, big.contrast, big.saturation, big.hue) == pytest.approx((0.8, 0.8, 0.8, 0.2))
    assert big.blur_p == 0.5 and big.kernel_size == 23 and big.blur_sigma == (0.1, 2.0)
    assert small.blur_p == 0.0  # SimCLR's CIFAR setting
    assert simclr_spec(32, blur=True).blur_p == 0.5
    half = simclr_spec(32, strength=0.5)
    assert (half.brightness, half.hue) == pytest.approx((0.4, 0.1))
    with pytest.raises(ValueError, match="strength"):
        simclr_spec(32, strength=-1)


def test_mocov2_recipe_values():
    s = mocov2_spec(224)
    assert s.scale == (0.2, 1.0) and s.flip_p == 0.5
    assert (s.brightness, s.contrast, s.saturation, s.hue, s.jitter_p) == (0.4, 0.4, 0.4, 0.1, 0.8)
    assert s.grayscale_p == 0.2 and s.blur_p == 0.5 and s.solarize_p == 0.0
    assert mocov2_spec(32).blur_p == 0.0


def test_byol_pair_is_asymmetric():
    t, tp = byol_specs(224)
    for s in (t, tp):
        assert s.scale == (0.08, 1.0) and s.ratio == pytest.approx((3 / 4, 4 / 3))
        assert (s.brightness, s.contrast, s.saturation, s.hue) == (0.4, 0.4, 0.2, 0.1)
        assert s.jitter_p == 0.8 and s.grayscale_p == 0.2 and s.kernel_size == 23
    assert (t.blur_p, t.solarize_p) == (1.0, 0.0)
    assert (tp.blur_p, tp.solarize_p) == (0.1, 0.2)
    t32, tp32 = byol_specs(32)
    assert (t32.blur_p, tp32.blur_p, tp32.solarize_p) == (0.0, 0.0, 0.2)


def test_swav_recipes():
    large, small = swav_large_spec(224), swav_small_spec(96)
    assert large.scale == (0.14, 1.0) and small.scale == (0.05, 0.14)
    assert small.size == 96 and small.kernel_size == 9 and small.blur_p == 0.5
    assert (small.brightness, small.hue) == pytest.approx((0.8, 0.2))
    from_byol = swav_small_spec(96, base=byol_specs(224)[0])
    assert from_byol.blur_p == 1.0 and from_byol.saturation == 0.2
    assert swav_small_spec(14).blur_p == 0.0


def test_mttv_recipe_kernel():
    assert mttv_spec(32).kernel_size == 3 and mttv_spec(224).kernel_size == 21
    assert mttv_spec(32).blur_p == 0.5  # kept on CIFAR, as in MTTV's code


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(ValueError) as err:
        MultiViewTransform(32, MEAN, STD, recipe="dino")
    for name in VIEW_RECIPES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="simclr"):
        recipe_specs("nope", 32)


# --------------------------------------------------------------------------- MultiViewTransform


def test_views_shapes_dtypes_multicrop_and_clean_view():
    t = MultiViewTransform(
        16, MEAN, STD, recipe="swav", num_large_views=2, num_small_views=3, small_size=8, clean_view=True
    )
    views = t(images(5, size=20), seed=3)
    assert t.total_views == 6 == len(views)
    assert [tuple(v.shape) for v in views] == [(5, 3, 16, 16)] * 2 + [(5, 3, 8, 8)] * 3 + [(5, 3, 16, 16)]
    assert all(v.dtype == torch.float32 for v in views)
    assert t.small_spec is not None and t.small_spec.scale == (0.05, 0.14)


def test_default_small_size_follows_swav_ratio():
    # SwAV's 96 px at 224 px, scaled and rounded down: 32 * 96 / 224 = 13.7 -> 13; 16 * 96 / 224 = 6.9 -> 6,
    # raised to the 8 px floor; a 6 px image keeps its own side; 28 * 96 / 224 = 12 exactly
    expected = {224: 96, 32: 13, 16: 8, 6: 6, 28: 12}
    assert {size: default_small_size(size) for size in expected} == expected
    # the transform and the datamodule use the same default
    assert MultiViewTransform(32, MEAN, STD, num_small_views=6).small_size == 13
    assert DigitsLT(image_size=32, num_small_views=2).small_size == 13


def test_clean_view_is_normalised_resized_image():
    x = images(3, size=24)
    views = MultiViewTransform(16, MEAN, STD, clean_view=True)(x, seed=0)
    resized = TF.resize(x.float() / 255, [16, 16], antialias=True)
    torch.testing.assert_close(views[-1], normalize(resized), atol=1e-5, rtol=0)
    same_size = MultiViewTransform(24, MEAN, STD, clean_view=True)(x, seed=0)[-1]
    torch.testing.assert_close(same_size, normalize(x.float() / 255), atol=1e-5, rtol=0)


def test_views_are_normalised_augment_outputs_drawn_in_order():
    x = images(4, size=16)
    transform = MultiViewTransform(12, MEAN, STD, recipe="byol", num_large_views=2, num_small_views=1, small_size=8)
    views = transform(x, seed=11)
    t, tp = byol_specs(12)
    g = torch.Generator().manual_seed(11)
    expected = [augment(x, t, g), augment(x, tp, g), augment(x, swav_small_spec(8, base=t), g)]
    for v, e in zip(views, expected, strict=True):
        torch.testing.assert_close(v, normalize(e), atol=1e-5, rtol=0)


def test_byol_views_use_t_then_t_prime():
    # T never solarises, T' does with p = 0.2. A white image stays >= 0.6 under BYOL's jitter
    # (brightness >= 0.6; contrast and saturation keep a constant gray), and solarising maps
    # anything >= 0.5 to <= 0.5, so the share of views below 0.55 is the solarisation rate.
    white = torch.full((1000, 3, 8, 8), 255, dtype=torch.uint8)
    t = MultiViewTransform(8, (0.0,), (1.0,), recipe="byol", num_large_views=3)
    v0, v1, v2 = (v.amin(dim=(1, 2, 3)) for v in t(white, seed=0))
    assert (v0 > 0.55).all() and (v2 > 0.55).all()  # views 0 and 2 use T
    share = (v1 < 0.55).double().mean().item()
    assert abs(share - 0.2) < 0.05  # 4 sd


def test_determinism_and_seed_sensitivity():
    x = images(4)
    t = MultiViewTransform(12, MEAN, STD, num_large_views=2, num_small_views=2, small_size=8)
    a, b, c = t(x, seed=5), t(x, seed=5), t(x, seed=6)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not any(torch.equal(u, v) for u, v in zip(a, c, strict=True))
    assert not torch.equal(a[0], a[1])  # the two large views differ


def test_one_channel_input_is_expanded():
    x = images(3, c=1, size=12)
    t = MultiViewTransform(12, (0.5,), (0.25,), recipe="mocov2", clean_view=True)
    views = t(x, seed=1)
    assert all(v.shape == (3, 3, 12, 12) for v in views)
    assert all(torch.equal(v[:, 0], v[:, 1]) and torch.equal(v[:, 1], v[:, 2]) for v in views)
    torch.testing.assert_close(views[-1][:, :1], (x.float() / 255 - 0.5) / 0.25)
    one = MultiViewTransform(12, (0.5,), (0.25,), out_channels=1)(x, seed=1)
    assert one[0].shape == (3, 1, 12, 12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mean"):
        MultiViewTransform(16, (0.5, 0.5), STD)
    with pytest.raises(ValueError, match="std"):
        MultiViewTransform(16, MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="num_large_views"):
        MultiViewTransform(16, MEAN, STD, num_large_views=0)
    with pytest.raises(ValueError, match="num_small_views"):
        MultiViewTransform(16, MEAN, STD, num_small_views=-1)
    with pytest.raises(ValueError, match="out_channels"):
        MultiViewTransform(16, MEAN, STD, out_channels=2)
    with pytest.raises(ValueError, match="channels"):
        MultiViewTransform(16, MEAN, STD, out_channels=1)(images(2, c=3), seed=0)
    with pytest.raises(ValueError, match="seed"):
        MultiViewTransform(16, MEAN, STD)(images(2), seed=1.5)  # type: ignore[arg-type]


def test_transform_pickles():
    t = MultiViewTransform(12, MEAN, STD, clean_view=True)
    t(images(2), seed=0)  # fills the per-device cache
    clone = pickle.loads(pickle.dumps(t))
    assert all(torch.equal(u, v) for u, v in zip(t(images(2), 4), clone(images(2), 4), strict=True))


# --------------------------------------------------------------------------- EvalTransform


def test_eval_transform_matches_torchvision_resize():
    x = images(3, size=40)
    out = EvalTransform(32, MEAN, STD)(x)
    ref = TF.resize(x.float() / 255, [32, 32], antialias=True)
    torch.testing.assert_close(out, normalize(ref), atol=1e-5, rtol=0)
    assert torch.equal(out, EvalTransform(32, MEAN, STD)(x))
    gray = EvalTransform(40, (0.5,), (0.5,))(images(2, c=1, size=40))
    assert gray.shape == (2, 3, 40, 40) and gray.dtype == torch.float32


def test_viewspec_is_consistent_with_recipes():
    # every registered recipe builds valid specs at CIFAR and ImageNet sizes
    for name in VIEW_RECIPES:
        for size in (32, 224):
            assert all(isinstance(s, ViewSpec) and s.size == size for s in recipe_specs(name, size))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_multiview_on_gpu_without_host_sync():
    x = images(8, size=32).cuda()
    t = MultiViewTransform(32, MEAN, STD, recipe="byol", num_small_views=2, small_size=16, clean_view=True)
    t(x, seed=0)  # warm-up: per-device normalisation constants are copied once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = t(x, seed=1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.device.type == "cuda" for v in views) and len(views) == 5
