"""Engine settings: the `[engine]` table of config.toml, each key optional."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from engine.models.quantized import DECODE_BITS
from ingest.config import load_section
from ingest.errors import ConfigError


@dataclass(frozen=True)
class EngineConfig:
    profile: str = "dense-parallel"  # new memories' profile (engine/memory.py), chosen by m3 bench qa
    bank_budget_gb: float = 2.0  # memories beyond it are written when first retrieved (cold start)
    retrieved: int = 5  # memories (or RAG chunks) per 64-token chunk, as in Memory³
    max_answer_tokens: int = 128
    decode_weights: str = "int8"  # CPU decode steps' copies of the linears: int4, int8 or bf16 (exact)
    reader: str = (
        "trained"  # how memories are read: "trained" (assets/, for the bundled model), "base" or a path
    )
    reread: bool = True  # a memory answer naming what nothing it read says is answered again from text

    @property
    def bank_budget_bytes(self) -> int:
        return int(self.bank_budget_gb * 2**30)

    @classmethod
    def load(cls, path: Path) -> EngineConfig:
        """ConfigError with one sentence for a bad setting (an unknown decode_weights among them)."""
        config = load_section(cls, "engine", path)
        if config.decode_weights not in DECODE_BITS:
            known = ", ".join(DECODE_BITS)
            raise ConfigError(
                f"{path}: [engine] decode_weights '{config.decode_weights}' is not one of {known}."
            )
        return replace(config, reader=_reader_setting(config.reader, path))


READER_NAMES = ("trained", "base")  # `[engine] reader` values that name no file


def _reader_setting(value: str, path: Path) -> str:
    """ "trained" or "base" (any case), or a reader file's absolute path: `~` expanded, a relative path
    taken from the folder of config.toml."""
    if value.strip().lower() in READER_NAMES:
        return value.strip().lower()
    if not value.strip():
        raise ConfigError(f"{path}: [engine] reader must be trained, base or a reader file's path, not ''.")
    file = Path(value).expanduser()
    return str(file if file.is_absolute() else path.parent / file)


@dataclass(frozen=True)
class ServiceConfig:
    """The `[service]` table: the engine service's lifetime and its optional TCP listener."""

    idle_minutes: float = 15.0  # exit after this long with no request, no answer and no background work
    tcp_port: int = 0  # also listen on 127.0.0.1 at this port (with a token); 0: the Unix socket only

    @property
    def idle_s(self) -> float:
        return self.idle_minutes * 60

    @classmethod
    def load(cls, path: Path) -> ServiceConfig:
        return load_section(cls, "service", path)
