"""Map-style datasets over image files, decoded with PIL in DataLoader workers.

* Training items are uint8 ``C×L×L`` at a fixed ``load_size`` (shorter side resized to ``L``, then a
  center crop): every item of a batch has one size, so the batch can be collated, moved to the
  device and augmented there batch-wise (``on_after_batch_transfer`` of the base).
* Evaluation items follow the standard ImageNet test protocol: shorter side resized to
  ``image_size * 8 // 7`` (256 for 224), center crop ``image_size``, then the base's deterministic
  eval transform (normalisation).

Every item is ``(image, target, index)`` (the batch contract). A missing file raises
:class:`~datamodules.errors.DataNotFoundError` (a ``FileNotFoundError``) naming the image and where
it was listed; a corrupt, truncated, empty or fake image file raises :class:`BadImageError` (an
``OSError``) naming the image. :func:`check_images` decodes a whole list up front (the folder
datamodules do so when they are built), so such a file stops a run before training, not when it is
first sampled, or is left out with a warning naming it.

Every PIL mode becomes 8-bit RGB by :func:`to_rgb`: 16-bit grey (``I;16``, e.g. a 16-bit PNG) is
scaled by 255/65535 (PIL's own ``convert("RGB")`` clips it, so most pixels turn white); ``I`` and
``F`` by their value range (see :func:`to_rgb`), refused when it is not 8- or 16-bit or [0, 1];
transparent modes (``RGBA``, ``LA``, ``P`` with transparency) are composited over white; ``CMYK``,
``L``, ``1``, ``P`` convert as PIL does. Hidden files and folders (``.ipynb_checkpoints/``,
``._x.jpg``) are never images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from datamodules.errors import DataInputError, DataNotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def eval_resize_size(image_size: int) -> int:
    """Shorter side before the eval center crop: ``image_size * 8 // 7`` (256 for 224, the
    ResNet test protocol of He et al. 2016, also used by the linear probes of MoCo / SimCLR)."""
    return image_size * 8 // 7


WHITE = (255, 255, 255)


class ImageModeError(DataInputError):
    """An image whose pixel values have no unambiguous 8-bit reading (see :func:`to_rgb`)."""


class BadImageError(DataInputError, OSError):
    """An image file that does not decode: corrupt, truncated, empty, or not an image at all."""


BAD_IMAGES = ("error", "skip")


def _scale_to_uint8(values: np.ndarray, mode: str, name: str) -> np.ndarray:
    """8-bit grey values of a 16-bit, 32-bit integer or float image (see :func:`to_rgb`)."""
    if mode.startswith("I;16"):
        return np.round(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return np.round(values.astype(np.float64) * 255.0).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return np.round(values).astype(np.uint8)
    if mode == "I" and lo >= 0 and hi <= 65535:
        return np.round(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    raise ImageModeError(
        f"image {name} has mode {mode} with values in [{lo:g}, {hi:g}], not 8-bit, 16-bit or "
        f"[0, 1]: convert it to an 8-bit image (e.g. PNG or JPEG) first"
    )


def to_rgb(img: Image.Image, name: str = "") -> Image.Image:
    """``img`` as 8-bit RGB, with the value range of its mode respected.

    * ``I;16*`` (16-bit grey): ``v * 255 / 65535``.
    * ``I`` (32-bit integer): 8-bit values when all lie in ``0..255``, else 16-bit (``0..65535``,
      scaled as ``I;16``); wider ranges are refused.
    * ``F`` (float): ``[0, 1]`` scaled by 255, ``[0, 255]`` kept; other ranges are refused.
    * ``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour: composited over white.
    * everything else (``RGB``, ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ...): PIL's conversion.

    Raises:
        ImageModeError: an ``I`` or ``F`` image whose range is none of the above (``name`` is named).
    """
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _scale_to_uint8(np.asarray(img), mode, name)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_square(path: str | Path, size: int, crop: int | None = None, origin: str = "") -> torch.Tensor:
    """Decode an image as RGB, resize its shorter side to ``size`` and center-crop it to ``crop``
    (default ``size``): a uint8 tensor ``3×crop×crop``.

    Raises:
        DataNotFoundError: the file is missing (``origin``, e.g. ``list.txt:17``, says where it was
            listed); a ``FileNotFoundError``.
        BadImageError: the file cannot be decoded (corrupt, truncated, empty or not an image); an
            ``OSError``.
    """
    crop = size if crop is None else crop
    where = f" (listed at {origin})" if origin else ""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size (fast)
            img = to_rgb(img, f"{path}{where}")
    except FileNotFoundError as err:
        raise DataNotFoundError(f"image {path} not found{where}: restore it or fix the path") from err
    except ImageModeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        empty = " (an empty file)" if Path(path).is_file() and Path(path).stat().st_size == 0 else ""
        raise BadImageError(f"cannot decode image {path}{where}{empty}: {err}; replace or delete the file") from err
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """``(image, target, index)`` over image files.

    Args:
        paths: image paths (absolute, or relative to the working directory).
        targets: int64 class ids (``-1`` where unknown).
        size: ``load_size`` for training items; ``image_size`` for evaluation items.
        eval_transform: when given, items are evaluation items: shorter side to ``size * 8 // 7``,
            center crop ``size``, then this transform (uint8 ``1×C×H×W`` -> float).
        origins: for error messages, where each path came from (e.g. ``list.txt:17``).
    """

    def __init__(
        self,
        paths: Sequence[str],
        targets: np.ndarray | Sequence[int],
        size: int,
        eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        origins: Sequence[str] | None = None,
    ) -> None:
        targets = np.asarray(targets, dtype=np.int64)
        if len(paths) != targets.size:
            raise ValueError(f"{len(paths)} paths but {targets.size} targets")
        if origins is not None and len(origins) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(origins)} origins")
        if size < 1:
            raise ValueError(f"size={size} must be >= 1")
        self.paths = list(paths)
        self.targets = torch.from_numpy(targets)
        self.size = size
        self.eval_transform = eval_transform
        self.origins = origins  # kept as given (a lazy sequence for long lists)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        origin = self.origins[i] if self.origins is not None else ""
        if self.eval_transform is None:
            image = load_square(self.paths[i], self.size, origin=origin)
        else:
            image = load_square(self.paths[i], eval_resize_size(self.size), self.size, origin=origin)
            image = self.eval_transform(image.unsqueeze(0)).squeeze(0)
        return image, self.targets[i], i

    def verify(self) -> None:
        """Check that every file exists (not that it decodes); raise on the first missing one."""
        missing = [i for i, p in enumerate(self.paths) if not Path(p).is_file()]
        if missing:
            i = missing[0]
            where = f" (listed at {self.origins[i]})" if self.origins is not None else ""
            raise DataNotFoundError(
                f"image {self.paths[i]} not found{where}; {len(missing)} of "
                f"{len(self.paths)} images are missing: restore them or fix root"
            )


def check_images(paths: Sequence[str], size: int, bad_images: str = "error", where: str = "") -> list[int]:
    """Decode every image of ``paths`` (at ``size``, with several threads: PIL decodes outside the
    GIL) and return the positions of those that decode.

    Args:
        paths: image files.
        size: side they are decoded at (the training ``load_size``: what the loader will do).
        bad_images: ``error``: a file that does not decode (or is missing) stops here with one
            line naming it, how many there are and the fix; ``skip``: such files are left out with
            a warning that names them.
        where: the folder or list the paths come from, for the messages.

    Raises:
        DataInputError: with ``bad_images="error"``, when a file does not decode.
    """
    if bad_images not in BAD_IMAGES:
        raise ValueError(f"unknown bad_images {bad_images!r}; valid: {', '.join(BAD_IMAGES)}")

    def problem(path: str) -> str | None:
        try:
            load_square(path, size)
        except DataInputError as err:
            return str(err)
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        problems = list(pool.map(problem, paths))
    bad = [(path, p) for path, p in zip(paths, problems) if p is not None]
    source = f"{where}: " if where else ""
    if bad and bad_images == "error":
        more = f" ({len(bad)} of {len(paths)} images are bad; first: {bad[0][0]})" if len(bad) > 1 else ""
        raise BadImageError(
            f"{source}{bad[0][1]}{more}; or pass --data.bad_images skip to leave such files out with a warning"
        )
    if bad:
        names = ", ".join(path for path, _ in bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
        warnings.warn(
            f"{source}skipping {len(bad)} of {len(paths)} image file(s) that do not decode (bad_images=skip): {names}",
            stacklevel=2,
        )
    return [i for i, p in enumerate(problems) if p is None]


def is_hidden(path: Path, below: Path) -> bool:
    """A file or folder whose name, or the name of a folder between it and ``below``, starts with a dot."""
    return any(part.startswith(".") for part in path.relative_to(below).parts)


def scan_images(folder: Path, hidden: list[Path] | None = None) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted, by extension (case-insensitive).
    Hidden ones (``.ipynb_checkpoints/x-checkpoint.png``, macOS ``._x.jpg``) are left out and,
    when ``hidden`` is given, appended to it."""
    found = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        if is_hidden(p, folder):
            if hidden is not None:
                hidden.append(p)
            continue
        found.append(p)
    return found
