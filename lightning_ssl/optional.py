"""Optional dependencies, imported on use with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` saying which ``lightning-ssl[extra]`` provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the optional package '{module}', which is not installed: "
            f"pip install 'lightning-ssl[{extra}]'"
        ) from err
