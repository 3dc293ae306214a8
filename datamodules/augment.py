"""Batched, per-sample image augmentation in pure torch (CPU and GPU, same code).

Every op takes a whole batch ``B×C×H×W`` (``C`` = 1 or 3, float in [0, 1]) and gives each image its
own random parameters, drawn from a ``torch.Generator`` on the images' device. Nothing here reads a
value back to the host (no ``.item()``, no data-dependent shapes), so a whole view family runs on
the GPU without synchronisation. The semantics follow torchvision's per-image transforms
(``RandomResizedCrop``, ``RandomHorizontalFlip``, ``ColorJitter``, ``RandomGrayscale``,
``GaussianBlur``, ``RandomSolarize``), which the SSL recipes (SimCLR, MoCo v2, BYOL, SwAV) were
written with; ``tests/test_augment.py`` checks them against torchvision.

Order of the ops in :func:`augment` is BYOL's (Grill et al. 2020, App. B / Table 6): crop, flip,
colour jitter, grayscale, blur, solarise. SimCLR and MoCo v2 place the flip elsewhere; the flip
commutes with every other op here (pointwise colour ops, symmetric blur with reflect padding), so
the distribution of views is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.ops  # noqa: F401  (registers torch.ops.torchvision.roi_align)
from torch import Tensor

__all__ = [
    "ViewSpec",
    "augment",
    "to_float",
    "sample_crop_boxes",
    "resized_crop",
    "random_resized_crop",
    "random_horizontal_flip",
    "rgb_to_grayscale",
    "random_grayscale",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "adjust_hue",
    "ColorJitterParams",
    "sample_color_jitter_params",
    "color_jitter",
    "random_color_jitter",
    "blur_kernel_size",
    "gaussian_kernels",
    "gaussian_blur",
    "random_gaussian_blur",
    "solarize",
    "random_solarize",
]

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale (and PIL's "L" mode).
_LUMA = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------------- spec


def _pair(value: object, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    return lo, hi


def _check_prob(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability and must be in [0, 1], got {value}")


@dataclass(frozen=True)
class ViewSpec:
    """Every parameter of one view family; the defaults are the MoCo v2 recipe at 224 px.

    Args:
        size: output side (square crops), pixels.
        scale: range of the crop area as a fraction of the image area (torchvision semantics).
        ratio: range of the crop aspect ratio w/h, sampled log-uniformly.
        flip_p: probability of a horizontal flip.
        jitter_p: probability that colour jitter is applied to an image.
        brightness, contrast, saturation: jitter strength ``x``; the factor is drawn uniformly
            from ``[max(0, 1 - x), 1 + x]`` (torchvision ``ColorJitter``).
        hue: jitter strength in [0, 0.5]; the hue shift is drawn uniformly from ``[-hue, hue]``.
        grayscale_p: probability of converting an image to grayscale (kept 3-channel).
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation, pixels, sampled uniformly per image.
        blur_kernel: odd kernel side; ``None`` = about 10% of ``size`` (:func:`blur_kernel_size`).
        solarize_p: probability of solarisation (values >= 0.5 become ``1 - x``).
    """

    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None
    solarize_p: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}")
        for name in ("scale", "ratio", "blur_sigma"):
            object.__setattr__(self, name, _pair(getattr(self, name), name))
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        lo, hi = self.ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {self.ratio}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            _check_prob(float(getattr(self, name)), name)
        for name in ("brightness", "contrast", "saturation"):
            if float(getattr(self, name)) < 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")
        if self.blur_kernel is not None and (
            isinstance(self.blur_kernel, bool)
            or not isinstance(self.blur_kernel, int)
            or self.blur_kernel < 1
            or self.blur_kernel % 2 == 0
        ):
            raise ValueError(f"blur_kernel must be None or a positive odd int, got {self.blur_kernel!r}")
        if self.blur_p > 0 and self.kernel_size // 2 >= self.size:
            raise ValueError(
                f"blur kernel {self.kernel_size} is too large for size {self.size} "
                f"(reflect padding needs kernel // 2 < size)"
            )

    @property
    def kernel_size(self) -> int:
        """The blur kernel side actually used."""
        return self.blur_kernel if self.blur_kernel is not None else blur_kernel_size(self.size)


# --------------------------------------------------------------------------- helpers


def to_float(images: Tensor) -> Tensor:
    """``B×C×H×W`` uint8 (0-255) or float (0-1) images -> float32 in [0, 1]; C must be 1 or 3."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be B×C×H×W with C in (1, 3), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.float()


