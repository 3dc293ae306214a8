"""Pre-training throughput: the suite's path against a conventional torchvision pipeline.

Both paths train the same model with the same optimiser, in the same process, on the same device:

* suite: uint8 CIFAR-shaped images resident on the device, two views made by the batched
  per-sample augmentation (``datamodules.view_transforms.MultiViewTransform``) on the device, optional
  channels_last / bf16 autocast / torch.compile, no host synchronisation in the step;
* conventional: PIL images, torchvision per-image transforms in DataLoader workers (the
  solo-learn / lightly pipeline), pinned memory, host-to-device copy of float views.

Also timed: batched vs per-image augmentation alone (per image, CPU), kNN (bank x queries x dim)
and k-means (N x D -> K, 20 iterations) per backend. Results go to ``results/throughput/`` as JSON.

    python benchmarks/throughput.py --device cuda --backbone resnet18 --batch-size 512 --precision bf16
    python benchmarks/throughput.py --device cpu --steps 3 --batch-size 128   # what CI machines can do
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from datamodules.file_datasets import ImageFiles
from datamodules.view_transforms import MultiViewTransform, default_small_size, simclr_spec
from lightning_ssl.cluster import available_backends, kmeans
from lightning_ssl.eval.knn import knn_predict
from lightning_ssl.io import atomic_write_json
from lightning_ssl.methods import MoCoV2, SimCLR, SimSiam, SwAV

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
# dense bf16 tensor-core peak (NVIDIA datasheets); MFU is reported only for known devices
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A6000": 155e12, "L40": 181e12}
METHODS = {"simclr": SimCLR, "mocov2": MoCoV2, "simsiam": SimSiam, "swav": SwAV}
# SwAV small crops of the conventional pipeline: area 0.05-0.14 (Caron et al. 2020 §3.2, official code)
SWAV_SMALL_SCALE = (0.05, 0.14)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class PILPairs(Dataset):
    """The conventional pipeline: PIL images, two torchvision views per item (plus ``num_small``
    SwAV small crops of side ``small_size``), in workers."""

    def __init__(self, images: np.ndarray, size: int, num_small: int = 0, small_size: int | None = None) -> None:
        self.images = images
        self.num_small = num_small

        def views(side: int, scale: tuple[float, float]) -> Callable:
            return T.Compose(
                [
                    T.RandomResizedCrop(side, scale=scale),
                    T.RandomHorizontalFlip(),
                    T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
                    T.RandomGrayscale(0.2),
                    T.ToTensor(),
                    T.Normalize(CIFAR_MEAN, CIFAR_STD),
                ]
            )

        self.transform = views(size, (0.08, 1.0))
        self.small_transform = views(small_size or default_small_size(size), SWAV_SMALL_SCALE)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):  # noqa: ANN204
        img = Image.fromarray(self.images[i])
        small = [self.small_transform(img) for _ in range(self.num_small)]
        return [self.transform(img), self.transform(img), *small], -1, i


def build_model(
    method: str,
    backbone: str,
    size: int,
    channels_last: bool,
    compile_: bool,
    device: torch.device,  # noqa: ANN201
    compile_backend: str = "inductor",
    **method_options: object,
):
    model = METHODS[method](backbone=backbone, image_size=size, lr=0.1, channels_last=channels_last, **method_options)
    model = model.to(device)
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    if compile_:
        model.__dict__["_compiled_backbone"] = torch.compile(model.backbone, backend=compile_backend)
    return model


def time_steps(step: Callable[[int], None], steps: int, warmup: int, device: torch.device) -> float:
    for i in range(warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    sync(device)
    return (time.perf_counter() - start) / steps


def train_step_fn(model, opt, autocast_dtype, device):  # noqa: ANN001, ANN201
    def run(views: list[torch.Tensor]) -> None:
        batch = (
            views,
            torch.full((views[0].shape[0],), -1, device=device),
            torch.arange(views[0].shape[0], device=device),
        )
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model.compute_losses(batch).losses.mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.after_optimizer_step()  # EMA encoders and queues (MoCo v2) are part of the step

    return run


def step_flops(model, views: list[torch.Tensor], device: torch.device) -> float:  # noqa: ANN001
    batch = (views, torch.full((views[0].shape[0],), -1, device=device), torch.arange(views[0].shape[0], device=device))
    # counted on the eager backbone: the same FLOPs, and no recompilation under the counting mode
    compiled = model.__dict__.pop("_compiled_backbone", None)
    try:
        with FlopCounterMode(display=False) as counter:
            model.compute_losses(batch).losses.mean().backward()
    finally:
        if compiled is not None:
            model.__dict__["_compiled_backbone"] = compiled
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_method(args: argparse.Namespace, method: str, images: np.ndarray, device: torch.device) -> dict:
    size, bs = args.image_size, args.batch_size
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    num_small = getattr(args, "num_small", 0) if method == "swav" else 0
    small_size = getattr(args, "small_size", None)
    out: dict = {"method": method, "compile": args.compile, "num_small_views": num_small}
    # --- suite path
    torch.manual_seed(0)
    options = {"num_small_views": num_small} if method == "swav" else {}
    model = build_model(
        method,
        args.backbone,
        size,
        args.channels_last,
        args.compile,
        device,
        getattr(args, "compile_backend", "inductor"),
        **options,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    resident = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    transform = MultiViewTransform(
        size,
        CIFAR_MEAN,
        CIFAR_STD,
        recipe="simclr",
        num_large_views=2,
        num_small_views=num_small,
        small_size=small_size,
    )
    run = train_step_fn(model, opt, dtype, device)
    gen = torch.Generator(device=device).manual_seed(0)

    def suite_step(i: int) -> None:
        idx = torch.randint(0, resident.shape[0], (bs,), device=device, generator=gen)
        run(transform(resident[idx], seed=i))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time_steps(suite_step, args.steps, args.warmup, device)
    flops = step_flops(model, transform(resident[:bs], seed=0), device)
    peak = device_peak_flops(device)
    out["suite"] = {
        "s_per_step": t,
        "images_per_s": bs / t,
        "peak_memory_mb": peak_memory_mb(device),
        "flops_per_step": flops,
        "mfu": (flops / t / peak) if peak else None,
    }
    # --- conventional path
    loader = DataLoader(
        PILPairs(images, size, num_small, transform.small_size),
        batch_size=bs,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    it = iter(loader)

    def conventional_step(i: int) -> None:
        nonlocal it
        try:
            views, _, _ = next(it)
        except StopIteration:
            it = iter(loader)
            views, _, _ = next(it)
        run([v.to(device, non_blocking=True) for v in views])

    t_conv = time_steps(conventional_step, args.steps, args.warmup, device)
    out["conventional"] = {"s_per_step": t_conv, "images_per_s": bs / t_conv, "workers": args.workers}
    out["speedup"] = t_conv / t
    return out


def bench_augmentation(images: np.ndarray, size: int, n: int = 512) -> dict:
    """Per-image cost of the batched augmentation vs torchvision per-image transforms (CPU)."""
    batch = torch.from_numpy(images[:n]).permute(0, 3, 1, 2).contiguous()
    transform = MultiViewTransform(size, CIFAR_MEAN, CIFAR_STD, recipe="simclr", num_large_views=1)
    transform(batch, seed=0)
    start = time.perf_counter()
    for s in range(3):
        transform(batch, seed=s)
    batched = (time.perf_counter() - start) / (3 * n)
    ds = PILPairs(images[:n], size)
    start = time.perf_counter()
    for i in range(n):
        ds.transform(Image.fromarray(images[i]))
    per_image = (time.perf_counter() - start) / n
    assert simclr_spec(size).size == size
    return {
        "batched_us_per_image": batched * 1e6,
        "torchvision_us_per_image": per_image * 1e6,
        "speedup": per_image / batched,
        "threads": torch.get_num_threads(),
    }


def bench_folder_decode(n: int, side: int, load_size: int, workers: int) -> dict:
    """Decode cost of folder datasets: JPEGs of ``side`` px decoded and resized to ``load_size`` by
    ``datamodules.file_datasets.ImageFiles``, per image in the main process and as images/s through
    a DataLoader with ``workers`` workers (pinned memory, persistent workers)."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n):
            path = os.path.join(tmp, f"{i}.jpg")
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, quality=90)
            paths.append(path)
        ds = ImageFiles(paths, np.zeros(n, dtype=np.int64), load_size)
        start = time.perf_counter()
        for i in range(min(n, 64)):
            ds[i]
        per_image = (time.perf_counter() - start) / min(n, 64)
        loader = DataLoader(
            ds, batch_size=64, num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0
        )
        start = time.perf_counter()
        count = sum(batch[0].shape[0] for batch in loader)
        loader_rate = count / (time.perf_counter() - start)
    return {
        "images": n,
        "jpeg_side": side,
        "load_size": load_size,
        "workers": workers,
        "decode_ms_per_image": per_image * 1e3,
        "loader_images_per_s": loader_rate,
    }


