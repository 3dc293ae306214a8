"""One run, one runner: a lock file created with ``O_CREAT | O_EXCL`` next to the run's result.

The file holds the owner (pid, host, SLURM job, start time). A heartbeat thread touches it every
``heartbeat_s`` seconds while the run is held. A lock is stale, and may be taken over, when its
owner is a dead process on this host, when it belongs to the same SLURM array task (a requeued
job resumes its own run), or when its heartbeat is older than ``stale_after_s`` (an owner on
another host that died with its node). Our choice of timings: 30 s heartbeat, 10 min staleness.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


def slurm_task() -> str | None:
    """``<array job id>_<task id>`` (or the job id) of the SLURM job this process runs in."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job is None:
        return None
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if task is not None else job


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_stale(path: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the lock at ``path`` no longer protects a live run (see the module docstring)."""
    owner = read_lock(path)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if owner is None:  # being written right now, or garbage: trust only its age
        return age > stale_after_s
    if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
        return True
    task = slurm_task()
    if task is not None and owner.get("slurm_task") == task and owner.get("pid") != os.getpid():
        return True
    return age > stale_after_s


class RunLock:
    """``with RunLock(path) as held: if held: ...``; ``held`` is False when another runner has it."""

    def __init__(self, path: str | Path, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.path = Path(path)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_task": slurm_task(),
            "started": time.time(),
            "token": self.token,
        }
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _take_over_stale(self) -> bool:
        """Move a stale lock aside; only one of several racing runners succeeds, and a lock that
        was replaced by a fresh one in between is put back."""
        judged = read_lock(self.path)
        if not is_stale(self.path, self.stale_after_s):
            return False
        aside = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if read_lock(aside) != judged:  # someone else's fresh lock: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.held = self._create() or (self._take_over_stale() and self._create())
        if self.held:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self.held

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        owner = read_lock(self.path)
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