def _bernoulli(batch: int, p: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """``batch`` independent coin flips with P(True) = p."""
    return torch.rand(batch, generator=generator, device=device) < p


def _uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator, device: torch.device) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device)


def _check_generator(images: Tensor, generator: torch.Generator) -> None:
    if generator.device.type != images.device.type:
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}; "
            f"create it with torch.Generator(device=images.device)"
        )


# --------------------------------------------------------------------------- crop and flip


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    trials: int = 10,
) -> Tensor:
    """Per-image crop boxes ``(top, left, height, width)`` as ``B×4`` int64.

    Vectorised ``torchvision.transforms.RandomResizedCrop.get_params``: for each image, up to
    ``trials`` (area fraction ~ U(scale), log aspect ratio ~ U(log ratio)) draws; the first that
    fits the image wins and its position is uniform; if none fits, the central fallback crop
    (whole image clipped to the ratio range) is used. All trials are drawn at once.
    """
    area = height * width
    draws = torch.rand(batch, trials, 2, generator=generator, device=device)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[..., 1])
    w = torch.round(torch.sqrt(target_area * aspect)).long()
    h = torch.round(torch.sqrt(target_area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting trial (0 if none)
    found = fits.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # torchvision's fallback: the central crop with the aspect ratio clipped to the range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    w = torch.where(found, w, fw)
    h = torch.where(found, h, fh)

    pos = torch.rand(batch, 2, generator=generator, device=device)
    top = torch.minimum((pos[:, 0] * (height - h + 1)).long(), height - h)
    left = torch.minimum((pos[:, 1] * (width - w + 1)).long(), width - w)
    top = torch.where(found, top, (height - fh) // 2)
    left = torch.where(found, left, (width - fw) // 2)
    return torch.stack([top, left, h, w], dim=1)


def resized_crop(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crop ``boxes`` (``B×4`` top, left, height, width) and resize each to ``size×size``.

    One ``roi_align`` call (torchvision) for the whole batch, ``aligned=True``: each output pixel
    is a bilinear sample of the image at the point that
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` of the box would sample; when the
    box is larger than the output, each output pixel averages ``ceil(h/size)·ceil(w/size)`` such
    samples (anti-aliasing, in the spirit of torchvision's ``antialias=True``). At the box border
    the samples may read the pixels just outside the box (the image is treated as continuous),
    where cropping first would clamp to the box edge.
    """
    b = images.shape[0]
    boxes = boxes.to(images.dtype)
    top, left, h, w = boxes.unbind(1)
    index = torch.arange(b, device=images.device, dtype=images.dtype)
    rois = torch.stack([index, left, top, left + w, top + h], dim=1)
    # The registered kernel is called directly: its forward is deterministic, whereas
    # ``torchvision.ops.roi_align`` switches, under ``torch.use_deterministic_algorithms(True)``
    # on GPU, to a Python fallback that with adaptive sampling materialises a B×C×S×S×H×W tensor.
    return torch.ops.torchvision.roi_align(images, rois, 1.0, size, size, -1, True)


def random_resized_crop(
    images: Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """Per-image ``RandomResizedCrop(size, scale, ratio)`` of float images."""
    b, _, h, w = images.shape
    boxes = sample_crop_boxes(b, h, w, scale, ratio, generator, images.device)
    return resized_crop(images, boxes, size)


def random_horizontal_flip(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Flip each image left-right with probability ``p``."""
    flip = _bernoulli(images.shape[0], p, generator, images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


# --------------------------------------------------------------------------- colour


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma ``B×1×H×W`` of RGB images (torchvision weights); 1-channel images are returned as is."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def random_grayscale(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Replace each RGB image by its luma in all 3 channels with probability ``p``."""
    gray_mask = _bernoulli(images.shape[0], p, generator, images.device)
    if images.shape[1] == 1:
        return images
    gray = rgb_to_grayscale(images).expand_as(images)
    return torch.where(gray_mask[:, None, None, None], gray, images)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB -> HSV, all channels in [0, 1] (hue as a fraction of a turn); ``B×3×H×W``."""
    r, g, b = images.unbind(1)
    maxc = images.amax(dim=1)
    minc = images.amin(dim=1)
    delta = maxc - minc
    gray = delta == 0
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(gray, torch.ones_like(delta), delta)
    h = torch.where(
        maxc == r,
        (g - b) / d,
        torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d),
    )
    h = torch.where(gray, torch.zeros_like(h), torch.remainder(h / 6.0, 1.0))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """HSV -> RGB, the inverse of :func:`rgb_to_hsv`.

    Channel ``n`` in (5, 3, 1) for (R, G, B) is ``v - v·s·clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6h) mod 6`` (the closed form of the hexcone model).
    """
    h, s, v = images.unbind(1)
    # n = (5, 3, 1), made on the device (no host-to-device copy).
    n = (5.0 - 2.0 * torch.arange(3, device=images.device, dtype=images.dtype)).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    v, s = v.unsqueeze(1), s.unsqueeze(1)
    return v - v * s * ramp


def adjust_hue(images: Tensor, hue_factor: Tensor) -> Tensor:
    """Rotate each image's hue by ``hue_factor[b]`` turns (torchvision ``adjust_hue``).

    1-channel images are returned unchanged, as torchvision and PIL do.
    """
    if images.shape[1] == 1:
        return images
    hsv = rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, :1] + hue_factor.view(-1, 1, 1, 1), 1.0)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1))


@dataclass(frozen=True)
class ColorJitterParams:
    """Per-image colour-jitter parameters (all tensors have leading dimension B).

    ``factors``: ``B×3`` brightness, contrast and saturation factors; ``hue``: ``B`` hue shifts;
    ``order``: ``B×4`` a permutation of (0 brightness, 1 contrast, 2 saturation, 3 hue) per image,
    the order the ops are applied in (torchvision draws a random order per call); ``apply``: ``B``
    bool, whether the jitter is applied at all.
    """

    factors: Tensor
    hue: Tensor
    order: Tensor
    apply: Tensor


def sample_color_jitter_params(
    batch: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> ColorJitterParams:
    """Draw ``ColorJitter(brightness, contrast, saturation, hue)`` applied with probability p.

    Factor ranges are torchvision's: ``[max(0, 1 - x), 1 + x]`` for brightness, contrast and
    saturation, ``[-hue, hue]`` for the hue shift, and a uniformly random order of the four ops.
    """
    apply = _bernoulli(batch, p, generator, device)
    order = torch.rand(batch, 4, generator=generator, device=device).argsort(dim=1)
    u = torch.rand(batch, 4, generator=generator, device=device)
    strengths = (brightness, contrast, saturation)
    # Python-scalar bounds: building a device tensor from a list would copy (and sync) on the GPU.
    factors = torch.stack(
        [max(0.0, 1.0 - x) + (1.0 + x - max(0.0, 1.0 - x)) * u[:, i] for i, x in enumerate(strengths)],
        dim=1,
    )
    hue_shift = hue * (2.0 * u[:, 3] - 1.0)
    return ColorJitterParams(factors=factors, hue=hue_shift, order=order, apply=apply)


_IDENTITY = 3  # op code of "do nothing" in a blend step (3 is hue, which blends never do)


def _blend_step(images: Tensor, op: Tensor, factors: Tensor) -> Tensor:
    """Apply per image the blend op ``op[b]`` (0 brightness, 1 contrast, 2 saturation, 3 none).

    All three are torchvision's ``_blend(img, ref, f) = clamp(f·img + (1 - f)·ref, 0, 1)`` with
    ref = 0 (brightness), the mean luma of the image (contrast) or the per-pixel luma
    (saturation); "none" uses f = 1, which returns the image exactly.
    """
    gray = rgb_to_grayscale(images)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    op4 = op.view(-1, 1, 1, 1)
    ref = torch.where(op4 == 2, gray, torch.where(op4 == 1, mean, torch.zeros_like(mean)))
    f = factors.gather(1, op.clamp(max=2).unsqueeze(1)).squeeze(1)
    f = torch.where(op == _IDENTITY, torch.ones_like(f), f).view(-1, 1, 1, 1)
    return (f * images + (1.0 - f) * ref).clamp_(0.0, 1.0)


def color_jitter(images: Tensor, params: ColorJitterParams, with_hue: bool = True) -> Tensor:
    """Apply drawn colour-jitter ``params`` to float images (torchvision ``ColorJitter`` per image).

    Each image's order is split at its hue op: up to three blend ops before it, hue once for
    the batch, up to three after; a blend step with nothing to do for an image is the identity.
    This costs six cheap blends and one HSV round trip whatever the orders. For 1-channel
    images saturation and hue are no-ops (as in torchvision and PIL). ``with_hue=False`` skips
    the HSV round trip (for hue strength 0, where it would only add rounding).
    """
    factors = params.factors
    if images.shape[1] == 1:
        factors = torch.cat([factors[:, :2], torch.ones_like(factors[:, 2:])], dim=1)
    order = params.order
    hue_pos = (order == 3).to(torch.uint8).argmax(dim=1)
    out = images
    for k in range(3):  # ops before hue
        op = torch.where(hue_pos > k, order[:, k], _IDENTITY)
        out = _blend_step(out, op, factors)
    if with_hue:
        out = adjust_hue(out, params.hue)
    for k in range(3):  # ops after hue
        idx = hue_pos + 1 + k
        op = order.gather(1, idx.clamp(max=3).unsqueeze(1)).squeeze(1)
        out = _blend_step(out, torch.where(idx <= 3, op, _IDENTITY), factors)
    return torch.where(params.apply.view(-1, 1, 1, 1), out, images)


def random_color_jitter(
    images: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    generator: torch.Generator,
) -> Tensor:
    """Per-image ``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)``."""
    params = sample_color_jitter_params(
        images.shape[0], brightness, contrast, saturation, hue, p, generator, images.device
    )
    return color_jitter(images, params, with_hue=hue > 0)


# --------------------------------------------------------------------------- blur, solarise


def blur_kernel_size(size: int) -> int:
    """Odd blur kernel side of about 10% of the image side.

    SimCLR's rule (Chen et al. 2020, App. A; its TF code ``2 * (size // 10 // 2) + 1``):
    23 at 224 px (BYOL's 23×23, Grill et al. 2020 Table 6), 9 at 96 px, 3 at 32 px.
    """
    return max(1, 2 * (size // 10 // 2) + 1)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, ``B×kernel_size``, one per sigma (torchvision's sampling)."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    pdf = torch.exp(-0.5 * (x.unsqueeze(0) / sigma.unsqueeze(1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image with its own ``sigma[b]`` (torchvision ``gaussian_blur``: reflect padding).

    Separable: one horizontal and one vertical grouped convolution over the ``B·C`` planes, with
    the per-image kernels as the groups' weights.
    """
    b, c, h, w = images.shape
    pad = kernel_size // 2
    kernels = gaussian_kernels(sigma.to(images.dtype), kernel_size).repeat_interleave(c, dim=0)
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect").reshape(1, b * c, h + 2 * pad, w + 2 * pad)
    x = F.conv2d(x, kernels.view(b * c, 1, 1, kernel_size), groups=b * c)
    x = F.conv2d(x, kernels.view(b * c, 1, kernel_size, 1), groups=b * c)
    return x.reshape(b, c, h, w)


def random_gaussian_blur(
    images: Tensor,
    p: float,
    sigma: tuple[float, float],
    kernel_size: int,
    generator: torch.Generator,
) -> Tensor:
    """Blur each image with probability ``p``, sigma ~ U(sigma) per image."""
    b = images.shape[0]
    apply = _bernoulli(b, p, generator, images.device)
    sigmas = _uniform((b,), sigma[0], sigma[1], generator, images.device)
    blurred = gaussian_blur(images, sigmas, kernel_size)
    return torch.where(apply.view(-1, 1, 1, 1), blurred, images)


def solarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert the pixels at or above ``threshold`` (torchvision ``solarize``; BYOL, Table 6)."""
    return torch.where(images >= threshold, 1.0 - images, images)


def random_solarize(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Solarise each image with probability ``p`` at threshold 0.5 (half the [0, 1] range)."""
    apply = _bernoulli(images.shape[0], p, generator, images.device)
    return torch.where(apply.view(-1, 1, 1, 1) & (images >= 0.5), 1.0 - images, images)


# --------------------------------------------------------------------------- the pipeline


def augment(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    """One view per image of the family ``spec``: ``B×C×size×size`` float32 in [0, 1].

    ``images``: uint8 (0-255) or float (0-1) ``B×C×H×W`` with C in (1, 3). ``generator`` must be
    on the images' device; the same generator state gives the same views. Ops whose probability
    is 0 are skipped without drawing.
    """
    _check_generator(images, generator)
    x = to_float(images)
    x = random_resized_crop(x, spec.size, spec.scale, spec.ratio, generator)
    if spec.flip_p > 0:
        x = random_horizontal_flip(x, spec.flip_p, generator)
    if spec.jitter_p > 0 and (spec.brightness or spec.contrast or spec.saturation or spec.hue):
        x = random_color_jitter(x, spec.brightness, spec.contrast, spec.saturation, spec.hue, spec.jitter_p, generator)
    if spec.grayscale_p > 0:
        x = random_grayscale(x, spec.grayscale_p, generator)
    if spec.blur_p > 0:
        x = random_gaussian_blur(x, spec.blur_p, spec.blur_sigma, spec.kernel_size, generator)
    if spec.solarize_p > 0:
        x = random_solarize(x, spec.solarize_p, generator)
    return x


# --------------------------------------------------------------------------- RandAugment (BCL)
#
# BCL's per-sample RandAugment (Zhou et al., ICML 2022; official ``data/randaug.py``, itself
# ildoonet/pytorch-randaugment's; docs/methods.md §13.4): each image draws ``num_ops`` ops with
# replacement from the 15 below, applies each with its own probability ``p``, at the value
# ``(m / 30) (max - min) + min`` of its magnitude ``m`` in [0, 30]. The official ops run on PIL uint8
# images; here every op quantises its input to the uint8 grid and returns values on it, with PIL's
# rounding: geometric ops sample the nearest pixel at PIL's pixel-centre coordinates and fill with
# black, blends truncate, Cutout fills grey (125, 123, 114). ``tests/test_bcl.py`` checks each op
# against PIL. Note that "magnitude" is not monotone in strength for every op: Solarize and
# Posterize get weaker as m grows and the four enhance ops are the identity at m = 15 (inherited).

RANDAUG_OPS: tuple[tuple[str, float, float], ...] = (
    ("shear_x", 0.0, 0.6),
    ("shear_y", 0.0, 0.6),
    ("translate_x", 0.0, 0.66),
    ("translate_y", 0.0, 0.66),
    ("rotate", 0.0, 60.0),
    ("auto_contrast", 0.0, 1.0),
    ("invert", 0.0, 1.0),
    ("equalize", 0.0, 1.0),
    ("solarize", 0.0, 110.0),
    ("posterize", 4.0, 8.0),
    ("contrast", 0.1, 1.9),
    ("color", 0.1, 1.9),
    ("brightness", 0.1, 1.9),
    ("sharpness", 0.1, 1.9),
    ("cutout", 0.0, 0.4),
)
"""(name, min, max) of BCL's 15 ops, in the official ``augment_list()`` order (Identity and
SamplePairing are commented out there)."""
RANDAUG_MAX_MAGNITUDE = 30.0
_OP = {name: i for i, (name, _, _) in enumerate(RANDAUG_OPS)}
_CUTOUT_FILL = (125.0, 123.0, 114.0)  # official CutoutAbs colour (0-255)


def randaug_value(op: str, magnitude: Tensor) -> Tensor:
    """The op's value at magnitude ``m`` (official ``RandAugment_prob``): ``(m / 30) (max - min) + min``."""
    _, lo, hi = RANDAUG_OPS[_OP[op]]
    return magnitude / RANDAUG_MAX_MAGNITUDE * (hi - lo) + lo


def _to_uint8_grid(images: Tensor) -> Tensor:
    """Float images on the 0-255 integer grid (what the official ops receive: PIL uint8)."""
    return torch.round(images.clamp(0.0, 1.0) * 255.0)


def pil_affine(images: Tensor, matrix: Tensor) -> Tensor:
    """PIL's ``Image.transform(size, AFFINE, (a, b, c, d, e, f))`` with NEAREST, per image, black outside.

    Output pixel ``(x, y)`` reads input ``(a (x + .5) + b (y + .5) + c, d (x + .5) + e (y + .5) + f)``
    as PIL computes it: a pure scale / translation (``b = d = 0``) in floating point, truncated
    (``ImagingScaleAffine``); any other map in 16.16 fixed point with every coefficient rounded to
    ``1/65536`` and an arithmetic shift (``affine_fixed``, which PIL takes for images under 32768 px).
    ``matrix`` is ``B x 6``.
    """
    b, c, h, w = images.shape
    m = matrix.to(torch.float64)
    ys = torch.arange(h, device=images.device, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, device=images.device, dtype=torch.float64).view(1, 1, w)
    coef = [m[:, i, None, None] for i in range(6)]
    # scale / translation: xo = c + a / 2, then += a per column (exact for a = 1), COORD truncation
    x_float = (coef[2] + coef[0] * 0.5) + xs * coef[0]
    y_float = (coef[5] + coef[4] * 0.5) + ys * coef[4]
    ix_scale = torch.where(x_float < 0, -1, x_float.long()).expand(b, h, w)
    iy_scale = torch.where(y_float < 0, -1, y_float.long()).expand(b, h, w)

    def fix(v: Tensor) -> Tensor:
        return torch.floor(v * 65536.0 + 0.5).long()

    a0, a1, a3, a4 = fix(coef[0]), fix(coef[1]), fix(coef[3]), fix(coef[4])
    a2 = fix(coef[2] + coef[0] * 0.5 + coef[1] * 0.5)
    a5 = fix(coef[5] + coef[3] * 0.5 + coef[4] * 0.5)
    xi, yi = xs.long(), ys.long()
    ix_fixed = (a2 + a1 * yi + a0 * xi) >> 16
    iy_fixed = (a5 + a4 * yi + a3 * xi) >> 16
    scale_path = ((m[:, 1] == 0) & (m[:, 3] == 0)).view(b, 1, 1)
    ix = torch.where(scale_path, ix_scale, ix_fixed)
    iy = torch.where(scale_path, iy_scale, iy_fixed)
    valid = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    flat = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    out = images.reshape(b, c, h * w).gather(2, flat).view(b, c, h, w)
    return torch.where(valid.unsqueeze(1), out, torch.zeros_like(out))


def pil_rotate_matrix(angle: Tensor, width: int, height: int) -> Tensor:
    """The affine matrix of PIL's ``Image.rotate(angle)`` (degrees, counter-clockwise, about the centre)."""
    theta = -torch.deg2rad(torch.remainder(angle.to(torch.float64), 360.0))
    cos, sin = torch.cos(theta), torch.sin(theta)
    cx, cy = width / 2.0, height / 2.0
    a, b, d, e = cos, sin, -sin, cos
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return torch.stack([a, b, c, d, e, f], dim=1)


def _blend(degenerate: Tensor, images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``Image.blend(degenerate, image, f)`` on the 0-255 grid: ``deg + f (img - deg)``, clipped
    and truncated (``ImageEnhance``)."""
    f = factor.view(-1, 1, 1, 1).to(images.dtype)
    return torch.floor((degenerate + f * (images - degenerate)).clamp(0.0, 255.0))


def _luma_u8(images: Tensor) -> Tensor:
    """PIL's ``convert("L")`` of 0-255 RGB: ``(R 19595 + G 38470 + B 7471 + 32768) >> 16``; 1 channel as is."""
    if images.shape[1] == 1:
        return images
    r, g, bl = images.unbind(1)
    return torch.floor((r * 19595 + g * 38470 + bl * 7471 + 32768) / 65536).unsqueeze(1)


def _auto_contrast(q: Tensor) -> Tensor:
    """``ImageOps.autocontrast`` (cutoff 0) per image and channel on the 0-255 grid."""
    lo = q.amin(dim=(2, 3), keepdim=True).double()
    hi = q.amax(dim=(2, 3), keepdim=True).double()
    # a tensor-by-tensor division: ``255.0 / t`` would round differently from PIL's Python float
    scale = torch.full_like(hi, 255.0) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    out = torch.floor(q.double() * scale + (-lo * scale)).clamp(0, 255).to(q.dtype)
    return torch.where(hi > lo, out, q)


def _equalize(q: Tensor) -> Tensor:
    """``ImageOps.equalize`` per image and channel on the 0-255 grid (histogram look-up table)."""
    b, c, h, w = q.shape
    flat = q.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=q.device).scatter_add_(1, flat, torch.ones_like(flat))
    last = hist.gather(1, flat.amax(dim=1, keepdim=True))
    step = (h * w - last) // 255
    cum = torch.cumsum(hist, dim=1) - hist  # counts below each value
    lut = ((step // 2 + cum) // step.clamp_min(1)).clamp(0, 255)
    out = lut.gather(1, flat).to(q.dtype).view(b, c, h, w)
    return torch.where((step > 0).view(b, c, 1, 1), out, q)


def _smooth(q: Tensor) -> Tensor:
    """PIL's ``ImageFilter.SMOOTH`` (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, /13, rounded), borders kept."""
    c = q.shape[1]
    kernel = torch.ones(3, 3, dtype=q.dtype, device=q.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    inner = torch.round(F.conv2d(q, kernel, groups=c).clamp(0, 255))
    out = q.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _cutout(q: Tensor, value: Tensor, centre: Tensor) -> Tensor:
    """Official ``Cutout``/``CutoutAbs``: a square of side ``v = value * width`` centred at
    ``centre * (width, height)``, its corner ``int(max(0, centre - v / 2))``, clipped, filled grey;
    PIL's rectangle includes its last row and column (``int`` of the far corner). ``value <= 0``: none."""
    b, c, h, w = q.shape
    side = value.to(torch.float64) * w
    x0 = torch.clamp(centre[:, 0].double() * w - side / 2, min=0).floor()
    y0 = torch.clamp(centre[:, 1].double() * h - side / 2, min=0).floor()
    x1 = torch.minimum(x0 + side, torch.full_like(x0, float(w))).floor()
    y1 = torch.minimum(y0 + side, torch.full_like(y0, float(h))).floor()
    xs = torch.arange(w, device=q.device, dtype=torch.float64).view(1, 1, w)
    ys = torch.arange(h, device=q.device, dtype=torch.float64).view(1, h, 1)
    box = (
        (xs >= x0.view(-1, 1, 1))
        & (xs <= x1.view(-1, 1, 1))
        & (ys >= y0.view(-1, 1, 1))
        & (ys <= y1.view(-1, 1, 1))
        & (value > 0).view(-1, 1, 1)
    )
    colours = _CUTOUT_FILL if c == 3 else ((125 * 19595 + 123 * 38470 + 114 * 7471 + 32768) // 65536,)
    fill = torch.cat([torch.full((1, 1, 1, 1), float(v), dtype=q.dtype, device=q.device) for v in colours], dim=1)
    return torch.where(box.unsqueeze(1), fill.expand_as(q), q)


@dataclass(frozen=True)
class RandAugmentParams:
    """One op slot of :func:`rand_augment` for a batch (leading dimension B): ``op`` (index into
    :data:`RANDAUG_OPS`), ``apply`` (bool), ``value`` (the op's value from the magnitude), ``sign``
    (+-1, for shear / translate / rotate) and ``centre`` (B x 2 in [0, 1), Cutout's centre)."""

    op: Tensor
    apply: Tensor
    value: Tensor
    sign: Tensor
    centre: Tensor


def sample_rand_augment_params(magnitude: Tensor, probability: Tensor, generator: torch.Generator) -> RandAugmentParams:
    """Draw one op slot for each image: the op uniformly among the 15 (``random.choices``), whether
    it fires (``U < p``), its sign (``random.random() > 0.5`` negates) and Cutout's centre. Every
    draw is made whatever the outcome, so the stream does not depend on the data."""
    b, device = magnitude.shape[0], magnitude.device
    op = torch.randint(len(RANDAUG_OPS), (b,), generator=generator, device=device)
    u = torch.rand(b, 4, generator=generator, device=device)
    value = torch.zeros_like(magnitude)
    for i, (_, lo, hi) in enumerate(RANDAUG_OPS):  # Python-scalar bounds: no host-to-device copy
        value = torch.where(op == i, magnitude / RANDAUG_MAX_MAGNITUDE * (hi - lo) + lo, value)
    sign = torch.where(u[:, 1] > 0.5, -1.0, 1.0).to(magnitude.dtype)
    return RandAugmentParams(op=op, apply=u[:, 0] < probability, value=value, sign=sign, centre=u[:, 2:])


def apply_rand_augment(images: Tensor, params: RandAugmentParams) -> Tensor:
    """Apply one drawn op slot: image ``b`` gets op ``params.op[b]`` if ``params.apply[b]``, else stays
    as it is. Float images in [0, 1]; an image an op touched comes back on the uint8 grid."""
    b, c, h, w = images.shape
    q = _to_uint8_grid(images)
    op, v = params.op, params.value.to(torch.float64)
    sv = v * params.sign.to(torch.float64)
    zero, one = torch.zeros_like(sv), torch.ones_like(sv)
    # the five geometric ops are one affine map each (identity for the others), one gather
    matrix = torch.stack([one, zero, zero, zero, one, zero], dim=1)
    shear_x = torch.stack([one, sv, zero, zero, one, zero], dim=1)
    shear_y = torch.stack([one, zero, zero, sv, one, zero], dim=1)
    trans_x = torch.stack([one, zero, sv * w, zero, one, zero], dim=1)
    trans_y = torch.stack([one, zero, zero, zero, one, sv * h], dim=1)
    rotate = pil_rotate_matrix(sv, w, h)
    for name, mat in (
        ("shear_x", shear_x),
        ("shear_y", shear_y),
        ("translate_x", trans_x),
        ("translate_y", trans_y),
        ("rotate", rotate),
    ):
        matrix = torch.where((op == _OP[name]).view(-1, 1), mat, matrix)
    geometric = op <= _OP["rotate"]
    out = torch.where(geometric.view(-1, 1, 1, 1), pil_affine(q, matrix), q)
    pointwise = {
        "auto_contrast": lambda: _auto_contrast(q),
        "invert": lambda: 255.0 - q,
        "equalize": lambda: _equalize(q),
        "solarize": lambda: torch.where(q < v.view(-1, 1, 1, 1).to(q.dtype), q, 255.0 - q),
        "posterize": lambda: torch.floor(q / _bits_step(v)) * _bits_step(v),
        "contrast": lambda: _blend(torch.floor(_luma_u8(q).mean(dim=(1, 2, 3), keepdim=True) + 0.5).expand_as(q), q, v),
        "color": lambda: _blend(_luma_u8(q).expand_as(q), q, v) if c == 3 else q,
        "brightness": lambda: _blend(torch.zeros_like(q), q, v),
        "sharpness": lambda: _blend(_smooth(q), q, v),
        "cutout": lambda: _cutout(q, v, params.centre),
    }
    for name, make in pointwise.items():
        chosen = (op == _OP[name]).view(-1, 1, 1, 1)
        out = torch.where(chosen, make(), out)
    return torch.where(params.apply.view(-1, 1, 1, 1), out / 255.0, images)


def _bits_step(value: Tensor) -> Tensor:
    """Posterize keeps ``int(v)`` bits (official ``max(1, int(v))``): the quantisation step ``2^(8 - bits)``."""
    bits = torch.clamp(torch.floor(value), min=1.0, max=8.0)
    return torch.pow(2.0, 8.0 - bits).view(-1, 1, 1, 1).float()


def rand_augment(
    images: Tensor, num_ops: int, magnitude: Tensor, probability: Tensor, generator: torch.Generator
) -> Tensor:
    """BCL's ``RandAugment_prob(n=num_ops, m, p)`` with a magnitude and a probability per image
    (``B``, m in [0, 30], p in [0, 1]): ``num_ops`` slots, each drawn by
    :func:`sample_rand_augment_params` and applied by :func:`apply_rand_augment`. With ``p = 0`` the
    images come back unchanged (BCL's first epoch)."""
    _check_generator(images, generator)
    if num_ops < 0:
        raise ValueError(f"num_ops={num_ops} must be >= 0 (BCL-I: 1, BCL-D: 2)")
    b = images.shape[0]
    if magnitude.shape != (b,) or probability.shape != (b,):
        raise ValueError(
            f"magnitude and probability need one value per image ({b}), got shapes "
            f"{tuple(magnitude.shape)} and {tuple(probability.shape)}"
        )
    x = images
    m = magnitude.to(images.device, torch.float32)
    p = probability.to(images.device, torch.float32)
    for _ in range(num_ops):
        x = apply_rand_augment(x, sample_rand_augment_params(m, p, generator))
    return x
