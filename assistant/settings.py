"""The app's settings in config.toml: `[app]` (the theme) and `[keys]` (assistant/actions.py), both
checked before the first frame, so a typo is one sentence instead of a surprise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.theme import BUILTIN_THEMES

from assistant import actions
from ingest.config import load_section
from ingest.errors import ConfigError


@dataclass(frozen=True)
class AppConfig:
    theme: str = "textual-dark"  # any Textual theme; "ansi-dark" and "ansi-light" use the terminal's colours


@dataclass(frozen=True)
class Settings:
    theme: str
    keymap: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Settings:
        """ConfigError with one sentence for an unknown theme or a bad [keys] table."""
        app = load_section(AppConfig, "app", path)
        if app.theme not in BUILTIN_THEMES:
            known = ", ".join(BUILTIN_THEMES)
            raise ConfigError(f"{path}: [app] theme {app.theme!r} is not a Textual theme (known: {known}).")
        return cls(app.theme, actions.load_keymap(path))
