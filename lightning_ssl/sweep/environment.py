"""What a result records about where it ran: hardware, package versions, git commit, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "lightning-ssl",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "timm",
    "numpy",
    "faiss-cpu",
    "scikit-learn",
    "jsonargparse",
    "submitit",
    "wandb",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "gpu": gpus[0] if gpus else None,
        "host": platform.node(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit(start: str | Path | None = None) -> str | None:
    """The commit checked out in the repository around ``start`` (default: this package), read
    from ``.git`` directly (no git process); ``None`` outside a checkout."""
    here = Path(start or __file__).resolve()
    for folder in [here, *here.parents]:
        git = folder / ".git"
        if git.is_file():  # worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        if not git.is_dir():
            continue
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git, Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else git):
            base = base if base.is_absolute() else git / base
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
        return None
    return None


_RSS_RESET = {"ok": False}


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_memory() -> None:
    """Start a new peak: CUDA's max-allocated counter, and on Linux the process's peak RSS
    (``/proc/self/clear_refs`` value 5 resets VmHWM, where the kernel allows it)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    _RSS_RESET["ok"] = hwm is not None and rss is not None and hwm - rss < 4096


def peak_memory() -> dict[str, Any]:
    """CUDA max allocated bytes when a GPU is used, else the peak RSS since :func:`reset_peak_memory`
    (``kind`` says which; ``process_peak_rss`` is the whole process's peak)."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return {"bytes": int(torch.cuda.max_memory_allocated()), "kind": "cuda_max_allocated"}
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        # when the kernel refused the reset, the peak covers the whole process (earlier runs too)
        return {"bytes": hwm * 1024, "kind": "peak_rss" if _RSS_RESET["ok"] else "process_peak_rss"}
    return {"bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "process_peak_rss"}