def bench_knn(device: torch.device, bank: int, queries: int, dim: int) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    b = torch.randn(bank, dim, generator=g).to(device)
    q = torch.randn(queries, dim, generator=g).to(device)
    labels = torch.randint(0, 10, (bank,), generator=g).to(device)
    knn_predict(q[:64], b, labels, 10)
    sync(device)
    start = time.perf_counter()
    knn_predict(q, b, labels, 10, k=200, temperature=0.1)
    sync(device)
    return {"bank": bank, "queries": queries, "dim": dim, "seconds": time.perf_counter() - start}


def bench_kmeans(device: torch.device, n: int, dim: int, k: int, backends: list[str] | None = None) -> dict:
    """Seconds of ``kmeans`` (20 iterations) per backend, each after a 1-iteration warm-up on 4k rows."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0)).to(device)
    out = {"n": n, "dim": dim, "k": k, "iterations": 20, "seconds": {}}
    for backend in backends or available_backends():
        kmeans(x[: min(n, 4 * k)], k, iterations=1, backend=backend)
        sync(device)
        start = time.perf_counter()
        kmeans(x, k, iterations=20, backend=backend)
        sync(device)
        out["seconds"][backend] = time.perf_counter() - start
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--methods", nargs="+", default=["simclr"], choices=sorted(METHODS))
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager/aot_eager: no codegen)")
    p.add_argument("--num-small", type=int, default=6, help="SwAV small crops (Caron et al. 2020: 6)")
    p.add_argument("--small-size", type=int, default=None, help="SwAV small-crop side (default: default_small_size)")
    p.add_argument("--knn", nargs=3, type=int, default=[50_000, 10_000, 512], metavar=("BANK", "QUERIES", "DIM"))
    p.add_argument("--kmeans", nargs=3, type=int, default=[50_000, 4096, 10], metavar=("N", "DIM", "K"))
    p.add_argument("--decode", nargs=3, type=int, default=[512, 500, 256], metavar=("N", "JPEG_SIDE", "LOAD_SIZE"))
    p.add_argument("--out", default=None, help="JSON path (default results/throughput/<device>.json)")
    args = p.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10_000, args.image_size, args.image_size, 3), dtype=np.uint8)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {
        "device": name,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "args": vars(args),
        "augmentation_cpu": bench_augmentation(images, args.image_size),
        "methods": [bench_method(args, m, images, device) for m in args.methods],
        "knn": bench_knn(device, *args.knn),
        "kmeans": bench_kmeans(device, *args.kmeans),
        "folder_decode": bench_folder_decode(*args.decode, workers=args.workers),
    }
    out = Path(args.out or f"results/throughput/{device.type}-{args.backbone}-b{args.batch_size}.json")
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
