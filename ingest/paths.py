"""Where memory3 keeps its files: XDG folders via platformdirs, all three under M3_HOME when it is set.

The environment is read once, at the edge (`Home.from_env` in the CLI and the service's entry point);
everything below takes a `Home` or the paths it names, so a benchmark or a test opens its own home
without touching `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "memory3"
HOME_ENV = "M3_HOME"


@dataclass(frozen=True)
class Home:
    """memory3's three folders: settings, data (catalog, bank, index, logs, the service's socket) and
    cache (the assembled model, the exported embedder)."""

    config: Path
    data: Path
    cache: Path

    @classmethod
    def at(cls, root: str | Path) -> Home:
        """All three folders under one root (what M3_HOME selects)."""
        root = Path(root).expanduser().resolve()
        return cls(root / "config", root / "data", root / "cache")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Home:
        """`M3_HOME` when set, else the platform's user folders."""
        root = environ.get(HOME_ENV)
        if root:
            return cls.at(root)
        return cls(
            Path(platformdirs.user_config_dir(APP)),
            Path(platformdirs.user_data_dir(APP)),
            Path(platformdirs.user_cache_dir(APP)),
        )

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def catalog(self) -> Path:
        return self.data / "catalog.db"

    @property
    def log_file(self) -> Path:
        return self.data / "logs" / "m3.log"

    def make_private(self) -> None:
        """Create the data folder and its log folder readable by their owner only (0700): they hold the
        user's documents' text, chats and questions. OSError when they cannot be created."""
        for folder in (self.data, self.log_file.parent):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
