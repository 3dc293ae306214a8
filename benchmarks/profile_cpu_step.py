"""Where a CPU training step's time goes, and which hardware options pay off on this machine.

Times, for SimCLR on ``resnet_tiny`` at 16 px (the CPU benchmarks' recipe): the batched view
augmentation of one batch, the forward + backward + optimiser step, and the converged offline
probe on 60,000 x 128 features; then the step under ``channels_last`` (eager and under
``torch.compile`` with the inductor backend), under bf16 autocast (contiguous and channels_last; only
where the CPU has native bf16: AVX512-BF16 or AMX; emulated bf16 is slower than fp32) and with 1 vs
all threads. Writes a JSON (``--out``) and prints one line per measurement.

    python benchmarks/profile_cpu_step.py --out results/throughput/cpu-step-profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from datamodules.view_transforms import MultiViewTransform
from lightning_ssl.eval.linear import fit_linear_probe
from lightning_ssl.methods.simclr import SimCLR


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def native_bf16() -> bool:
    """True where the CPU computes bf16 natively (torch's capability string or the CPU flags)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--probe-rows", type=int, default=60000)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8)
    views = MultiViewTransform(args.image_size, mean=(0.286,) * 3, std=(0.353,) * 3, recipe="small_gray")
    model = SimCLR(backbone="resnet_tiny", image_size=args.image_size, proj_hidden_dim=128, proj_output_dim=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batch = (views(images, seed=0), torch.zeros(args.batch_size, dtype=torch.long), torch.arange(args.batch_size))
    out: dict[str, object] = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "native_bf16": native_bf16(),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "torch": torch.__version__,
    }

    def step(autocast: bool = False) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model.compute_losses(batch).losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def report(name: str, seconds: float, images: int) -> None:
        out[name] = {"seconds": seconds, "images_per_s": images / seconds}
        print(f"{name:<28} {1000 * seconds:8.1f} ms   {images / seconds:9.0f} img/s", flush=True)

    report("augment (2 views)", median_time(lambda: views(images, seed=1), args.repeats), args.batch_size)
    report("step fp32", median_time(step, args.repeats), args.batch_size)
    model.backbone.to(memory_format=torch.channels_last)
    batch = ([v.contiguous(memory_format=torch.channels_last) for v in batch[0]], batch[1], batch[2])
    report("step fp32 channels_last", median_time(step, args.repeats), args.batch_size)
    report(
        "step bf16 autocast channels_last" + ("" if native_bf16() else " (emulated)"),
        median_time(lambda: step(True), max(1, args.repeats // 2)),
        args.batch_size,
    )
    # torch.compile (inductor, C++ codegen on the CPU) of the backbone, as SSLMethod(compile=True)
    # does it; the first calls compile (timed apart), then steps are timed as above
    eager = model.backbone
    model.__dict__["_compiled_backbone"] = torch.compile(eager)
    start = time.perf_counter()
    step()
    out["compile_seconds"] = time.perf_counter() - start
    print(f"{'compile (first step)':<28} {1000 * out['compile_seconds']:8.1f} ms", flush=True)
    report("step fp32 channels_last compiled", median_time(step, args.repeats, warmup=2), args.batch_size)
    del model.__dict__["_compiled_backbone"]
    model.backbone.to(memory_format=torch.contiguous_format)
    batch = ([v.contiguous() for v in batch[0]], batch[1], batch[2])
    report(
        "step bf16 autocast" + ("" if native_bf16() else " (emulated)"),
        median_time(lambda: step(True), max(1, args.repeats // 2)),
        args.batch_size,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    report("step fp32, 1 thread", median_time(step, args.repeats), args.batch_size)
    torch.set_num_threads(threads)
    feats = torch.randn(args.probe_rows, 128)
    labels = torch.randint(0, 10, (args.probe_rows,))
    feats += 0.5 * torch.nn.functional.one_hot(labels, 128).float()
    start = time.perf_counter()
    _, info = fit_linear_probe(feats, labels, 10)
    out["probe"] = {
        "seconds": time.perf_counter() - start,
        "rows": args.probe_rows,
        "steps": info.steps,
        "converged": info.converged,
    }
    print(
        f"{'probe lbfgs ' + str(args.probe_rows) + 'x128':<28} {1000 * out['probe']['seconds']:8.1f} ms   "
        f"{info.steps} L-BFGS steps, converged={info.converged}",
        flush=True,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    raise SystemExit(main())
