"""Map-style datasets over image files, decoded with PIL in DataLoader workers.

* Training items are uint8 ``C×L×L`` at a fixed ``load_size`` (shorter side resized to ``L``, then a
  center crop): every item of a batch has one size, so the batch can be collated, moved to the
  device and augmented there batch-wise (``on_after_batch_transfer`` of the base).
* Evaluation items follow the standard ImageNet test protocol: shorter side resized to
  ``image_size * 8 // 7`` (256 for 224), center crop ``image_size``, then the base's deterministic
  eval transform (normalisation).

Every item is ``(image, target, index)`` (the batch contract). A missing file raises
``FileNotFoundError`` naming the image and where it was listed; a corrupt or truncated file
raises ``OSError`` naming the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def eval_resize_size(image_size: int) -> int:
    """Shorter side before the eval center crop: ``image_size * 8 // 7`` (256 for 224, the
    ResNet test protocol of He et al. 2016, also used by the linear probes of MoCo / SimCLR)."""
    return image_size * 8 // 7


def load_square(path: str | Path, size: int, crop: int | None = None, origin: str = "") -> torch.Tensor:
    """Decode an image as RGB, resize its shorter side to ``size`` and center-crop it to ``crop``
    (default ``size``): a uint8 tensor ``3×crop×crop``.

    Raises:
        FileNotFoundError: the file is missing (``origin``, e.g. ``list.txt:17``, says where it was listed).
        OSError: the file cannot be decoded (corrupt, truncated or not an image).
    """
    crop = size if crop is None else crop
    where = f" (listed at {origin})" if origin else ""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size (fast)
            img = img.convert("RGB")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image {path} not found{where}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise OSError(f"cannot decode image {path}{where}: {err}") from err
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
            raise FileNotFoundError(f"image {self.paths[i]} not found{where}; {len(missing)} of "
                                    f"{len(self.paths)} images are missing")


def scan_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted, by extension (case-insensitive)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
