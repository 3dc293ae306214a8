"""The sweep's training clock: an epoch resumed in its middle (Lightning calls no
``on_train_epoch_start`` then) is timed from its first batch, and a partial epoch counts for its
share of ``time_per_epoch_s``."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from lightning_ssl.sweep.pipelines import Throughput


def test_an_epoch_resumed_mid_way_is_timed_from_its_first_batch() -> None:
    trainer = SimpleNamespace(world_size=1, num_training_batches=10)
    batch = (torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    meter = Throughput()
    started = time.perf_counter()
    for i in range(5, 10):  # the second half of an epoch: no on_train_epoch_start
        meter.on_train_batch_start(trainer, None, batch, i)
        time.sleep(0.01)
        meter.on_train_batch_end(trainer, None, None, batch, i)
    meter.on_train_epoch_end(trainer, None)
    elapsed = time.perf_counter() - started
    record = meter.record()
    assert 0.04 <= record["train_seconds"] <= elapsed  # not the machine's uptime
    assert record["train_images"] == 20 and record["session_epochs"] == 1
    assert record["time_per_epoch_s"] == record["train_seconds"] * 2  # 20 of the epoch's 40 images
    assert record["images_per_s"] == 20 / record["train_seconds"]


def test_a_record_whose_clock_exceeds_its_wall_time_shows_no_epoch_time() -> None:
    import math

    from lightning_ssl.sweep.record import RunRecord

    def record(train_seconds: float) -> RunRecord:
        train = {"train_seconds": train_seconds, "time_per_epoch_s": train_seconds / 30}
        data = {"run_id": "r", "axes": {"method": "m"}, "metrics": {}, "train": train, "wall_time_s": 900.0}
        return RunRecord.from_json(data)

    assert record(870.0).time_per_epoch_s == 29.0
    assert math.isnan(record(25501.0).time_per_epoch_s)  # counted from the machine's boot
