"""What determines a stage of the DnC pipeline, as a JSON fingerprint (docs/design.md §9).

A stage's fingerprint holds the identity of the pre-training data (the datamodule's class and
init options, e.g. profile, head order and seeds, and checksums of the selected indices and
targets), the options of the method and of the stage, and the checksum of the previous stages'
outputs. :func:`differing_keys` names what changed between a recorded and a current fingerprint,
so that a resumed run never silently reuses a stage computed from something else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from a JSON file (tuples become lists, unknown objects strings)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def array_sha1(array: Any) -> str:
    """SHA-1 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.tobytes())
    return digest.hexdigest()


def checkpoint_sha1(path: str | Path) -> str:
    """SHA-1 of the weights and buffers of a Lightning checkpoint (its ``state_dict``, keys sorted).

    The tensors, not the file's bytes: a checkpoint also stores timings and logger state that
    differ between two runs computing the same weights.
    """
    state = torch.load(str(path), map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.sha1()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_identity(datamodule: Any, num_samples: int) -> dict[str, Any]:
    """The identity of a datamodule's pre-training set: class, init options (``hparams``: profile,
    imbalance ratio, head order, seeds, batch size, ...), size, and checksums of the positions of
    the selected images in their source (``source_indices``) and of their targets, when the
    datamodule exposes them (in-memory and image-folder datasets do)."""
    cls = type(datamodule)
    identity: dict[str, Any] = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "hparams": jsonable(dict(getattr(datamodule, "hparams", {}) or {})),
        "num_samples": int(num_samples),
    }
    splits = getattr(datamodule, "splits", None)
    targets = getattr(splits, "pretrain_targets", None)
    if targets is not None:
        identity["targets_sha1"] = array_sha1(np.asarray(targets, dtype=np.int64))
    indices = getattr(datamodule, "source_indices", None)
    if indices is not None:
        identity["indices_sha1"] = array_sha1(np.asarray(indices, dtype=np.int64))
    return identity


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differing_keys(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ (or exist on one side only), sorted."""
    if recorded is None:
        return ["fingerprint (none recorded: the stage was written by an older version)"]
    old, new = _flatten(jsonable(recorded)), _flatten(jsonable(current))
    return sorted(k for k in old.keys() | new.keys() if old.get(k, "<missing>") != new.get(k, "<missing>"))
