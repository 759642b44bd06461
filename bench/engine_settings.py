"""The engine settings a benchmark run takes from the command line (`--profile`, `--reader`): checked
before anything loads, then written as the `[engine]` table of the run's own temporary home."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from engine.config import READER_NAMES
from engine.errors import ReaderFileError
from engine.memory.profiles import named
from engine.memory.reader import check_file
from ingest.paths import Home


def engine_settings(profile: str | None, reader: str | None) -> dict[str, str]:
    """`[engine]` settings for a memory profile and a reader (a reader file's path, or "trained" / "base"),
    the ones given. An unknown profile is UnknownProfileError; a reader file that is missing, a folder, or
    named in bytes a config.toml cannot hold (not UTF-8) is ReaderFileError; whether a file fits the model
    needs the model, and is the engine's check."""
    if profile is not None:
        named(profile)
    settings = {"profile": profile, "reader": _reader_setting(reader)}
    return {key: value for key, value in settings.items() if value is not None}


def write_settings(home: Home, settings: dict[str, str]) -> None:
    """`settings` as the `[engine]` table of `home`'s config.toml (nothing written when there are none)."""
    if not settings:
        return
    home.config_file.parent.mkdir(parents=True, exist_ok=True)
    home.config_file.write_text(tomli_w.dumps({"engine": settings}), encoding="utf-8")


def _reader_setting(reader: str | None) -> str | None:
    """A reader named on the command line: a path is the caller's (from the working folder), not one
    relative to the run's temporary config.toml."""
    if reader is None or reader.strip().lower() in READER_NAMES:
        return reader  # a name, or nothing: the engine's default
    path = Path(reader).expanduser().resolve()
    check_file(path)
    try:
        return str(path).encode("utf-8").decode()
    except UnicodeEncodeError:
        raise ReaderFileError(
            f"The memory reader {str(path)!r} has a name that is not valid UTF-8, which a config.toml "
            "cannot hold; rename it."
        ) from None
