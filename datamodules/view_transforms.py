"""View recipes of the SSL papers and the multi-view / eval transforms built on them.

A recipe is a function of the image size returning the :class:`~datamodules.augment.ViewSpec`
(s) of its views. :class:`MultiViewTransform` turns a batch of images into the list of views of
the batch contract (large crops, then small crops, then optionally the clean view);
:class:`EvalTransform` is the deterministic transform of evaluation batches. Both run batch-wise
on whatever device the images are on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.augment import RANDAUG_MAX_MAGNITUDE, ViewSpec, augment, rand_augment, to_float

__all__ = [
    "SMALL_IMAGE_MAX",
    "SWAV_SMALL_SCALE",
    "VIEW_RECIPES",
    "simclr_spec",
    "mocov2_spec",
    "byol_specs",
    "swav_large_spec",
    "swav_small_spec",
    "default_small_size",
    "mttv_spec",
    "lt_simclr_spec",
    "recipe_specs",
    "MultiViewTransform",
    "EvalTransform",
]

SMALL_IMAGE_MAX = 64
"""Images up to this side get no blur by default: SimCLR leaves blur out on CIFAR-10 "due to its
small resolution" (Chen et al. 2020, App. B.9). The cut-off (64 px) is our choice."""

SWAV_SMALL_SCALE = (0.05, 0.14)
"""Area range of SwAV's small crops (Caron et al. 2020, §4 / App. A: 6×96 px at 0.05-0.14)."""

MIN_SMALL_SIZE = 8
"""The smallest default side of a small crop (our choice: a 16 px image would otherwise get 6 px crops)."""


