"""The prepared GPU check (issue 14): every GPU figure of the suite from one command.

Run it through ``benchmarks/gpu_check.sh`` (which sets ``PYTHONPATH`` to the repository root and
restarts this script for the remaining parts when a part kills the process). Four parts, in
order, each reported in ``OUT/<part>.json`` whatever happens to the others, then ``OUT/summary.md``:

1. ``throughput``: ``benchmarks/throughput.py`` for SimCLR ResNet-18, 32 px, batch 512, bf16,
   channels_last, eager and ``torch.compile``: the suite's device-resident path against the
   torchvision DataLoader pipeline (goal >= 5x), images/s, MFU (goal >= 30 %), peak memory; then
   MoCo v2 and SwAV multi-crop while the part's time cap allows;
2. ``kernels``: kNN, 50k bank x 10k queries x 512 (goal < 0.5 s), and torch k-means, 50k x 4096
   -> K = 100, 20 iterations (goal < 2 s);
3. ``learning``: SimCLR ResNet-18 (small stem) on Fashion-MNIST-LT (exp 0.01) at 28 px with the
   device-resident data, as many epochs as the time budget holds, then the offline linear probe and
   kNN on the balanced 60k set (``full``) against the raw-pixel floors (84.5 % linear, 78.9 % kNN);
   the balanced twin when the budget allows;
4. ``nonfinite``: images/s of SimCLR training with ``nonfinite="raise"`` and ``"ignore"``.

Every part runs under a hard time cap (``faulthandler`` ends the process, the traceback goes to
``OUT/<part>.log``); the caps shrink so that the whole run ends within ``--budget`` seconds of the
shell's start. ``--smoke`` runs the same code at tiny size on the CPU in seconds (CI).
This file imports only the standard library, ``lightning_ssl.io`` and ``gpu_check_summary`` at start;
the parts (``benchmarks/gpu_check_parts.py``) import torch.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpu_check_summary import summary

from lightning_ssl.io import atomic_write_json, atomic_write_text

FAIL_ENV = "GPU_CHECK_FAIL"  # "part[:exit],...": force a part to fail (tests): raise, or end the process
FINAL = ("ok", "error", "skipped")
DEFAULT_FMNIST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package


@dataclass(frozen=True)
class Part:
    """A part, its hard time cap and the least time it needs when it runs at all (seconds)."""

    name: str
    title: str
    cap_s: float
    smoke_cap_s: float
    min_s: float


PARTS = (
    # --smoke caps only catch a hang: a shared CI CPU can be 10x slower than an idle one
    Part("throughput", "SSL training throughput (suite vs torchvision DataLoader)", 190, 600, 40),
    Part("kernels", "kNN and k-means on the device", 60, 600, 10),
    # learning's cap leaves room for the balanced twin; the run's deadline shortens it (--budget)
    Part("learning", "Learning at scale: SimCLR on Fashion-MNIST-LT", 640, 600, 60),
    Part("nonfinite", "Cost of the NaN check", 80, 600, 25),
)
PART_NAMES = tuple(p.name for p in PARTS)


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full GPU run and ``--smoke`` (CPU, seconds)."""

    device: str
    precision: str  # "bf16" | "fp32" of throughput.py
    backbone: str
    image_size: int
    batch_size: int
    steps: int
    warmup: int
    workers: int
    images: int  # random uint8 images of the throughput part
    compile_backend: str
    swav_small: int  # SwAV small crops (Caron et al. 2020 §3.2: 6)
    swav_small_size: int | None
    subrun_estimate_s: dict[str, float]  # what a throughput sub-run needs; it starts only if that is left
    knn: tuple[int, int, int]  # bank, queries, dim
    kmeans: tuple[int, int, int]  # n, dim, k
    fm_backbone: str
    fm_image_size: int  # 28: Fashion-MNIST's own side
    fm_batch_size: int
    fm_train_budget_s: float  # "about 4 minutes" of pre-training (the issue)
    fm_eval_reserve_s: float  # kept for the offline probe after pre-training
    fm_per_class: int  # images per class of the smoke fixture (0: real files)
    nf_batch_size: int
    nf_image_size: int
    nf_steps: int
    nf_warmup: int
    nf_repeats: int


