"""Batched per-sample augmentation against torchvision's per-image transforms (CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from datamodules.augment import (
    ColorJitterParams,
    ViewSpec,
    adjust_hue,
    augment,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    hsv_to_rgb,
    random_color_jitter,
    random_gaussian_blur,
    random_grayscale,
    random_horizontal_flip,
    random_solarize,
    resized_crop,
    rgb_to_hsv,
    sample_color_jitter_params,
    sample_crop_boxes,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| (brute force over all values)."""
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a, grid, right=True).double() / len(a)
    fb = torch.searchsorted(b, grid, right=True).double() / len(b)
    return (fa - fb).abs().max().item()


def torchvision_boxes(n: int, height: int, width: int, scale, ratio, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    img = torch.empty(1, height, width)
    return torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)])


# --------------------------------------------------------------------------- crop


@pytest.mark.parametrize(
    "height,width,scale,ratio",
    [
        (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),
        (24, 40, (0.2, 1.0), (3 / 4, 4 / 3)),
        (20, 20, (0.5, 1.0), (0.2, 5.0)),  # many trials fail: exercises the retry loop
    ],
)
def test_crop_box_distribution_matches_torchvision(height, width, scale, ratio):
    n = 3000
    ours = sample_crop_boxes(n, height, width, scale, ratio, gen(1))
    ref = torchvision_boxes(n, height, width, scale, ratio, seed=2)
    top, left, h, w = ours.unbind(1)
    assert ours.dtype == torch.int64
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all() and (h > 0).all() and (w > 0).all()
    # KS critical value at alpha = 0.001 for n = m = 3000 is 1.95 * sqrt(2 / 3000) = 0.050.
    area, area_ref = h * w / (height * width), ref[:, 2] * ref[:, 3] / (height * width)
    assert ks_statistic(area, area_ref) < 0.05
    assert ks_statistic((w / h).log(), (ref[:, 3] / ref[:, 2]).log()) < 0.05
    # the position is uniform over the free range
    rel_top = (top + 0.5) / (height - h + 1)
    rel_top_ref = (ref[:, 0] + 0.5) / (height - ref[:, 2] + 1)
    assert ks_statistic(rel_top, rel_top_ref) < 0.05
    rel_left = (left + 0.5) / (width - w + 1)
    rel_left_ref = (ref[:, 1] + 0.5) / (width - ref[:, 3] + 1)
    assert ks_statistic(rel_left, rel_left_ref) < 0.05


def test_crop_fallback_is_torchvisions_central_crop():
    # 4×100 image, area >= 50%: every trial needs h >= 10 > 4, so all 10 fail.
    ours = sample_crop_boxes(5, 4, 100, (0.5, 1.0), (3 / 4, 4 / 3), gen())
    ref = T.RandomResizedCrop.get_params(torch.empty(1, 4, 100), [0.5, 1.0], [3 / 4, 4 / 3])
    assert ref == (0, 47, 4, 5)  # by hand: h = 4, w = round(4 * 4/3) = 5, left = (100 - 5) // 2
    assert (ours == torch.tensor(ref)).all()


def test_crop_fallback_rate_matches_torchvision():
    # 10×40 image, area 30-100%: most trials need h > 10, so the fallback is frequent. By hand the
    # fallback is h = 10, w = round(10 * 4/3) = 13, top = 0, left = (40 - 13) // 2 = 13.
    n, scale, ratio = 3000, (0.3, 1.0), (3 / 4, 4 / 3)
    ours = sample_crop_boxes(n, 10, 40, scale, ratio, gen(3))
    ref = torchvision_boxes(n, 10, 40, scale, ratio, seed=4)
    fallback = torch.tensor([0, 13, 10, 13])
    rate = lambda boxes: (boxes == fallback).all(dim=1).double().mean().item()  # noqa: E731
    assert 0.2 < rate(ref) < 0.98  # the case exercises both branches
    assert abs(rate(ours) - rate(ref)) < 0.04
    assert ks_statistic(ours[:, 2] * ours[:, 3], ref[:, 2] * ref[:, 3]) < 0.05


