"""Reading a sweep spec file: nothing but PyYAML, so that ``lssl sweep`` reports a missing file or a
YAML typo in about a second, before it loads torch and Lightning to check the runs (5-9 s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_ssl.io import load_yaml


def read_spec_file(path: str | Path) -> Any:
    """The parsed YAML of a spec file (``{}`` when empty); :func:`~lightning_ssl.sweep.spec.load_spec`
    checks its shape.

    Raises:
        FileNotFoundError: no such file (the message says where the shipped specs are).
        YAMLInputError: a syntax error or a duplicated key, as ``FILE:LINE:COL: problem``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} does not exist (shipped specs are in benchmarks/*.yaml)")
    return load_yaml(path) or {}
