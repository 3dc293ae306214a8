"""Evaluation under two gloo processes equals the single-process result.

Each rank extracts features from its shard of the batches, gathers, and then runs the kNN and the
linear probe; the OnlineLinearProbe gathers each step's features so both ranks train one head.
The same function computes the single-process reference in the test process itself.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_ssl import distributed
from lightning_ssl.eval import (
    OnlineLinearProbe,
    extract_features,
    fit_linear_probe,
    group_report,
    knn_predict,
    predict,
)
from tests.distributed_helpers import free_port

C, D = 6, 5
GROUPS = {"many": np.array([0, 1]), "medium": np.array([2, 3]), "few": np.array([4, 5])}


class Recording(Dataset):
    """``(image, target, index)`` samples whose index is a permutation of the position (so sorting
    by index is visible), recording which positions this process loaded."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, C, (n,), generator=g)
        self.x = torch.eye(C, D)[self.y] * 2 + torch.randn(n, D, generator=g)
        self.index = torch.randperm(n, generator=g) + 100
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.loaded.append(i)
        return self.x[i], self.y[i], self.index[i]


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():  # non-trivial running stats, so train-mode BN would change the features
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model


def _split(t: torch.Tensor, cut: float = 0.6) -> torch.Tensor:
    """This rank's share of a global batch: rank 0 the first 60 %, rank 1 the rest (unequal)."""
    if distributed.world_size() == 1:
        return t
    k = int(len(t) * cut)
    return t[:k] if distributed.rank() == 0 else t[k:]


class _FakeModule:
    device = torch.device("cpu")

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_dict(self, *args: Any, **kwargs: Any) -> None:
        pass


def _evaluate() -> dict[str, Any]:
    model = _model().train()
    bank_set, query_set = Recording(23, seed=1), Recording(17, seed=2)
    bank = extract_features(model, DataLoader(bank_set, batch_size=4))
    query = extract_features(model, DataLoader(query_set, batch_size=3))
    out: dict[str, Any] = {
        "bank": bank,
        "query": query,
        "loaded": sorted(bank_set.loaded),
        "still_training": model.training and model[1].training,
    }
    # one batch for two ranks: rank 1 has nothing and must still join the gathers
    out["tiny"] = extract_features(model, DataLoader(Recording(3, seed=4), batch_size=4))
    out["knn"] = knn_predict(query[0], bank[0], bank[1], C, k=7)
    layer, _ = fit_linear_probe(bank[0], bank[1], C, epochs=20, batch_size=8)
    out["linear"] = group_report(predict(layer, query[0]), query[1], C, GROUPS, "thirds", "linear")

    # Online probe: three global training batches of 10 (two unknown labels), split 6 / 4.
    g = torch.Generator().manual_seed(3)
    trainer = SimpleNamespace(
        sanity_checking=False,
        datamodule=SimpleNamespace(num_classes=C, class_groups=GROUPS, group_rule="thirds"),
    )
    probe = OnlineLinearProbe(lr=0.3)
    for step in range(3):
        feats, target = torch.randn(10, 4, generator=g), torch.randint(-1, C, (10,), generator=g)
        batch = ([None], _split(target), _split(torch.arange(10)))
        probe.on_train_batch_end(trainer, _FakeModule(), {"features": _split(feats)}, batch, step)
    out["head"] = (probe.head.weight.detach().clone(), probe.head.bias.detach().clone())

    # Online probe validation: 12 test samples; rank 1 also gets sample 0 again, as the padding
    # of a DistributedSampler does, and the duplicate must not count twice.
    val_feats, val_y = torch.randn(12, 4, generator=g), torch.randint(0, C, (12,), generator=g)
    idx = (
        torch.arange(12)
        if distributed.world_size() == 1
        else [torch.arange(7), torch.tensor([7, 8, 9, 10, 11, 0])][distributed.rank()]
    )
    probe.on_validation_epoch_start(trainer, _FakeModule())
    for b, part in enumerate(idx.split(4)):
        probe.on_validation_batch_end(
            trainer,
            _FakeModule(),
            {"features": val_feats[part], "target": val_y[part]},
            (None, val_y[part], part),
            b,
        )
    probe.on_validation_epoch_end(trainer, _FakeModule())
    out["online"] = probe.last_metrics
    return out


def _worker(rank: int, world: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        torch.save(_evaluate(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[dict, list[dict]]:  # noqa: ANN001
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, f"tcp://127.0.0.1:{free_port()}", str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _evaluate()
    finally:
        torch.set_num_threads(threads)
    return single, ranks


@pytest.mark.ddp
def test_sharded_features_equal_single_process(results) -> None:  # noqa: ANN001
    single, ranks = results
    for r in ranks:
        for key in ("bank", "query", "tiny"):
            feats, labels, index = r[key]
            assert torch.allclose(feats, single[key][0], atol=1e-6)
            assert torch.equal(labels, single[key][1]) and torch.equal(index, single[key][2])
        assert r["still_training"]
    assert torch.equal(single["bank"][2], torch.arange(100, 123))  # sorted by sample index
    # each rank loaded only its own batches (0, 2, 4 / 1, 3, 5 of size 4)
    assert ranks[0]["loaded"] == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]
    assert ranks[1]["loaded"] == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22]


@pytest.mark.ddp
def test_knn_and_linear_probe_equal_single_process(results) -> None:  # noqa: ANN001
    single, ranks = results
    for r in ranks:
        assert torch.equal(r["knn"], single["knn"])
        assert r["linear"] == pytest.approx(single["linear"], abs=1e-9, nan_ok=True)


@pytest.mark.ddp
def test_online_probe_trains_one_head_on_both_ranks(results) -> None:  # noqa: ANN001
    single, ranks = results
    assert torch.equal(ranks[0]["head"][0], ranks[1]["head"][0])
    assert torch.equal(ranks[0]["head"][1], ranks[1]["head"][1])
    assert torch.allclose(ranks[0]["head"][0], single["head"][0], atol=1e-6)
    assert single["head"][0].abs().sum() > 0
    for r in ranks:
        assert r["online"] == pytest.approx(single["online"], abs=1e-9, nan_ok=True)
        assert len(r["online"]) == 7


def test_extract_features_restores_each_module_mode() -> None:
    model = _model().train()
    model[1].eval()  # e.g. a frozen part kept in eval mode by its owner
    extract_features(model, DataLoader(Recording(5, seed=0), batch_size=2))
    assert model.training and model[0].training and not model[1].training


def test_extract_features_uses_eval_mode_and_sorts_by_index() -> None:
    model, data = _model(), Recording(6, seed=0)
    feats, labels, index = extract_features(model.train(), DataLoader(data, batch_size=3))
    order = torch.argsort(data.index)  # row i of the result: the sample with the i-th smallest index
    with torch.no_grad():
        expected = model.eval()(data.x)[order]  # train-mode BN on batches of 3 would differ
    assert torch.equal(index, data.index[order]) and torch.equal(labels, data.y[order])
    assert torch.allclose(feats, expected, atol=1e-6)


def test_extract_features_rejects_two_tuple_batches() -> None:
    loader = DataLoader(torch.utils.data.TensorDataset(torch.randn(4, D), torch.zeros(4)), batch_size=2)
    with pytest.raises(ValueError, match=r"\(image, target, index\)"):
        extract_features(_model(), loader)


def test_extract_features_with_progress_bar() -> None:
    data = Recording(5, seed=0)
    feats, _, _ = extract_features(_model(), DataLoader(data, batch_size=2), progress=True)
    assert feats.shape == (5, 4) and feats.dtype == torch.float32