FULL = Sizes(
    device="cuda",
    precision="bf16",
    backbone="resnet18",
    image_size=32,
    batch_size=512,
    steps=20,
    warmup=5,
    workers=min(8, os.cpu_count() or 1),
    images=10_000,
    compile_backend="inductor",  # workers: throughput.py's
    swav_small=6,
    swav_small_size=None,
    subrun_estimate_s={"simclr": 25, "simclr+compile": 110, "mocov2": 25, "swav": 35},
    knn=(50_000, 10_000, 512),
    kmeans=(50_000, 4096, 100),
    fm_backbone="resnet18",
    fm_image_size=28,
    fm_batch_size=512,
    fm_train_budget_s=240,
    fm_eval_reserve_s=45,
    fm_per_class=0,
    nf_batch_size=512,
    nf_image_size=32,
    nf_steps=30,
    nf_warmup=10,
    nf_repeats=2,
)
SMOKE = Sizes(
    device="cpu",
    precision="fp32",
    backbone="resnet_tiny",
    image_size=8,
    batch_size=8,
    steps=1,
    warmup=1,
    workers=1,
    images=32,
    compile_backend="aot_eager",
    swav_small=2,
    swav_small_size=4,
    subrun_estimate_s={"simclr": 3, "simclr+compile": 5, "mocov2": 3, "swav": 3},
    knn=(2_000, 500, 64),
    kmeans=(2_000, 64, 10),
    fm_backbone="resnet_tiny",
    fm_image_size=8,
    fm_batch_size=128,
    fm_train_budget_s=2,
    fm_eval_reserve_s=10,
    fm_per_class=100,
    nf_batch_size=8,
    nf_image_size=8,
    nf_steps=2,
    nf_warmup=1,
    nf_repeats=1,
)


class Context:
    """What a part sees: sizes, folders, its deadline, and ``save`` for partial results."""

    def __init__(
        self,
        part: Part,
        out: Path,
        sizes: Sizes,
        smoke: bool,
        fmnist: Path | None,
        deadline: float,
        part_deadline: float,
        record: dict[str, Any],
    ) -> None:
        self.part, self.out, self.sizes, self.smoke, self.fmnist = part, out, sizes, smoke, fmnist
        self.deadline, self.part_deadline, self.record = deadline, part_deadline, record

    def part_left(self) -> float:
        """Seconds left before this part's hard cap."""
        return self.part_deadline - time.time()

    def run_left(self) -> float:
        """Seconds left before the whole run's deadline."""
        return self.deadline - time.time()

    def reserve_after(self) -> float:
        """The least time the parts after this one need."""
        later = PARTS[PART_NAMES.index(self.part.name) + 1 :]
        return sum(p.min_s for p in later)

    def save(self, results: dict[str, Any]) -> None:
        """Write the results so far (a part killed at its cap keeps what it finished)."""
        self.record["results"] = results
        write_record(self.out, self.record)


def part_path(out: Path, name: str) -> Path:
    return out / f"{name}.json"


def write_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write_json(part_path(out, record["part"]), record)


