"""The four parts of ``benchmarks/gpu_check.py``; each takes its ``Context`` and returns its results.

Figures and their goals are the ones of issue 14 (docs/design.md §10): the suite's
device-resident pipeline at least 5x the conventional DataLoader one, MFU at least 30 %, kNN
50k x 10k x 512 under 0.5 s, k-means 50k x 4096 -> 100 under 2 s, and SimCLR features on
Fashion-MNIST-LT above the raw-pixel floors of the balanced probe (84.5 % linear, 78.9 % kNN).
Only the suite's own modules and ``benchmarks/throughput.py`` are used; faiss and wandb are never
needed (k-means runs the torch backend).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import logging
import os
import platform
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import throughput as tp  # benchmarks/throughput.py: this folder is the script's sys.path[0]
import torch

from datamodules.dataset_card import DatasetCard
from datamodules.fashion_mnist import FILES, FashionMNISTLT, find_idx_files
from datamodules.in_memory import InMemoryLTDataModule, Source
from lightning_ssl.cluster import available_backends
from lightning_ssl.eval.offline import evaluate_frozen
from lightning_ssl.methods import SimCLR

ROOT = Path(__file__).resolve().parents[1]
# Balanced-probe accuracy of raw pixels on Fashion-MNIST (28 px, the 60k training set, test set):
# what a learnt representation must beat (issue 14's floors).
FLOORS = {"linear": 0.845, "knn": 0.789}
# The CIFAR-LT SimCLR recipe of SDCLR / BCL (docs/protocols.md §3, benchmarks/configs/cifar/simclr.yaml):
# batch 512, SGD lr 0.5, wd 1e-4, T = 0.2, projector 512-128, 10 warm-up epochs (at most a tenth of the run).
SIMCLR_RECIPE = {
    "temperature": 0.2,
    "proj_hidden_dim": 512,
    "proj_output_dim": 128,
    "optimizer": "sgd",
    "lr": 0.5,
    "weight_decay": 1e-4,
}

logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*Seed set to.*")


def goal(name: str, value: float | None, op: str, target: float) -> dict[str, Any]:
    """One goal: ``value op target`` (``op`` is ``>=`` or ``<``); ``met`` is None without a value."""
    met = None if value is None else bool(value >= target if op == ">=" else value < target)
    return {"name": name, "value": value, "op": op, "target": target, "met": met}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def environment() -> dict[str, Any]:
    """The machine and the software the figures were measured with."""
    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else (platform.processor() or "cpu"),
        "peak_bf16_flops": tp.device_peak_flops(torch.device("cuda")) if cuda else None,
    }
    for module in ("torchvision", "pytorch_lightning", "timm"):
        env[module] = importlib.import_module(module).__version__
    env["faiss_importable"] = _importable("faiss")
    env["wandb_importable"] = _importable("wandb")
    env["kmeans_backends"] = available_backends()
    return env


def _device(ctx: Any) -> torch.device:
    device = torch.device(ctx.sizes.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available: the full check needs one CUDA GPU (use --smoke on a CPU)")
    return device


# -- 1. throughput ---------------------------------------------------------------------------------
def part_throughput(ctx: Any) -> dict[str, Any]:
    """``throughput.bench_method`` per sub-run; a sub-run starts only if the part's cap leaves it
    the time it needs, and its result is saved before the next one starts."""
    s, device = ctx.sizes, _device(ctx)
    images = np.random.default_rng(0).integers(0, 256, size=(s.images, s.image_size, s.image_size, 3), dtype=np.uint8)
    config = {
        "backbone": s.backbone,
        "image_size": s.image_size,
        "batch_size": s.batch_size,
        "precision": s.precision,
        "channels_last": True,
        "steps": s.steps,
        "warmup": s.warmup,
        "workers": s.workers,
        "compile_backend": s.compile_backend,
        "num_small": s.swav_small,
        "small_size": s.swav_small_size,
    }
    results: dict[str, Any] = {"config": config, "runs": [], "goals": []}
    for method, compiled in (("simclr", False), ("simclr", True), ("mocov2", False), ("swav", False)):
        name = method + ("+compile" if compiled else "")
        need, left = s.subrun_estimate_s[name], ctx.part_left()
        if left < need:
            results["runs"].append(
                {
                    "name": name,
                    "status": "skipped",
                    "reason": f"{left:.0f} s left of the part's cap, the sub-run needs about {need:.0f} s",
                }
            )
            continue
        start = time.perf_counter()
        try:
            run = tp.bench_method(argparse.Namespace(**config, compile=compiled), method, images, device)
            run.update(name=name, status="ok")
        except Exception as err:  # one sub-run's failure is reported; the next sub-run still runs
            run = {
                "name": name,
                "status": "error",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(),
            }
        run["seconds"] = time.perf_counter() - start
        results["runs"].append(run)
        if run["status"] == "ok":
            results["goals"].append(goal(f"{name}: suite / DataLoader images/s", run["speedup"], ">=", 5.0))
            results["goals"].append(goal(f"{name}: MFU", run["suite"]["mfu"], ">=", 0.30))
        ctx.save(results)
        _free()
    return results


# -- 2. kNN and k-means ----------------------------------------------------------------------------
def part_kernels(ctx: Any) -> dict[str, Any]:
    """``lightning_ssl.eval.knn.knn_predict`` (k = 200, T = 0.1) and the torch k-means backend."""
    s, device = ctx.sizes, _device(ctx)
    knn = tp.bench_knn(device, *s.knn)
    results: dict[str, Any] = {"knn": knn, "kmeans_backends_available": available_backends()}
    ctx.save(results)
    results["kmeans"] = tp.bench_kmeans(device, *s.kmeans, backends=["torch"])
    bank, queries, dim = s.knn
    n, d, k = s.kmeans
    results["goals"] = [
        goal(f"kNN {bank}x{queries}x{dim} seconds", knn["seconds"], "<", 0.5),
        goal(f"torch k-means {n}x{d} -> K={k}, 20 it. seconds", results["kmeans"]["seconds"]["torch"], "<", 2.0),
    ]
    return results


# -- 3. learning at scale --------------------------------------------------------------------------
class EpochTimer(pl.Callback):
    """Wall time of each completed training epoch (the device synchronised at both ends)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        _sync(module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        _sync(module.device)
        self.times.append(time.perf_counter() - self._start)


def _trainer(ctx: Any, callbacks: list[pl.Callback], max_time_s: float | None = None, **limits: Any) -> pl.Trainer:
    cuda = ctx.sizes.device == "cuda"
    return pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if cuda else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        benchmark=cuda,
        callbacks=callbacks,
        max_time={"seconds": int(max_time_s) + 1} if max_time_s else None,
        default_root_dir=str(ctx.out / "lightning"),
        **limits,
    )


