"""Two-process tests without a launcher: a free rendezvous port, and the environment torchrun gives
each rank, so that Lightning's DDP sees its processes as launched externally and starts none."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port free on this machine now, for the rank-0 rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_torchrun_rank(rank: int, port: int, world: int = 2) -> None:
    """Set what torchrun sets for ``rank`` of ``world`` processes on one node."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )
    rank_zero_only.rank = rank  # what torchrun's environment gives a process at import time
