"""Atomic file writes (a reader, or a crash, never sees a half-written result) and a strict YAML
reader (a syntax error or a duplicated key is one line naming ``file:line:col``)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # 0-d tensors
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value``: sorted keys, no spaces, non-JSON values as ``str``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any, digits: int) -> str:
    """The first ``digits`` hex digits of the SHA-1 of ``value``'s :func:`canonical_json`."""
    return hashlib.sha1(canonical_json(value).encode()).hexdigest()[:digits]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file in the same folder, fsync it, then ``os.replace`` it
    over ``path``. On any error (disk full included) the temporary file is removed, the previous
    content of ``path`` is untouched, and the error propagates with the path named."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from a shared group
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path}: {err.strerror}; nothing was overwritten") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented JSON (NaN allowed, numpy/tensors converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_default, sort_keys=False) + "\n")


class YAMLInputError(ValueError):
    """A YAML file that does not parse, or that repeats a key: one line, ``file:line:col: what``."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last one
    silently; YAML 1.2 §3.2.1.1 requires keys to be unique)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # resolve `<<` merge keys first: a merged key may be overridden
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            break
        if first is not None:
            mark = key_node.start_mark
            raise YAMLInputError(
                f"{mark.name}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r} (first at "
                f"line {first.start_mark.line + 1}); keep one of them"
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file safely and strictly: a syntax error or a duplicated key is a
    :class:`YAMLInputError` of one line, ``FILE:LINE:COL: problem``, instead of PyYAML's
    multi-line report (or, for a duplicated key, a silent "last one wins").

    Raises:
        FileNotFoundError: ``path`` does not exist.
        YAMLInputError: the text is not valid YAML or repeats a key.
    """
    path = Path(path)
    text = path.read_text()
    try:
        return yaml.load(text, Loader=_loader_for(path))  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = str(err.problem or err.context)
        opened = err.context_mark
        if err.context and err.problem and opened is not None:
            what += f" ({err.context} opened at line {opened.line + 1}, column {opened.column + 1})"
        raise YAMLInputError(f"{where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as err:
        raise YAMLInputError(f"{path}: YAML error: {err}") from None


def _loader_for(path: Path) -> type[_StrictLoader]:
    """The strict loader, with marks naming ``path`` (PyYAML names a string stream ``<unicode string>``)."""

    class Named(_StrictLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.name = str(path)

    return Named
