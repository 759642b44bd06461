"""Where memory3 keeps its files: XDG folders via platformdirs, all three under M3_HOME when it is set."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "memory3"


def _home() -> Path | None:
    home = os.environ.get("M3_HOME")
    return Path(home).expanduser() if home else None


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP))


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP))
