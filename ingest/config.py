"""Ingest settings: the `[ingest]` table of config.toml, each key optional, defaults for the rest."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ingest.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class IngestConfig:
    max_file_mb: float = 50  # larger files are ignored: a reference library, not a disk image
    max_chunk_tokens: int = 128  # Memory³ references are at most 128 tokens
    quiet_s: float = 0.5  # the watcher waits for this much calm after the last event...
    max_latency_s: float = 5.0  # ...but never holds a burst longer than this
    lease_s: float = 600.0  # a claimed job returns to the queue if not finished by then

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @classmethod
    def load(cls, path: Path) -> IngestConfig:
        return load_section(cls, "ingest", path)


_KINDS: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}


def load_section(cls: type[T], section: str, path: Path) -> T:
    """Read the `[section]` table of the config.toml at `path` into the dataclass `cls`:
    a missing file or key means its default; an unknown key, a wrong type (a number for a text
    setting, anything but true or false for a switch), NaN or infinity, or a number
    below its range (positive; 0 or more where 0 is the default, meaning "off") is a clear error."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f).get(section, {})
    except FileNotFoundError:
        return cls()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}).") from exc
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{path}: [{section}] has no setting '{key}' (known: {', '.join(fields)}).")
        kind = _KINDS[str(fields[key].type)]
        if kind is str:
            if not isinstance(value, str):
                raise ConfigError(f"{path}: [{section}] {key} must be a string, not {value!r}.")
        elif kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: [{section}] {key} must be true or false, not {value!r}.")
        else:
            off = fields[key].default == 0  # 0 means "off" for this setting
            number = not isinstance(value, bool) and isinstance(value, kind) and math.isfinite(value)
            if not number or value < 0 or (value == 0 and not off):
                want = "a number, 0 or more" if off else "a positive number"
                raise ConfigError(f"{path}: [{section}] {key} must be {want}, not {value!r}.")
    return cls(**table)
