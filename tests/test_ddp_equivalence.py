"""Every method trained for a few steps on 2 CPU processes (Lightning's DDP over gloo) ends with
the weights of 1 process on the concatenated batches, where the method is deterministic across
world sizes.

Fixed views per sample (no augmentation) and BatchNorm in eval mode (SyncBatchNorm needs a GPU)
make both runs see the same global batches; gathered negatives, the gathered MoCo queue, the
distributed Sinkhorn sums and UOTA's global covariance are what is being checked, and the
per-sample memories gathered by index (BCL's momentum loss, GH's logits and prior), SDCLR's masks
(re-pruned at the second epoch) and the strengths BCL hands to the datamodule. MTTV (partners
drawn from the local batch) and DnC (a pipeline of such fits) are not world-size invariant by
design and are left out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_ssl.methods import (
    BCLD,
    SDCLR,
    MoCLR,
    MoCoV2,
    SimCLR,
    SimSiam,
    Supervised,
    SwAV,
    UOTASwAV,
)
from lightning_ssl.methods.gh import GHConfig
from lightning_ssl.methods.temperature import TemperatureSchedule
from tests.distributed_helpers import as_torchrun_rank, free_port

N, B = 32, 8  # 32 samples; batch 16 on one process = 8 per rank on two


class FixedViews(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.views = torch.randn(4, N, 3, 8, 8, generator=g)  # 2 large + 2 small (4 px) views
        self.target = torch.arange(N) % 4

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):  # noqa: ANN204
        small = [torch.nn.functional.avg_pool2d(self.views[v, i], 2) for v in (2, 3)]
        return [self.views[0, i], self.views[1, i], *small], self.target[i], i


class Interleaved(Sampler):
    """Rank r of w takes samples r, r + w, ...: the 2 ranks' batches k together are exactly the
    1-process batch k (Lightning's own DistributedSampler would shuffle a training loader)."""

    def _rank_world(self) -> tuple[int, int]:
        dist = torch.distributed
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def __iter__(self):  # noqa: ANN204
        rank, world = self._rank_world()
        return iter(range(rank, N, world))

    def __len__(self) -> int:
        return N // self._rank_world()[1]


class FixedViewsData(pl.LightningDataModule):
    """The loader above as a datamodule with the two methods of the batch contract that the memories
    use (``pretrain_eval_dataloader`` for their size, ``set_sample_augmentation`` for BCL's strengths,
    recorded: the views are fixed)."""

    def __init__(self, devices: int) -> None:
        super().__init__()
        self.devices = devices
        self.strengths: list[torch.Tensor] = []

    def train_dataloader(self) -> DataLoader:
        return DataLoader(FixedViews(), batch_size=2 * B // self.devices, sampler=Interleaved(), drop_last=True)

    def pretrain_eval_dataloader(self) -> DataLoader:
        return DataLoader(FixedViews(), batch_size=B)

    def set_sample_augmentation(self, num_ops: int, magnitude: torch.Tensor, probability: torch.Tensor) -> None:
        self.strengths.append(torch.stack([magnitude, probability]))


class FrozenBNAndSave(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        for m in pl_module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.global_rank == 0:
            torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, self.out)


SMALL = {"backbone": "resnet_tiny", "image_size": 8, "lr": 0.05, "warmup_epochs": 0}
METHODS = {
    "SimCLR": lambda: SimCLR(proj_hidden_dim=16, proj_output_dim=8, **SMALL),
    "MoCoV2": lambda: MoCoV2(proj_hidden_dim=16, proj_output_dim=8, queue_size=32, **SMALL),
    "SimSiam": lambda: SimSiam(proj_hidden_dim=16, proj_output_dim=16, pred_hidden_dim=8, **SMALL),
    "SwAV": lambda: SwAV(
        proj_hidden_dim=16, proj_output_dim=8, num_prototypes=5, num_small_views=2, freeze_prototypes_steps=0, **SMALL
    ),
    "MoCLR": lambda: MoCLR(proj_hidden_dim=16, proj_output_dim=8, **SMALL),
    "UOTA": lambda: UOTASwAV(
        proj_hidden_dim=16,
        proj_output_dim=8,
        num_prototypes=5,
        num_small_views=2,
        freeze_prototypes_steps=0,
        uota_start_epoch=0,
        **SMALL,
    ),
    "Supervised": lambda: Supervised(num_classes=4, **SMALL),
    "SDCLR": lambda: SDCLR(proj_hidden_dim=16, proj_output_dim=8, **SMALL),
    "BCL-D": lambda: BCLD(proj_hidden_dim=16, proj_output_dim=8, **SMALL),
    "SimCLR+GH+TS": lambda: SimCLR(
        proj_hidden_dim=16,
        proj_output_dim=8,
        **SMALL,
        gh=GHConfig(num_anchors=6, warmup_epochs=1, ramp_epochs=1, prior_every=1, iterations=30),
        temperature_schedule=TemperatureSchedule(0.1, 1.0, period_epochs=4),
    ),
}
# methods whose state changes at an epoch boundary run two epochs of 2 steps (re-pruning, BCL's
# weights, GH's prior and weight, the temperature of epoch 2)
STEPS = {"SDCLR": 4, "BCL-D": 4, "SimCLR+GH+TS": 4}


def train(method: str, devices: int, out: Path) -> None:
    """Train ``method`` and save its weights to ``out`` (rank 0). ``devices`` 2: called on each rank
    of :func:`_two_ranks`, which started the processes (Lightning sees them as launched externally, as
    under torchrun, and launches none)."""
    pl.seed_everything(0)
    model = METHODS[method]()
    data = FixedViewsData(devices)
    trainer = pl.Trainer(
        max_steps=STEPS.get(method, 2),
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        use_distributed_sampler=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FrozenBNAndSave(out)],
        default_root_dir=out.parent,
    )
    trainer.fit(model, datamodule=data)


def _two_ranks(rank: int, port: int, out: str) -> None:
    """One of 2 gloo processes that train every method in turn: one start-up (imports, process
    group) for all of them instead of a ``ddp_spawn`` per method."""
    as_torchrun_rank(rank, port)
    for method in sorted(METHODS):
        train(method, 2, Path(out) / f"{method}.pt")


@pytest.fixture(scope="module")
def two_process_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_two_ranks, args=(free_port(), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_equal_one(method: str, tmp_path: Path, two_process_weights: Path) -> None:
    train(method, 1, tmp_path / "one.pt")
    one = torch.load(tmp_path / "one.pt")
    two = torch.load(two_process_weights / f"{method}.pt")
    moved = [
        k for k in one if one[k].is_floating_point() and not torch.equal(one[k], METHODS[method]().state_dict()[k])
    ]
    assert moved, "training changed nothing"
    assert one.keys() == two.keys()
    for key in one:
        if key == "queue":  # the same keys, enqueued in rank order instead of batch order
            torch.testing.assert_close(one[key].sort(0).values, two[key].sort(0).values, atol=1e-5, rtol=1e-4)
            continue
        torch.testing.assert_close(one[key], two[key], atol=1e-5, rtol=1e-4, msg=lambda m, k=key: f"{k}: {m}")
