"""One clean, gradient-free pass of a model over an evaluation loader.

Under ``torch.distributed`` the batches are dealt out (rank ``r`` takes batches ``i`` with
``i % world_size == r``), gathered, and sorted by sample index, so every rank ends with exactly the
single-process result. The loader is expected to be deterministic (no shuffling, the eval
transform), as the datamodules' probe and test loaders are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, Sampler

from lightning_ssl import distributed


class _EveryNthBatch(Sampler[list[int]]):
    """The batches ``i`` of a batch sampler with ``i % world == rank``."""

    def __init__(self, batch_sampler: Iterable[list[int]], rank: int, world: int) -> None:
        self.batch_sampler, self.rank, self.world = batch_sampler, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for i, batch in enumerate(self.batch_sampler):
            if i % self.world == self.rank:
                yield batch

    def __len__(self) -> int:
        return len(range(self.rank, len(self.batch_sampler), self.world))  # type: ignore[arg-type]


def _local_batches(loader: Iterable, rank: int, world: int) -> Iterable:
    """This rank's batches. A map-style ``DataLoader`` is re-built on a sharded batch sampler so
    that the other ranks' batches are never loaded; any other iterable is iterated and filtered."""
    if world == 1:
        return loader
    if isinstance(loader, DataLoader) and loader.batch_sampler is not None:
        kwargs: dict[str, Any] = dict(
            batch_sampler=_EveryNthBatch(loader.batch_sampler, rank, world),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
            persistent_workers=loader.persistent_workers,
        )
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        return DataLoader(loader.dataset, **kwargs)
    return (batch for i, batch in enumerate(loader) if i % world == rank)


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(batch, Sequence) or len(batch) < 3:
        size = len(batch) if isinstance(batch, Sequence) else "?"
        raise ValueError(
            "evaluation batches must be (image, target, index) tuples (the batch contract in "
            f"docs/design.md §3), got {type(batch).__name__} of length {size}"
        )
    return batch[0], torch.as_tensor(batch[1]), torch.as_tensor(batch[2])


def _progress(total: int | None, enabled: bool, description: str):  # noqa: ANN202
    if not enabled:
        return nullcontext(None)
    progress = Progress(transient=True)
    progress.add_task(description, total=total)
    return progress


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    progress: bool = False,
    shard: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features ``model(image)`` of every sample of ``loader``, in eval mode, without gradients.

    Args:
        model: returns ``B×D`` features from a batch of images (a method's ``forward``).
        loader: yields ``(image, target, index)`` batches (the eval batch contract).
        device: where the model runs and the results live (default: the model's device).
        progress: show a rich progress bar (rank 0 only).
        shard: deal the batches out over ranks and gather (default: whenever a process group
            with more than one rank is initialised). Pass ``False`` when only some ranks call this.

    Returns:
        ``(feats N×D float32, labels N int64, indices N int64)``, sorted by sample index, on
        ``device``; identical on every rank. Each submodule's train/eval mode is restored after.
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    sharded = distributed.is_distributed() if shard is None else shard
    rank, world = (distributed.rank(), distributed.world_size()) if sharded else (0, 1)
    batches = _local_batches(loader, rank, world)
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]

    modes = {module: module.training for module in model.modules()}
    model.eval()
    feats, labels, indices = [], [], []
    try:
        with _progress(total, progress and rank == 0, "extracting features") as bar:
            for batch in batches:
                image, target, index = _split_batch(batch)
                feats.append(model(image.to(device, non_blocking=True)).flatten(1).float())
                labels.append(target.to(device).long())
                indices.append(index.to(device).long())
                if bar is not None:
                    bar.advance(bar.task_ids[0])
    finally:
        for module, training in modes.items():
            module.train(training)

    out = _concat_or_empty(feats, labels, indices, device, sharded)
    if sharded:
        out = tuple(distributed.all_gather(t) for t in out)  # type: ignore[assignment]
    order = out[2].argsort(stable=True)
    return out[0][order], out[1][order], out[2][order]


def _concat_or_empty(
    feats: list[torch.Tensor],
    labels: list[torch.Tensor],
    indices: list[torch.Tensor],
    device: torch.device,
    sharded: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate this rank's results; a rank that got no batch (fewer batches than ranks) still
    joins the gather, with a ``0×D`` tensor whose ``D`` it learns from the other ranks."""
    dim = torch.tensor([feats[0].shape[1] if feats else -1], device=device)
    if sharded:
        dim = distributed.all_gather(dim).max()
    if int(dim) < 0:
        raise ValueError("the loader yielded no batch: nothing to extract features from")
    if feats:
        return torch.cat(feats), torch.cat(labels), torch.cat(indices)
    empty = torch.empty(0, dtype=torch.long, device=device)
    return torch.empty(0, int(dim), device=device), empty, empty.clone()


@torch.no_grad()
def feature_dim(model: nn.Module, loader: Iterable) -> int:
    """``D`` of the module's ``B×D`` features: its ``feature_dim`` attribute when it has one
    (every ``SSLMethod``), else measured with one forward pass, in eval mode, over the first batch of
    ``loader`` (an ``(image, target, index)`` evaluation loader); train/eval modes are restored."""
    dim = getattr(model, "feature_dim", None)
    if isinstance(dim, int):
        return dim
    image, _, _ = _split_batch(next(iter(loader)))
    param = next(model.parameters(), None)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        out = model(image[:2].to(param.device if param is not None else "cpu"))
    finally:
        for module, training in modes.items():
            module.train(training)
    return int(out.flatten(1).shape[1])