def test_resized_crop_upsampling_is_bilinear():
    x = torch.rand(2, 3, 8, 8)
    full = torch.tensor([[0, 0, 8, 8], [0, 0, 8, 8]])
    expected = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized_crop(x, full, 16), expected, atol=1e-6, rtol=0)
    # identity box at the same size returns the image
    torch.testing.assert_close(resized_crop(x, full, 8), x, atol=1e-6, rtol=0)


def test_resized_crop_interior_matches_torchvision_resized_crop():
    x = torch.rand(3, 1, 20, 24)
    boxes = torch.tensor([[2, 3, 10, 12], [5, 0, 8, 8], [0, 7, 16, 11]])  # upsampling: plain bilinear
    out = resized_crop(x, boxes, 16)
    for b, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[b], top, left, h, w, [16, 16], antialias=False)
        # away from the border the samples do not reach outside the box
        torch.testing.assert_close(out[b, :, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_resized_crop_downsampling_averages():
    x = torch.rand(2, 3, 16, 16)
    full = torch.tensor([[0, 0, 16, 16]] * 2)
    torch.testing.assert_close(resized_crop(x, full, 8), F.avg_pool2d(x, 2), atol=1e-6, rtol=0)
    const = torch.full((1, 1, 30, 30), 0.3)
    out = resized_crop(const, torch.tensor([[1, 2, 27, 21]]), 7)
    torch.testing.assert_close(out, torch.full_like(out, 0.3))


# --------------------------------------------------------------------------- flip


def test_flip_rate_and_content():
    n = 4000
    x = torch.arange(2.0).view(1, 1, 1, 2).expand(n, 1, 1, 2)
    out = random_horizontal_flip(x, 0.3, gen())
    flipped = out[:, 0, 0, 0] == 1.0
    assert (out[flipped] == x[:1].flip(-1)).all() and (out[~flipped] == x[:1]).all()
    assert abs(flipped.double().mean().item() - 0.3) < 0.03  # 4 sd = 0.029
    assert not random_horizontal_flip(x, 0.0, gen()).ne(x).any()
    assert random_horizontal_flip(x, 1.0, gen()).eq(x.flip(-1)).all()


# --------------------------------------------------------------------------- colour


def torchvision_jitter(img: torch.Tensor, factors, hue: float, order) -> torch.Tensor:
    for op in order:
        if op == 0:
            img = TF.adjust_brightness(img, factors[0])
        elif op == 1:
            img = TF.adjust_contrast(img, factors[1])
        elif op == 2:
            img = TF.adjust_saturation(img, factors[2])
        else:
            img = TF.adjust_hue(img, hue)
    return img


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_matches_torchvision_per_image(channels):
    n = 48
    x = torch.rand(n, channels, 6, 6)
    params = sample_color_jitter_params(n, 0.8, 0.8, 0.8, 0.2, 0.7, gen(5))
    out = color_jitter(x, params)
    for b in range(n):
        if params.apply[b]:
            ref = torchvision_jitter(x[b], params.factors[b].tolist(), params.hue[b].item(), params.order[b].tolist())
        else:
            ref = x[b]
        torch.testing.assert_close(out[b], ref, atol=2e-5, rtol=0)


def test_color_jitter_params_ranges_and_order():
    n = 4000
    p = sample_color_jitter_params(n, 0.4, 1.5, 0.2, 0.1, 0.8, gen(6))
    for k, (lo, hi) in enumerate([(0.6, 1.4), (0.0, 2.5), (0.8, 1.2)]):
        f = p.factors[:, k]
        assert f.min() >= lo and f.max() <= hi
        assert f.min() < lo + 0.01 * (hi - lo) and f.max() > hi - 0.01 * (hi - lo)
    assert p.hue.abs().max() <= 0.1 and p.hue.min() < -0.099 and p.hue.max() > 0.099
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()  # permutations
    position_share = torch.stack([(p.order == op).double().mean(0) for op in range(4)])
    assert (position_share - 0.25).abs().max() < 0.03  # each op equally often at each position
    assert abs(p.apply.double().mean().item() - 0.8) < 0.03
    assert len(set(map(tuple, p.order.tolist()))) == 24


def test_brightness_of_constant_image_stays_in_range():
    n, b, value = 2000, 0.4, 0.25
    x = torch.full((n, 3, 4, 4), value)
    out = random_color_jitter(x, b, 0.0, 0.0, 0.0, 1.0, gen(7))
    factor = out[:, 0, 0, 0] / value
    assert torch.allclose(out, factor.view(-1, 1, 1, 1) * value)  # uniform scaling, per image
    assert factor.min() >= 1 - b - 1e-6 and factor.max() <= 1 + b + 1e-6
    assert factor.min() < 1 - b + 0.01 and factor.max() > 1 + b - 0.01


def test_contrast_and_saturation_keep_gray_constant_image():
    x = torch.full((50, 3, 4, 4), 0.4)
    out = random_color_jitter(x, 0.0, 0.9, 0.9, 0.0, 1.0, gen(8))
    # torchvision's luma weights sum to 0.9999, so the gray reference is 0.39996, not 0.4
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("color", [(1.0, 0.0, 0.0), (0.2, 0.7, 0.4), (0.9, 0.8, 0.1)])
def test_hue_shift_of_pure_colour_matches_torchvision(color):
    factors = torch.tensor([-0.5, -0.3, -0.1, 0.0, 0.05, 0.25, 0.45])
    x = torch.tensor(color).view(1, 3, 1, 1).expand(len(factors), 3, 5, 5).contiguous()
    out = adjust_hue(x, factors)
    for b, f in enumerate(factors.tolist()):
        torch.testing.assert_close(out[b], TF.adjust_hue(x[b], f), atol=1e-5, rtol=0)
    # a third of a turn maps pure red to pure green, by hand
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        adjust_hue(red, torch.tensor([1 / 3])).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0
    )


def test_hsv_round_trip_and_known_values():
    x = torch.rand(4, 3, 7, 7)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    # by hand: (0.2, 0.4, 0.8): v = 0.8, s = 0.6/0.8 = 0.75, h = (4 + (0.2 - 0.4)/0.6)/6 = 11/18
    hsv = rgb_to_hsv(torch.tensor([0.2, 0.4, 0.8]).view(1, 3, 1, 1)).flatten()
    torch.testing.assert_close(hsv, torch.tensor([11 / 18, 0.75, 0.8]))


def test_one_channel_saturation_and_hue_are_noops():
    x = torch.rand(30, 1, 5, 5)
    out = random_color_jitter(x, 0.0, 0.0, 0.9, 0.5, 1.0, gen(9))
    assert torch.equal(out, x)


def test_jitter_applied_with_probability_p():
    x = torch.rand(1, 3, 4, 4).expand(3000, 3, 4, 4)
    out = random_color_jitter(x, 0.4, 0.4, 0.4, 0.1, 0.6, gen(10))
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert abs(changed.double().mean().item() - 0.6) < 0.04


def test_grayscale_equals_torchvision():
    x = torch.rand(400, 3, 5, 5)
    out = random_grayscale(x, 0.25, gen(11))
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert abs(gray.double().mean().item() - 0.25) < 0.09  # 4 sd
    for b in range(len(x)):
        ref = TF.rgb_to_grayscale(x[b], num_output_channels=3) if gray[b] else x[b]
        torch.testing.assert_close(out[b], ref, atol=1e-6, rtol=0)
    one = torch.rand(5, 1, 3, 3)
    assert torch.equal(random_grayscale(one, 1.0, gen()), one)


# --------------------------------------------------------------------------- blur, solarise


def test_blur_kernel_size_rule():
    assert [blur_kernel_size(s) for s in (32, 96, 224, 8)] == [3, 9, 23, 1]


def test_blur_matches_torchvision_per_image_sigma():
    x = torch.rand(4, 3, 12, 10)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    out = gaussian_blur(x, sigma, 5)
    for b in range(4):
        ref = TF.gaussian_blur(x[b], [5, 5], [sigma[b].item()] * 2)
        torch.testing.assert_close(out[b], ref, atol=1e-6, rtol=0)


def test_blur_constant_stays_constant_and_impulse_sums_to_one():
    const = torch.full((6, 3, 9, 9), 0.6)
    out = random_gaussian_blur(const, 1.0, (0.1, 2.0), 7, gen(12))
    torch.testing.assert_close(out, const)
    impulse = torch.zeros(6, 1, 15, 15)
    impulse[:, :, 7, 7] = 1.0
    out = random_gaussian_blur(impulse, 1.0, (0.5, 2.0), 7, gen(13))
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), torch.ones(6))
    # each image its own sigma: the peaks all differ
    assert out[:, 0, 7, 7].unique().numel() == 6
    assert torch.equal(random_gaussian_blur(impulse, 0.0, (0.5, 2.0), 7, gen()), impulse)


