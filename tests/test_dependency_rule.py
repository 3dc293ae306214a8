"""docs/design.md §2: the method side never imports ``datamodules`` and ``datamodules`` never
imports ``lightning_ssl``; checked on the imports a fresh interpreter actually performs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD_SIDE = ("methods", "losses", "weights", "eval", "cluster", "optim")
WIRING = {"lightning_ssl.methods.dnc_pipeline"}  # a pipeline wires data and methods, as the sweep runner


def loaded_after_import(modules: list[str], forbidden: str) -> list[str]:
    """The modules of ``modules`` whose import (each in a fresh interpreter) loads ``forbidden``."""
    code = (
        "import importlib, sys\n"
        f"bad = []\nfor name in {modules!r}:\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(name)\n"
        f"    if any(m == {forbidden!r} or m.startswith({forbidden!r} + '.') for m in set(sys.modules) - before):\n"
        "        bad.append(name)\n"
        "        break\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def modules_of(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return sorted(f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__")


def test_the_method_side_never_imports_datamodules() -> None:
    modules = [m for sub in METHOD_SIDE for m in modules_of(f"lightning_ssl.{sub}") if m not in WIRING]
    assert len(modules) > 40
    assert loaded_after_import(modules, "datamodules") == []


def test_datamodules_never_import_lightning_ssl() -> None:
    modules = modules_of("datamodules")
    assert len(modules) > 10
    assert loaded_after_import(modules, "lightning_ssl") == []


def test_the_check_sees_a_wiring_module() -> None:
    assert loaded_after_import(sorted(WIRING), "datamodules") == sorted(WIRING)
