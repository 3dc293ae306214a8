"""The whole DnC pipeline on 2 gloo CPU ranks against 1 process.

The test spawns the 2 processes itself and sets the torchrun environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT), so each process runs the driver as under ``torchrun lssl dnc``
and Lightning launches nothing (its ``ddp`` strategy only joins the process group). Compared: the
clustering, which is world-size invariant (the clean pass is sharded, gathered and sorted; rank 0
clusters): its assignments and centroids equal, bit for bit, those of 1 process clustering the
same base checkpoint, with N rows (not N x ranks). Training is not world-size invariant (per-rank
BatchNorm statistics and augmentation streams), so the weights are not compared; the experts'
steps are checked against the budget at the global batch (2 x 16).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from lightning_ssl.methods.dnc_pipeline import DnCPipeline, expert_steps
from tests.distributed_helpers import as_torchrun_rank, free_port

TINY = dict(backbone="resnet_tiny", image_size=16, proj_hidden_dim=8, proj_output_dim=2, lr=0.05)


def make_pipeline(work: Path, devices: int) -> DnCPipeline:
    from datamodules.digits import DigitsLT

    trainer = dict(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        limit_train_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return DnCPipeline(
        DigitsLT(batch_size=16, eval_batch_size=64),
        work,
        num_clusters=2,
        base_epochs=1,
        expert_epochs=0.25,
        distill_epochs=1,
        teacher_kwargs=TINY,
        distill={"head_hidden_dim": 8},
        trainer_kwargs=trainer,
        kmeans_backend="torch",
    )


def _rank(rank: int, port: int, work: str) -> None:
    import torch

    as_torchrun_rank(rank, port)
    torch.set_num_threads(1)
    try:
        make_pipeline(Path(work), devices=2).run()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_dnc_pipeline_on_two_ranks_matches_one_process(tmp_path: Path) -> None:
    work = tmp_path / "ddp"
    mp.spawn(_rank, args=(free_port(), str(work)), nprocs=2, join=True)
    for stage in ("base", "cluster", "experts", "distill"):
        assert (work / stage / "done.json").is_file()
    assignments = np.load(work / "cluster" / "assignments.npy")
    assert assignments.shape == (494,)  # N rows, not 2N
    record = json.loads((work / "experts" / "done.json").read_text())
    sizes = np.bincount(assignments, minlength=2).tolist()
    assert record["artifacts"]["steps"] == expert_steps(sizes, 0.25, 32)  # the global batch
    assert record["fingerprint"]["trainer"]["world_size"] == 2

    single = tmp_path / "single"
    (single / "cluster").mkdir(parents=True)
    shutil.copytree(work / "base", single / "base")
    make_pipeline(single, devices=1).run_cluster()  # 1 process clusters the same base
    assert np.array_equal(np.load(single / "cluster" / "assignments.npy"), assignments)
    assert np.array_equal(np.load(single / "cluster" / "centroids.npy"), np.load(work / "cluster" / "centroids.npy"))
    c1, c2 = (json.loads((d / "cluster" / "clusters.json").read_text()) for d in (single, work))
    assert c1["objective"] == c2["objective"] and c1["sizes"] == c2["sizes"] == sizes
