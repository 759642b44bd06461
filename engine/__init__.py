"""memory3's engine: everything that needs a model. The assistant uses only what is exported here.

`Engine` is imported on first use, so that a client importing `engine.service.client` (no torch, no
model) does not pull in the model runtime.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from engine.errors import M3Error

if TYPE_CHECKING:
    from engine.facade import Engine

__all__ = ["Engine", "M3Error", "package_version"]


def package_version() -> str:
    """memory3's version, as the service reports it and bank files record their producer."""
    try:
        return version("memory3")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def __getattr__(name: str) -> object:
    if name == "Engine":
        from engine.facade import Engine

        return Engine
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