def default_small_size(image_size: int) -> int:
    """The side of the small crops when none is given: SwAV's 96 px for 224 px images (Caron et al.
    2020, §4), scaled to ``image_size`` and rounded down, at least :data:`MIN_SMALL_SIZE` and at most
    ``image_size`` (the scaling and both bounds are our choice): 224 -> 96, 32 -> 13, 16 -> 8."""
    return min(image_size, max(MIN_SMALL_SIZE, image_size * 96 // 224))


def _blur_on(size: int, blur: bool | None) -> bool:
    return size > SMALL_IMAGE_MAX if blur is None else blur


def simclr_spec(size: int, strength: float = 1.0, blur: bool | None = None) -> ViewSpec:
    """SimCLR's view (Chen et al. 2020, App. A).

    Inception crop (area 0.08-1, ratio 3/4-4/3), flip 0.5, colour jitter with strength s
    (brightness, contrast, saturation 0.8·s, hue 0.2·s) applied with p = 0.8, grayscale p = 0.2,
    Gaussian blur p = 0.5 with sigma in [0.1, 2] and a kernel of 10% of the image. ``blur=None``
    turns blur off for images up to :data:`SMALL_IMAGE_MAX` px, SimCLR's CIFAR-10 setting
    (App. B.9, which also used s = 0.5 there; the default here stays s = 1).
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    return ViewSpec(
        size=size,
        scale=(0.08, 1.0),
        flip_p=0.5,
        jitter_p=0.8,
        brightness=0.8 * strength,
        contrast=0.8 * strength,
        saturation=0.8 * strength,
        hue=min(0.5, 0.2 * strength),
        grayscale_p=0.2,
        blur_p=0.5 if _blur_on(size, blur) else 0.0,
        blur_sigma=(0.1, 2.0),
        solarize_p=0.0,
    )


def mocov2_spec(size: int, blur: bool | None = None) -> ViewSpec:
    """MoCo v2's view (Chen, Fan, Girshick, He 2020, "Improved baselines", §3 and its code).

    Crop area 0.2-1, ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with p = 0.8, grayscale p = 0.2, blur
    p = 0.5 with sigma in [0.1, 2], flip 0.5. ``blur=None`` drops the blur up to
    :data:`SMALL_IMAGE_MAX` px, as the CIFAR MoCo v2 / SimSiam recipe of rwSAM does (docs/methods.md §9.5).
    """
    return ViewSpec(
        size=size,
        scale=(0.2, 1.0),
        flip_p=0.5,
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        grayscale_p=0.2,
        blur_p=0.5 if _blur_on(size, blur) else 0.0,
        blur_sigma=(0.1, 2.0),
        solarize_p=0.0,
    )


def byol_specs(size: int, blur: bool | None = None) -> tuple[ViewSpec, ViewSpec]:
    """BYOL's asymmetric pair (T, T') (Grill et al. 2020, Table 6; used by DnC/MoCLR, docs/methods.md §5).

    Both: crop area 0.08-1, ratio 3/4-4/3, flip 0.5, ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` with
    p = 0.8, grayscale p = 0.2, blur sigma in [0.1, 2] with a 23×23 kernel at 224 px (10%).
    T: blur p = 1.0, no solarisation. T': blur p = 0.1, solarisation p = 0.2. ``blur=None`` drops
    the blur up to :data:`SMALL_IMAGE_MAX` px (SimCLR's CIFAR setting; our choice for BYOL).
    """
    on = _blur_on(size, blur)
    t = ViewSpec(
        size=size,
        scale=(0.08, 1.0),
        flip_p=0.5,
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        grayscale_p=0.2,
        blur_p=1.0 if on else 0.0,
        blur_sigma=(0.1, 2.0),
        solarize_p=0.0,
    )
    t_prime = replace(t, blur_p=0.1 if on else 0.0, solarize_p=0.2)
    return t, t_prime


def swav_large_spec(size: int, blur: bool | None = None) -> ViewSpec:
    """SwAV's large crops (Caron et al. 2020, §4 / App. A; docs/methods.md §4.2).

    Area 0.14-1, SimCLR's colour distortion with s = 1 (jitter 0.8/0.8/0.8/0.2 with p = 0.8,
    grayscale 0.2), blur p = 0.5, flip 0.5.
    """
    return replace(simclr_spec(size, 1.0, blur), scale=(0.14, 1.0))


def swav_small_spec(size: int, base: ViewSpec | None = None, blur: bool | None = None) -> ViewSpec:
    """SwAV's small multi-crop view (Caron et al. 2020, §4): area :data:`SWAV_SMALL_SCALE`.

    The distortions are those of ``base`` (default: SwAV's large-crop ones), at side ``size``
    (96 px for 224 px images in the paper), with the blur kernel rescaled to the small side.
    Blur: ``None`` keeps the base's probability above :data:`SMALL_IMAGE_MAX` px and drops it
    below; ``False`` drops it; ``True`` keeps the base's, or SwAV's p = 0.5 if the base has none.
    """
    base = swav_large_spec(size, blur=blur) if base is None else base
    if blur is None:
        blur_p = base.blur_p if size > SMALL_IMAGE_MAX else 0.0
    else:
        blur_p = (base.blur_p or 0.5) if blur else 0.0
    return replace(base, size=size, scale=SWAV_SMALL_SCALE, blur_p=blur_p, blur_kernel=None)


def mttv_spec(size: int) -> ViewSpec:
    """MTTV's augmented view a(.) (official code, ``MTTVDataAugmentation.py``; docs/methods.md §8).

    ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with p = 0.8, grayscale 0.2, crop area 0.08-1, flip 0.5,
    blur p = 0.5 with sigma in [0.1, 2] and kernel int(0.1·size) made odd (3 at 32 px, 21 at
    224 px), kept on small images as the code does.
    """
    kernel = max(1, int(0.1 * size))
    kernel = kernel if kernel % 2 else kernel - 1
    return ViewSpec(
        size=size,
        scale=(0.08, 1.0),
        flip_p=0.5,
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        grayscale_p=0.2,
        blur_p=0.5,
        blur_sigma=(0.1, 2.0),
        blur_kernel=max(1, kernel),
        solarize_p=0.0,
    )


def small_gray_spec(size: int) -> ViewSpec:
    """Views for small grey-scale images (Fashion-MNIST, digits; our recipe, docs/methods.md §0.5).

    SimCLR's recipe is for 224 px RGB: at 16 px its smallest crop (8 % of the area) is 4.5 px wide,
    and saturation, hue and grey-scale conversion do nothing to a grey image. Here: crop area
    0.3-1 (ratio 3/4-4/3), flip 0.5, brightness and contrast jitter 0.4 with p = 0.8, no saturation,
    hue, grey-scale or blur. The default benchmark and the Fashion-MNIST robustness study use it
    (README, "Recipes for small images").
    """
    return ViewSpec(
        size=size,
        scale=(0.3, 1.0),
        flip_p=0.5,
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.0,
        hue=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
        blur_sigma=(0.1, 2.0),
        solarize_p=0.0,
    )


def lt_simclr_spec(size: int, blur: bool | None = None) -> ViewSpec:
    """The SimCLR views of the long-tailed SSL codes (SDCLR ``train_simCLR.py``, reused by BCL and TS;
    docs/methods.md §12.5): crop area 0.1-1 (0.08-1 above :data:`SMALL_IMAGE_MAX` px, their ImageNet
    setting), flip 0.5, ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with p = 0.8, grayscale 0.2, no blur on
    CIFAR and blur p = 0.5 with sigma in [0.1, 2] on ImageNet. Their crop resizes bicubically; the
    suite's batched crop is bilinear with anti-aliasing."""
    on = _blur_on(size, blur)
    return replace(
        mocov2_spec(size, blur=blur),
        scale=(0.08, 1.0) if size > SMALL_IMAGE_MAX else (0.1, 1.0),
        blur_p=0.5 if on else 0.0,
    )


VIEW_RECIPES: dict[str, Callable[[int], tuple[ViewSpec, ...]]] = {
    "sdclr": lambda size: (lt_simclr_spec(size),),
    "small_gray": lambda size: (small_gray_spec(size),),
    "simclr": lambda size: (simclr_spec(size),),
    "mocov2": lambda size: (mocov2_spec(size),),
    "byol": byol_specs,
    "swav": lambda size: (swav_large_spec(size),),
    "mttv": lambda size: (mttv_spec(size),),
}
"""Recipe name -> the large-view specs; large view k uses spec ``k % len(specs)``."""


def recipe_specs(recipe: str, size: int) -> tuple[ViewSpec, ...]:
    """The large-view specs of ``recipe`` at ``size``; unknown names raise ValueError."""
    if recipe not in VIEW_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(VIEW_RECIPES)}")
    return VIEW_RECIPES[recipe](size)


class _Normalize:
    """Expand 1-channel images to ``out_channels`` and normalise with mean/std (cached per device)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], out_channels: int) -> None:
        if out_channels not in (1, 3):
            raise ValueError(f"out_channels must be 1 or 3, got {out_channels}")
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, out_channels):
                raise ValueError(f"{name} must have 1 or out_channels={out_channels} values, got {len(values)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be > 0, got {std}")
        self.mean, self.std, self.out_channels = mean, std, out_channels
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def _stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Built once per device: a fresh host-to-device copy on every batch would sync the GPU.
        if device not in self._cache:
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            inv_std = (1.0 / torch.tensor(self.std, device=device)).view(1, -1, 1, 1)
            self._cache[device] = (mean, inv_std)
        return self._cache[device]

    def check_channels(self, images: Tensor) -> None:
        c = images.shape[1]
        if c not in (1, self.out_channels):
            raise ValueError(f"images have {c} channels; expected 1 or out_channels={self.out_channels}")

    def __call__(self, images: Tensor) -> Tensor:
        self.check_channels(images)
        if images.shape[1] != self.out_channels:
            images = images.expand(-1, self.out_channels, -1, -1)
        mean, inv_std = self._stats(images.device)
        return ((images - mean) * inv_std).contiguous()


def _check_size(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class EvalTransform:
    """Deterministic transform of evaluation batches: resize, normalise, expand channels.

    Images (uint8 0-255 or float 0-1, ``B×C×H×W``) are resized to ``image_size×image_size`` with
    bilinear interpolation and anti-aliasing (no-op at that size already; non-square images are
    squashed, as MTTV resizes ImageNet to 224×224), normalised with ``mean``/``std`` (1 value or
    one per output channel) and 1-channel images are repeated to ``out_channels``.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        out_channels: int = 3,
    ) -> None:
        self.image_size = _check_size(image_size, "image_size")
        self.normalize = _Normalize(mean, std, out_channels)

    def __call__(self, images: Tensor) -> Tensor:
        x = to_float(images)
        self.normalize.check_channels(x)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return self.normalize(x)

    def __repr__(self) -> str:
        n = self.normalize
        return f"EvalTransform(image_size={self.image_size}, mean={n.mean}, std={n.std}, out_channels={n.out_channels})"


class MultiViewTransform:
    """Batch -> list of views: large crops, then small crops, then (optionally) the clean view.

    Args:
        image_size: side of the large crops (and of the clean view).
        mean, std: normalisation statistics, 1 value or one per output channel.
        recipe: one of :data:`VIEW_RECIPES` (``simclr``, ``mocov2``, ``byol``, ``swav``, ``mttv``).
            For ``byol`` large view 0 uses T and view 1 uses T' (Grill et al. 2020, Table 6).
        num_large_views: number of large crops (2 in every two-view method).
        num_small_views: number of small crops (SwAV multi-crop: 6); they use the recipe's first
            large-view distortions at SwAV's area 0.05-0.14 (:func:`swav_small_spec`).
        small_size: side of the small crops; default :func:`default_small_size` (SwAV's 96 px
            for 224 px, scaled).
        clean_view: append the un-augmented normalised view resized to ``image_size``
            (MTTV's "normalized view" n(.), docs/methods.md §8.2).
        out_channels: 1-channel images are repeated to this many channels (1 or 3).

    ``__call__(images, seed)`` draws every view from one generator on the images' device seeded
    with ``seed``, in the order of the returned list, so the same images and seed give identical
    views on the same device (exact resume depends on this).

    Per-sample augmentation strength (BCL, docs/methods.md §13.4): after
    :meth:`set_sample_augmentation`, every large view of sample ``i`` (looked up by the batch's
    ``index``) is followed by BCL's RandAugment with ``num_ops`` ops at magnitude ``magnitude[i]``,
    each applied with probability ``probability[i]`` (the two views share ``m`` and ``p`` and draw
    their ops independently, as the official ``__getitem__``). Its draws come from a second
    generator seeded from ``seed``, so the views without it are exactly the views with ``p = 0``.
    A call without ``index`` (a diagnostic pass over some images) makes the recipe's plain views.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        recipe: str = "simclr",
        num_large_views: int = 2,
        num_small_views: int = 0,
        small_size: int | None = None,
        clean_view: bool = False,
        out_channels: int = 3,
    ) -> None:
        _check_size(image_size, "image_size")
        if isinstance(num_large_views, bool) or not isinstance(num_large_views, int) or num_large_views < 1:
            raise ValueError(f"num_large_views must be an int >= 1, got {num_large_views!r}")
        if isinstance(num_small_views, bool) or not isinstance(num_small_views, int) or num_small_views < 0:
            raise ValueError(f"num_small_views must be an int >= 0, got {num_small_views!r}")
        base = recipe_specs(recipe, image_size)
        self.recipe = recipe
        self.image_size = image_size
        self.large_specs: tuple[ViewSpec, ...] = tuple(base[k % len(base)] for k in range(num_large_views))
        self.num_small_views = num_small_views
        small_size = default_small_size(image_size) if small_size is None else small_size
        self.small_size = _check_size(small_size, "small_size")
        self.small_spec: ViewSpec | None = swav_small_spec(self.small_size, base=base[0]) if num_small_views else None
        self.clean_view = clean_view
        self.eval_transform = EvalTransform(image_size, mean, std, out_channels)
        self.randaug_ops = 0
        self._strength: tuple[Tensor, Tensor] | None = None  # per-sample magnitude, probability (CPU)
        self._strength_cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_strength_cache": {}}

    def set_sample_augmentation(self, num_ops: int, magnitude: Tensor | None, probability: Tensor | None) -> None:
        """Give sample ``i`` RandAugment ``magnitude[i]`` (in [0, 30]) and ``probability[i]`` (in [0, 1])
        with ``num_ops`` ops per view; ``None`` (or ``num_ops = 0``) turns it off. The tables cover the
        whole pre-training set (indexed by the batch's ``index``) and are copied once per device."""
        if magnitude is None or probability is None or num_ops == 0:
            self.randaug_ops, self._strength, self._strength_cache = 0, None, {}
            return
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops must be an int >= 0 (BCL-I: 1, BCL-D: 2), got {num_ops!r}")
        magnitude = torch.as_tensor(magnitude).detach().float().cpu()
        probability = torch.as_tensor(probability).detach().float().cpu()
        if magnitude.ndim != 1 or magnitude.shape != probability.shape:
            raise ValueError(
                f"magnitude and probability must be 1-D tables of one length (one value per "
                f"sample), got shapes {tuple(magnitude.shape)} and {tuple(probability.shape)}"
            )
        if magnitude.numel() and not (0 <= float(magnitude.min()) and float(magnitude.max()) <= RANDAUG_MAX_MAGNITUDE):
            raise ValueError(
                f"magnitudes must lie in [0, {RANDAUG_MAX_MAGNITUDE:g}], got [{float(magnitude.min()):.3g}, "
                f"{float(magnitude.max()):.3g}]"
            )
        if probability.numel() and not (0 <= float(probability.min()) and float(probability.max()) <= 1):
            raise ValueError(
                f"probabilities must lie in [0, 1], got [{float(probability.min()):.3g}, "
                f"{float(probability.max()):.3g}]"
            )
        self.randaug_ops, self._strength, self._strength_cache = num_ops, (magnitude, probability), {}

    def _sample_strength(self, index: Tensor) -> tuple[Tensor, Tensor]:
        assert self._strength is not None
        device = index.device
        if device not in self._strength_cache:  # one copy per device, not one per batch
            self._strength_cache[device] = tuple(t.to(device) for t in self._strength)  # type: ignore[assignment]
        magnitude, probability = self._strength_cache[device]
        return magnitude[index], probability[index]

    @property
    def total_views(self) -> int:
        """Length of the returned list."""
        return len(self.large_specs) + self.num_small_views + int(self.clean_view)

    def __call__(self, images: Tensor, seed: int, index: Tensor | None = None) -> list[Tensor]:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        x = to_float(images)
        normalize = self.eval_transform.normalize
        normalize.check_channels(x)
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)
        large = [augment(x, spec, generator) for spec in self.large_specs]
        if self._strength is not None and index is not None:
            magnitude, probability = self._sample_strength(index.to(x.device).long())
            strength_generator = torch.Generator(device=x.device)
            strength_generator.manual_seed((seed * 0x9E3779B1 + 0x7F4A7C15) % 2**63)
            large = [rand_augment(v, self.randaug_ops, magnitude, probability, strength_generator) for v in large]
        views = [normalize(v) for v in large]
        if self.small_spec is not None:
            views += [normalize(augment(x, self.small_spec, generator)) for _ in range(self.num_small_views)]
        if self.clean_view:
            views.append(self.eval_transform(x))
        return views

    def __repr__(self) -> str:
        n = self.eval_transform.normalize
        return (
            f"MultiViewTransform(image_size={self.image_size}, recipe={self.recipe!r}, "
            f"num_large_views={len(self.large_specs)}, num_small_views={self.num_small_views}, "
            f"small_size={self.small_size}, clean_view={self.clean_view}, "
            f"mean={n.mean}, std={n.std}, out_channels={n.out_channels})"
        )