def test_solarize_exact():
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101).expand(3, 3, 2, 101)
    out = random_solarize(x, 1.0, gen())
    expected = torch.where(x >= 0.5, 1 - x, x)
    assert torch.equal(out, expected)
    assert torch.equal(out[0], TF.solarize(x[0], 0.5))
    assert torch.equal(random_solarize(x, 0.0, gen()), x)


# --------------------------------------------------------------------------- spec and pipeline


def test_viewspec_validation():
    assert ViewSpec(size=8, scale=[0.1, 0.9]).scale == (0.1, 0.9)  # YAML lists become tuples
    bad = [
        dict(size=0),
        dict(size=8, scale=(0.5, 0.2)),
        dict(size=8, scale=(0.0, 1.0)),
        dict(size=8, ratio=(2.0, 1.0)),
        dict(size=8, flip_p=1.5),
        dict(size=8, brightness=-0.1),
        dict(size=8, hue=0.6),
        dict(size=8, blur_sigma=(0.0, 1.0)),
        dict(size=8, blur_kernel=4),
        dict(size=8, blur_p=0.5, blur_kernel=17),
        dict(size=8, scale=0.5),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            ViewSpec(**kwargs)
    with pytest.raises(ValueError, match="hue"):
        ViewSpec(size=8, hue=0.6)
    with pytest.raises(AttributeError):
        ViewSpec(size=8).size = 4  # type: ignore[misc]


SPEC = ViewSpec(size=12, scale=(0.08, 1.0), blur_p=0.5, solarize_p=0.3)


def test_augment_shapes_dtype_range_and_uint8():
    u8 = torch.randint(0, 256, (5, 3, 16, 20), dtype=torch.uint8)
    out = augment(u8, SPEC, gen(14))
    assert out.shape == (5, 3, 12, 12) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(augment(u8.float() / 255, SPEC, gen(14)), out)
    gray = augment(torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8), SPEC, gen(14))
    assert gray.shape == (5, 1, 12, 12)


