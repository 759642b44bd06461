"""The model's prepared weights, cached as safetensors so that a fresh process is ready in about a second.

Preparing a GGUF takes 20-40 s here: the `gguf` reader parses the 262k-entry vocabulary into thousands of
small arrays, then every tensor is dequantized (and given its int8 decode copy). The cache keeps the
result, exactly the tensors `loader.build` takes, with what else loading needs (the config, whether the
model is instruction-tuned, the GGUF's fingerprints for bank files). Reading it memory-maps the file
(safetensors does not copy): pages are shared with the OS page cache, and those the model never touches
(most of the embedding table) never occupy memory.

An entry is `<cache>/weights/<key>.safetensors` plus `<key>.json`, written after it and naming its size
and CRC32; the key hashes the GGUF's resolved path, size and modification time with the variant (dtype,
int8 copies) and this format's version, so a replaced model file gets a new entry (the old one is
removed). A truncated, altered or unreadable entry fails its size or CRC check and is rebuilt; files
are written to a temporary name, fsynced and renamed, so a crash never leaves a half entry under a key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.models.config import ModelConfig
from engine.models.gguf_file import GGUFFile
from engine.models.loader import build, gguf_state, model_config

log = logging.getLogger(__name__)

FORMAT = 2  # bump when what is stored changes meaning
_READ_CHUNK = 16 * 2**20


class WeightCacheError(Exception):
    """A cache entry is missing, incomplete or damaged (internal: the entry is rebuilt)."""


@dataclass
class Prepared:
    """Everything `Runtime.load` needs from a model file, from the GGUF or from the cache."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    instruct: bool  # the file carries a chat template
    fingerprints: tuple[str, str] | None  # (model, tokenizer), GGUFFile.fingerprints; None: not computed


def from_gguf(path: Path, dtype: torch.dtype, quantize: bool, fingerprints: bool) -> Prepared:
    """Dequantize the GGUF at `path` (and add int8 decode copies if `quantize`). Raises ModelLoadError,
    UnsupportedModelError."""
    f = GGUFFile.open(path)
    config = model_config(f)
    state = gguf_state(f, config, dtype)
    if quantize:
        model = build(config, state, torch.device("cpu"), path)
        model.quantize()
        state = model.state_dict()
    return Prepared(
        config, state, "tokenizer.chat_template" in f.metadata, f.fingerprints() if fingerprints else None
    )


def load_or_build(folder: Path, path: Path, dtype: torch.dtype, quantize: bool) -> Prepared:
    """The cached preparation of the GGUF at `path`, building (and caching) it first when there is none
    or it is damaged. A cache that cannot be written (a full or read-only disk) is logged and skipped."""
    key = _key(path, dtype, quantize)
    try:
        return _read(folder, key)
    except WeightCacheError as exc:
        log.info("weight cache: %s; preparing %s", exc, path.name)
    prepared = from_gguf(path, dtype, quantize, fingerprints=True)
    try:
        _write(folder, key, path, prepared)
    except OSError as exc:
        log.warning(
            "weight cache: could not write %s (%s); the next start prepares the model again", folder, exc
        )
    return prepared


def _key(path: Path, dtype: torch.dtype, quantize: bool) -> str:
    source = [FORMAT, str(path.resolve()), *_stamp(path), str(dtype), quantize]
    return hashlib.sha256(json.dumps(source).encode()).hexdigest()[:32]


def _read(folder: Path, key: str) -> Prepared:
    tensors, sidecar = folder / f"{key}.safetensors", folder / f"{key}.json"
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("format") != FORMAT:
            raise WeightCacheError(f"entry {key} has format {meta.get('format')}")
        if tensors.stat().st_size != meta["size"] or _crc32(tensors) != meta["crc32"]:
            raise WeightCacheError(f"entry {key} is damaged (size or checksum)")
        state = load_file(tensors)
        config = meta["config"]
        config["local_layers"] = tuple(config["local_layers"])
        return Prepared(ModelConfig(**config), state, bool(meta["instruct"]), tuple(meta["fingerprints"]))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise WeightCacheError(f"no entry {key}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable JSON, header or fields
        _remove(folder, key)
        raise WeightCacheError(f"entry {key} is unreadable ({exc})") from exc
    except WeightCacheError:
        _remove(folder, key)
        raise


def _write(folder: Path, key: str, path: Path, prepared: Prepared) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.partial"):
        stale.unlink(missing_ok=True)
    source, stamp = str(path.resolve()), _stamp(path)
    _remove_older_entries(folder, source, stamp)
    tensors = folder / f"{key}.safetensors"
    partial = folder / f".{key}.safetensors.partial"
    save_file({k: t.contiguous() for k, t in prepared.state.items()}, partial)
    _fsync(partial)
    os.replace(partial, tensors)
    meta = {
        "format": FORMAT,
        "source": source,
        "stamp": stamp,
        "size": tensors.stat().st_size,
        "crc32": _crc32(tensors),
        "config": asdict(prepared.config),
        "instruct": prepared.instruct,
        "fingerprints": list(prepared.fingerprints or ()),
    }
    partial = folder / f".{key}.json.partial"
    partial.write_text(json.dumps(meta))
    _fsync(partial)
    os.replace(partial, folder / f"{key}.json")
    _fsync(folder)


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _remove_older_entries(folder: Path, source: str, stamp: list[int]) -> None:
    """Drop the entries made from an earlier version of the same model file (any variant)."""
    for sidecar in folder.glob("*.json"):
        try:
            meta = json.loads(sidecar.read_text())
            stale = meta.get("source") == source and meta.get("stamp") != stamp
        except (OSError, ValueError, AttributeError):
            stale = True  # unreadable: nothing can use it
        if stale:
            _remove(folder, sidecar.stem)


def _remove(folder: Path, key: str) -> None:
    (folder / f"{key}.json").unlink(missing_ok=True)
    (folder / f"{key}.safetensors").unlink(missing_ok=True)


def _crc32(path: Path) -> int:
    """CRC32 of a file, read in chunks (not mapped, so that checking adds nothing to resident memory)."""
    crc, buffer = 0, bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    with path.open("rb") as f:
        while n := f.readinto(buffer):
            crc = zlib.crc32(view[:n], crc)
    return crc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