def fmnist_root(ctx: Any) -> tuple[Path, str]:
    """The folder of the idx files: ``--fmnist``; in smoke mode a tiny fixture in the real on-disk
    format (``tests/fixtures.py``) unless ``--fmnist`` has the files."""
    if ctx.fmnist is not None and find_idx_files([ctx.fmnist]) is not None:
        return ctx.fmnist, "given folder"
    if not ctx.smoke:
        raise FileNotFoundError(
            f"--fmnist {ctx.fmnist}: the Fashion-MNIST idx files ({', '.join(FILES.values())}, optionally .gz) "
            "are not there; pass the folder that has them (Debian: apt install dataset-fashion-mnist)"
        )
    spec = importlib.util.spec_from_file_location("lssl_test_fixtures", ROOT / "tests" / "fixtures.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    rng = np.random.default_rng(0)
    per = ctx.sizes.fm_per_class
    train_labels = rng.permutation(np.repeat(np.arange(10), per)).astype(np.uint8)
    test_labels = rng.permutation(np.repeat(np.arange(10), max(2, per // 20))).astype(np.uint8)
    folder = fixtures.write_fashion_mnist(
        ctx.out / "fmnist_fixture",
        rng.integers(0, 256, (train_labels.size, 28, 28), dtype=np.uint8),
        train_labels,
        rng.integers(0, 256, (test_labels.size, 28, 28), dtype=np.uint8),
        test_labels,
    )
    return folder, f"tiny fixture ({per} images per class)"


def _fmnist(ctx: Any, root: Path, twin: bool) -> InMemoryLTDataModule:
    return FashionMNISTLT(
        root=str(root),
        profile="exp",
        imbalance_ratio=0.01,
        balanced_twin=twin,
        image_size=ctx.sizes.fm_image_size,
        batch_size=ctx.sizes.fm_batch_size,
        eval_batch_size=1024,
        resident=True,
    )


def _simclr(ctx: Any, epochs: int) -> pl.LightningModule:
    return SimCLR(
        backbone=ctx.sizes.fm_backbone,
        image_size=ctx.sizes.fm_image_size,
        warmup_epochs=min(10.0, 0.1 * epochs),
        channels_last=ctx.sizes.device == "cuda",
        **SIMCLR_RECIPE,
    )


def _train_and_probe(
    ctx: Any, dm: InMemoryLTDataModule, epochs: int, max_time_s: float, save: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Pre-train for ``epochs`` (``save`` the training figures), then probe ``full``."""
    pl.seed_everything(0, verbose=False)
    model, timer = _simclr(ctx, epochs), EpochTimer()
    trainer = _trainer(ctx, [timer], max_time_s=max_time_s, max_epochs=epochs)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    done, n = len(timer.times), len(dm.splits.pretrain)
    run: dict[str, Any] = {
        "status": "ok",
        "epochs_planned": epochs,
        "epochs_done": done,
        "stopped_by_max_time": done < epochs,
        "steps": trainer.global_step,
        "pretrain_images": n,
        "class_counts": dm.class_counts.tolist(),
        "train_seconds": time.perf_counter() - start,
        "epoch_seconds_median": statistics.median(timer.times) if done else None,
        "epochs_per_s": done / sum(timer.times) if done else None,
        "images_per_s": done * n / sum(timer.times) if done else None,
    }
    save(run)  # a probe killed at the part's cap keeps the training figures
    start = time.perf_counter()
    ev = evaluate_frozen(model, dm, probe_sets=["full"], knn_bank="full", device=ctx.sizes.device)
    metrics = ev["metrics"]
    knn_key = next(k for k in metrics if k.startswith("knn_") and k.endswith("/acc_top1"))
    run.update(
        eval_seconds=time.perf_counter() - start,
        linear_acc=metrics["linear_full/acc_top1"],
        knn_acc=metrics[knn_key],
        knn_metric=knn_key,
        probe={"linear": ev["linear"], "knn": ev["knn"]},
        metrics=metrics,
    )
    return run


def part_learning(ctx: Any) -> dict[str, Any]:
    """Time-budgeted SimCLR pre-training, then the offline probe and kNN on ``full``.

    The schedule is sized from a timed calibration: a throw-away model trains 2 epochs and the
    second (warm) epoch's time sets ``max_epochs`` = budget / epoch time, so the cosine schedule
    completes; Lightning's ``max_time`` (budget + 20 % + 10 s) only guards against a slowdown.
    """
    s, device = ctx.sizes, _device(ctx)
    root, source = fmnist_root(ctx)
    results: dict[str, Any] = {
        "data": {
            "dataset": "FashionMNISTLT",
            "root": str(root),
            "source": source,
            "profile": "exp",
            "imbalance_ratio": 0.01,
            "image_size": s.fm_image_size,
            "resident": True,
        },
        "model": {
            "method": "SimCLR",
            "backbone": s.fm_backbone,
            "batch_size": s.fm_batch_size,
            **SIMCLR_RECIPE,
            "precision": "bf16-mixed" if device.type == "cuda" else "32-true",
        },
        "floors": FLOORS,
        "schedule_sizing": "max_epochs from a timed 2-epoch calibration (warm epoch); "
        "max_time = budget x 1.2 + 10 s as a backstop",
        "goals": [],
    }
    dm = _fmnist(ctx, root, twin=False)
    start = time.perf_counter()
    pl.seed_everything(0, verbose=False)
    timer = EpochTimer()
    _trainer(ctx, [timer], max_epochs=2).fit(_simclr(ctx, 2), datamodule=dm)
    epoch_s = timer.times[-1]
    results["calibration"] = {"epochs": 2, "epoch_seconds": timer.times, "seconds": time.perf_counter() - start}
    budget = min(
        s.fm_train_budget_s,
        ctx.run_left() - ctx.reserve_after() - s.fm_eval_reserve_s,
        ctx.part_left() - s.fm_eval_reserve_s,
    )
    epochs = max(1, int(budget // epoch_s))
    results["train_budget_s"] = budget
    ctx.save(results)
    _free()

    def keep(name: str) -> Callable[[dict[str, Any]], None]:
        return lambda run: ctx.save({**results, name: run})

    # the backstop never runs into the part's cap or the run's deadline: the probe still has its time
    hard = min(ctx.part_left(), ctx.run_left() - ctx.reserve_after()) - s.fm_eval_reserve_s
    lt = _train_and_probe(ctx, dm, epochs, max(epoch_s, min(1.2 * budget + 10, hard)), keep("long_tailed"))
    results["long_tailed"] = lt
    results["goals"] += [
        goal("LT linear_full acc vs raw-pixel floor", lt["linear_acc"], ">=", FLOORS["linear"]),
        goal("LT kNN acc vs raw-pixel floor", lt["knn_acc"], ">=", FLOORS["knn"]),
    ]
    ctx.save(results)
    _free()
    need = 1.1 * (lt["train_seconds"] + lt["eval_seconds"]) + 5
    left = min(ctx.run_left() - ctx.reserve_after(), ctx.part_left())
    if left < need:
        results["balanced_twin"] = {
            "status": "skipped",
            "reason": f"needs about {need:.0f} s at the same epochs, {max(left, 0):.0f} s left (raise --budget)",
        }
        return results
    twin = _train_and_probe(
        ctx, _fmnist(ctx, root, twin=True), epochs, 1.2 * lt["train_seconds"] + 10, keep("balanced_twin")
    )
    results["balanced_twin"] = twin
    results["goals"] += [
        goal("twin linear_full acc vs raw-pixel floor", twin["linear_acc"], ">=", FLOORS["linear"]),
        goal("twin kNN acc vs raw-pixel floor", twin["knn_acc"], ">=", FLOORS["knn"]),
    ]
    return results


# -- 4. the NaN check ------------------------------------------------------------------------------
class RandomImages(InMemoryLTDataModule):
    """Uniform random uint8 RGB images, 10 balanced labels: a timing fixture, not a dataset."""

    card = DatasetCard(
        name="random_images",
        num_classes=10,
        image_size=32,
        channels=3,
        mean=(0.5, 0.5, 0.5),
        std=(0.29, 0.29, 0.29),
        group_rule="thirds",
        protocol="balanced, uniform random pixels",
        source="generated (seed 0)",
        reference="none: a throughput fixture",
    )

    def __init__(self, num_images: int = 1024, **kwargs: Any) -> None:
        super().__init__(profile="balanced", imbalance_ratio=1.0, **kwargs)
        self.num_images = num_images

    def load_source(self) -> Source:
        g = torch.Generator().manual_seed(0)
        side = self.image_size
        images = torch.randint(0, 256, (self.num_images, 3, side, side), dtype=torch.uint8, generator=g)
        return Source(images, np.arange(self.num_images, dtype=np.int64) % 10)


class StepTimer(pl.Callback):
    """Seconds from the start of batch ``warmup`` to the end of the last batch; the device is
    synchronised only there, so the steps in between keep their own host synchronisations."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.seconds: float | None = None
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            _sync(module.device)
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.warmup + self.steps - 1:
            _sync(module.device)
            self.seconds = time.perf_counter() - self._start


def part_nonfinite(ctx: Any) -> dict[str, Any]:
    """SimCLR training through Lightning with ``nonfinite="raise"`` (one host sync per step for the
    ``isfinite`` test) and ``"ignore"``, interleaved; images/s of each (median) and their ratio."""
    s, device = ctx.sizes, _device(ctx)
    bs, steps, warmup = s.nf_batch_size, s.nf_steps, s.nf_warmup
    rates: dict[str, list[float]] = {"raise": [], "ignore": []}
    for _ in range(s.nf_repeats):
        for mode in rates:
            pl.seed_everything(0, verbose=False)
            model = SimCLR(
                backbone=s.backbone,
                image_size=s.nf_image_size,
                lr=0.1,
                warmup_epochs=0,
                channels_last=device.type == "cuda",
                nonfinite=mode,
            )
            # 10 balanced classes of equal size: the balanced profile keeps every image
            dm = RandomImages(
                num_images=10 * -(-bs * (warmup + steps) // 10),
                image_size=s.nf_image_size,
                batch_size=bs,
                resident=True,
            )
            timer = StepTimer(warmup, steps)
            _trainer(ctx, [timer], max_epochs=1, max_steps=warmup + steps).fit(model, datamodule=dm)
            if timer.seconds is None:
                raise RuntimeError(f"nonfinite={mode}: training ended before step {warmup + steps}")
            rates[mode].append(bs * steps / timer.seconds)
            _free()
    raise_ips, ignore_ips = statistics.median(rates["raise"]), statistics.median(rates["ignore"])
    return {
        "config": {
            "method": "SimCLR",
            "backbone": s.backbone,
            "image_size": s.nf_image_size,
            "batch_size": bs,
            "steps": steps,
            "warmup": warmup,
            "repeats": s.nf_repeats,
            "compile": False,
            "channels_last": device.type == "cuda",
            "precision": "bf16-mixed" if device.type == "cuda" else "32-true",
        },
        "images_per_s": rates,
        "raise_images_per_s": raise_ips,
        "ignore_images_per_s": ignore_ips,
        "ratio_ignore_over_raise": ignore_ips / raise_ips,
        "check_cost_percent": 100 * (1 - raise_ips / ignore_ips),
        "goals": [],
    }