def read_record(out: Path, name: str) -> dict[str, Any] | None:
    path = part_path(out, name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def forced_failures() -> dict[str, str]:
    """``GPU_CHECK_FAIL`` parsed: part name -> ``raise`` or ``exit``."""
    spec = os.environ.get(FAIL_ENV, "").strip()
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, how = item.partition(":")
        how = how or "raise"
        if name not in PART_NAMES or how not in ("raise", "exit"):
            print(
                f"gpu_check: {FAIL_ENV}={spec!r}: {item!r} is not PART[:raise|exit] with PART one of "
                f"{', '.join(PART_NAMES)}; unset it for a real run",
                file=sys.stderr,
            )
            sys.exit(2)  # a usage error: gpu_check.sh does not restart on 2
        out[name] = how
    return out


def log_tail(out: Path, name: str, chars: int = 4000) -> str:
    path = out / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def mark_crashed(out: Path, rc: int) -> None:
    """After the process died (exit code ``rc``): the part it was running becomes an error."""
    for name in PART_NAMES:
        record = read_record(out, name)
        if record is None or record.get("status") != "running":
            continue
        tail = log_tail(out, name)
        why = (
            f"killed at its time cap of {record['cap_s']:.0f} s"
            if "Timeout (" in tail  # faulthandler's header
            else "the process died during this part"
        )
        record.update(
            status="error",
            seconds=time.time() - record["started_at"],
            traceback=tail,
            error=f"{why} (exit code {rc}); the results finished before are kept; see {name}.log",
        )
        write_record(out, record)


def run_part(part: Part, args: argparse.Namespace, sizes: Sizes, deadline: float, fail: str | None) -> None:
    """Run one part in this process under its hard cap and write its final record."""
    out: Path = args.out
    cap = part.smoke_cap_s if args.smoke else part.cap_s
    later = PARTS[PART_NAMES.index(part.name) + 1 :]
    cap = max(part.min_s, min(cap, deadline - time.time() - sum(p.min_s for p in later)))
    started = time.time()
    record: dict[str, Any] = {
        "part": part.name,
        "title": part.title,
        "status": "running",
        "smoke": args.smoke,
        "started_at": started,
        "cap_s": cap,
        "seconds": None,
        "error": None,
        "traceback": None,
        "results": {},
    }
    write_record(out, record)
    ctx = Context(part, out, sizes, args.smoke, args.fmnist, deadline, started + cap, record)
    with open(out / f"{part.name}.log", "w") as log:
        faulthandler.dump_traceback_later(cap, exit=True, file=log)
        try:
            if fail == "exit":
                os._exit(3)
            if fail == "raise":
                raise RuntimeError(f"forced failure of part {part.name!r} ({FAIL_ENV})")
            import gpu_check_parts  # noqa: PLC0415 (torch and the suite: only when a part runs, so a crash is recorded)

            results = getattr(gpu_check_parts, f"part_{part.name}")(ctx)
            failed = [r for r in results.get("runs", []) if r.get("status") == "error"]
            record.update(
                status="error" if failed else "ok",
                results=results,
                error="; ".join(f"{r['name']}: {r['error']}" for r in failed) or None,
            )
        except Exception as err:  # reported in the part's JSON; the next part still runs
            record.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        finally:
            faulthandler.cancel_dump_traceback_later()
    record["seconds"] = time.time() - started
    write_record(out, record)
    print(
        f"gpu_check: {part.name}: {record['status']} in {record['seconds']:.1f} s"
        + (f" ({record['error']})" if record["error"] else ""),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="output folder (one JSON per part, summary.md)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (seconds): the CI check")
    p.add_argument(
        "--fmnist",
        type=Path,
        default=None,
        help=f"folder of the Fashion-MNIST idx files (default {DEFAULT_FMNIST}; --smoke: a tiny "
        "fixture written under OUT unless this folder has the files)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds from the start to the end of the run (default 450 = the 8-minute promise "
        "with margin, raise it to get the balanced twin; --smoke: 3600, caps catch hangs only)",
    )
    p.add_argument("--started-at", type=float, default=None, help="epoch seconds of the run's start (the shell's)")
    p.add_argument("--fresh", action="store_true", help="delete this script's earlier results in OUT first")
    p.add_argument(
        "--after-crash",
        type=int,
        default=None,
        metavar="RC",
        help="the previous process died with this exit code: mark its part failed, run the rest",
    )
    p.add_argument("--parts", nargs="+", choices=PART_NAMES, default=list(PART_NAMES), help="a subset of the parts")
    args = p.parse_args(argv)
    fail = forced_failures()
    if args.fmnist is None and not args.smoke:
        args.fmnist = Path(DEFAULT_FMNIST)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for name in PART_NAMES:
            part_path(args.out, name).unlink(missing_ok=True)
            (args.out / f"{name}.log").unlink(missing_ok=True)
        for name in ("summary.md", "environment.json"):
            (args.out / name).unlink(missing_ok=True)
    if args.after_crash is not None:
        mark_crashed(args.out, args.after_crash)
    if args.smoke:  # one intra-op thread: tiny tensors on a shared CPU, where OpenMP spinning costs 10x
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch  # noqa: PLC0415 (after OMP_NUM_THREADS is set; this file starts without torch)

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sizes = SMOKE if args.smoke else FULL
    budget = args.budget if args.budget is not None else (3600.0 if args.smoke else 450.0)
    deadline = (args.started_at or time.time()) + budget
    env_path = args.out / "environment.json"
    if not env_path.is_file():
        try:
            import gpu_check_parts  # noqa: PLC0415 (torch: a failing import is reported in environment.json)

            env = gpu_check_parts.environment()
        except Exception as err:  # e.g. torch missing: every part then reports the same error in its JSON
            env = {"error": f"{type(err).__name__}: {err}"}
        atomic_write_json(env_path, {**env, "smoke": args.smoke, "budget_s": budget, "sizes": asdict(sizes)})
    for part in PARTS:
        record = read_record(args.out, part.name)
        if part.name not in args.parts or (record is not None and record.get("status") in FINAL):
            continue
        run_part(part, args, sizes, deadline, fail.get(part.name))
    text = summary(args.out, PARTS)
    atomic_write_text(args.out / "summary.md", text)
    print(text, flush=True)
    statuses = [(read_record(args.out, n) or {}).get("status") for n in args.parts]
    return 0 if all(s == "ok" for s in statuses) else 10


if __name__ == "__main__":
    sys.exit(main())
