"""Losses on two gloo processes equal the single-process losses on the concatenated batch.

Gradient convention checked here: each rank backpropagates its own ``loss.mean()``.
``gather_with_grad`` sums the gathered gradient over ranks, so a rank's input gradient is its slice
of the gradient of ``sum_r mean_r = W * (global mean)``; DDP then *averages* parameter gradients
over the ``W`` ranks, which gives exactly the single-process gradient of the global mean. Hence:
``grad on rank r == W * (single-process grad of full.mean())[slice r]``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_ssl import distributed
from lightning_ssl.losses import (
    info_nce_in_batch,
    masked_nt_xent,
    nt_xent,
    nt_xent_multi,
    sinkhorn_knopp,
)

WORLD, LOCAL_B, DIM, PROTOTYPES = 2, 3, 4, 5
pytestmark = pytest.mark.ddp


def _full_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = WORLD * LOCAL_B
    a = torch.randn(n, DIM, dtype=torch.float64, generator=g)
    return {
        "a": a,
        "b": a + 0.7 * torch.randn(n, DIM, dtype=torch.float64, generator=g),
        "c": torch.randn(n, DIM, dtype=torch.float64, generator=g),
        "scores": torch.randn(n, PROTOTYPES, dtype=torch.float64, generator=g).tanh(),
    }


# every case: (name, loss function of (a, b, c) returning B per-sample values)
CASES = {
    "nt_xent": lambda a, b, c: nt_xent(a, b, 0.5),
    "nt_xent_multi": lambda a, b, c: nt_xent_multi([a, b, c], 0.3),
    "info_nce_in_batch": lambda a, b, c: info_nce_in_batch(a, b, 0.2),
    "masked_nt_xent": lambda a, b, c: masked_nt_xent(a, b, 0.3, low=0.2, high=0.9),
    "masked_nt_xent_official": lambda a, b, c: masked_nt_xent(
        a, b, 0.3, 0.2, 0.9, mask_positive=True, log_of_mean=True
    ),
}


def _losses_and_grads(inputs: dict[str, torch.Tensor], rows: slice) -> dict[str, tuple[torch.Tensor, ...]]:
    out = {}
    for name, fn in CASES.items():
        a, b, c = (inputs[k][rows].clone().requires_grad_() for k in "abc")
        loss = fn(a, b, c)
        loss.mean().backward()
        out[name] = (
            loss.detach(),
            a.grad,
            b.grad,
            c.grad if c.grad is not None else torch.zeros_like(c),
        )
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        inputs = _full_inputs()
        rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        result = _losses_and_grads(inputs, rows)
        result["sinkhorn"] = (sinkhorn_knopp(inputs["scores"][rows], 0.05, 3),)
        ragged = torch.arange(2 + rank, dtype=torch.float64)[:, None] + 10 * rank
        result["all_gather_unequal"] = (distributed.all_gather(ragged),)
        if rank == 1:  # the late rank: rank 0 must wait for it at the barrier
            time.sleep(0.5)
            (Path(out_dir) / "late_rank_arrived").touch()
        distributed.barrier()
        result["late_rank_seen"] = (torch.tensor((Path(out_dir) / "late_rank_arrived").exists()),)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, tuple[torch.Tensor, ...]]]:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process_on_the_concatenated_batch(ranks, name: str) -> None:
    single = _losses_and_grads(_full_inputs(), slice(None))[name]
    for r, result in enumerate(ranks):
        rows = slice(r * LOCAL_B, (r + 1) * LOCAL_B)
        loss, *grads = result[name]
        torch.testing.assert_close(loss, single[0][rows])
        for got, full in zip(grads, single[1:]):
            torch.testing.assert_close(got, WORLD * full[rows])


def test_two_rank_gradients_are_not_trivially_zero(ranks) -> None:
    assert all(result["nt_xent"][1].abs().sum() > 1e-3 for result in ranks)


def test_sinkhorn_two_ranks_equal_one_process(ranks) -> None:
    single = sinkhorn_knopp(_full_inputs()["scores"], 0.05, 3)
    torch.testing.assert_close(torch.cat([result["sinkhorn"][0] for result in ranks]), single)
    # and differs from running Sinkhorn on each half alone (the all-reduce matters)
    half = sinkhorn_knopp(_full_inputs()["scores"][:LOCAL_B], 0.05, 3)
    assert not torch.allclose(half, single[:LOCAL_B])


def test_all_gather_with_unequal_sizes(ranks) -> None:
    expected = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0], dtype=torch.float64)[:, None]
    for result in ranks:
        torch.testing.assert_close(result["all_gather_unequal"][0], expected)


def test_barrier_waits_for_every_rank(ranks) -> None:
    assert all(bool(result["late_rank_seen"][0]) for result in ranks)