def test_augment_determinism_and_per_image_parameters():
    x = torch.rand(1, 3, 16, 16).expand(8, 3, 16, 16)
    a, b = augment(x, SPEC, gen(15)), augment(x, SPEC, gen(15))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(x, SPEC, gen(16)))
    flat = a.flatten(1)
    distinct = {tuple(row.tolist()) for row in flat}
    assert len(distinct) == 8  # same image, eight different views


def test_augment_rejects_bad_input():
    with pytest.raises(ValueError, match="C in"):
        augment(torch.rand(2, 2, 8, 8), SPEC, gen())
    with pytest.raises(ValueError, match="int"):
        augment(torch.zeros(2, 3, 8, 8, dtype=torch.int32), SPEC, gen())


def test_jitter_params_dataclass_is_what_color_jitter_consumes():
    # hand-made params: brightness ×0.5 then nothing else, on one image; the other untouched
    x = torch.full((2, 3, 2, 2), 0.8)
    params = ColorJitterParams(
        factors=torch.tensor([[0.5, 1.0, 1.0], [0.5, 1.0, 1.0]]),
        hue=torch.zeros(2),
        order=torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]),
        apply=torch.tensor([True, False]),
    )
    out = color_jitter(x, params, with_hue=False)
    torch.testing.assert_close(out[0], torch.full((3, 2, 2), 0.4))
    assert torch.equal(out[1], x[1])
    assert math.isclose(out.sum().item(), 12 * 0.4 + 12 * 0.8, rel_tol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_augment_runs_on_gpu_without_host_sync():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    spec = ViewSpec(size=24, blur_p=0.5, solarize_p=0.2)
    augment(x, spec, g)  # warm-up (lazy CUDA initialisation may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment(x, spec, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == (16, 3, 24, 24) and out.device.type == "cuda"
