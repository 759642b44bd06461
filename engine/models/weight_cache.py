"""The model's prepared weights, cached as safetensors so that a fresh process is ready in about a second.

Preparing a GGUF takes 20-40 s here: the `gguf` reader parses the 262k-entry vocabulary into thousands of
small arrays, then every tensor is dequantized (and given its decode copy: int4 or int8 linears, int4
head). The cache keeps the result, exactly the tensors `loader.build` takes, with what else loading needs (the
config, whether the model is instruction-tuned, the GGUF's fingerprints for bank files). Reading it
memory-maps the file (with torch: nothing is copied): pages are shared with the OS page cache, and those the
model never touches (most of the embedding table) never occupy memory; the few rows it looks up are read
with pread (TableRows).

An entry is `<cache>/weights/<key>.safetensors` plus `<key>.json`, written after it and naming its size
and CRC32; the key hashes the GGUF's resolved path, size, times and inode with the variant (dtype, decode
copies) and this format's version, so a changed model file gets a new entry (the old one is removed).
A truncated, altered or unreadable entry fails its size, CRC or tensor check and is rebuilt; files are
written to a temporary name, fsynced and renamed, so a crash never leaves a half entry under a key.
Checking reads the whole entry once per start (about 0.3 s here); the pages it reads stay in the OS
page cache, not in the process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import weakref
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import save_file

from engine.errors import ModelLoadError
from engine.models.config import ModelConfig
from engine.models.gguf_file import GGUFFile
from engine.models.loader import build, check_state, four_bit_linears, gguf_state, model_config
from ingest.atomic import write_atomic

log = logging.getLogger(__name__)

FORMAT = 9  # bump when what is stored changes meaning
LOCK = ".build.lock"
ALIGN = 64  # bytes: the int8 kernels load vectors aligned to this (a misaligned weight crashes them)
_READ_CHUNK = 16 * 2**20
# a process short of file descriptors or memory cannot read an entry; the entry is kept (mapping errors
# come from torch as RuntimeError, kept too)
_SHORT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR}


class WeightCacheError(Exception):
    """A cache entry is missing, incomplete or damaged (internal: the entry is rebuilt)."""


@dataclass
class Prepared:
    """Everything `Runtime.load` needs from a model file, from the GGUF or from the cache."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    instruct: bool  # the file carries a chat template
    fingerprints: tuple[str, str] | None  # (model, tokenizer), GGUFFile.fingerprints; None: not computed
    embed_rows: TableRows | None = None  # the embedding table's rows in the entry file (read from the cache)


class TableRows:
    """Rows of a (N, K) table stored in a file, read with pread instead of through a memory map.

    A mapped row costs far more resident memory than its bytes: the kernel maps the neighbouring pages of
    the page cache with it (fault-around, large folios). Looking up 2,000 distinct tokens in the default
    model's mapped embedding table (1,280 bytes a row) made 218 MB of it resident; read this way, a lookup
    keeps only its rows. Used for token embeddings and for rescoring the int4 head's shortlist."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, int], dtype: torch.dtype):
        self._fd = os.open(path, os.O_RDONLY)  # kept open: the entry may be replaced, this inode stays
        weakref.finalize(self, os.close, self._fd)
        self.offset, (self.n, self.k), self.dtype = offset, shape, dtype
        self.row_bytes = self.k * dtype.itemsize

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows (*ids.shape, K) of integer `ids`. Raises IndexError for an id outside the table."""
        flat = ids.reshape(-1).tolist()
        if not flat:
            return torch.empty(*ids.shape, self.k, dtype=self.dtype)
        buffer = bytearray(len(flat) * self.row_bytes)
        view = memoryview(buffer)
        for i, row in enumerate(flat):
            if not 0 <= row < self.n:
                raise IndexError(f"row {row} is outside the table of {self.n}")
            data = os.pread(self._fd, self.row_bytes, self.offset + row * self.row_bytes)
            if len(data) != self.row_bytes:
                raise OSError(f"the weight cache entry ended inside row {row}")
            view[i * self.row_bytes : (i + 1) * self.row_bytes] = data
        return torch.frombuffer(buffer, dtype=self.dtype).view(*ids.shape, self.k)


def from_gguf(path: Path, dtype: torch.dtype, bits: int, fingerprints: bool) -> Prepared:
    """Dequantize the GGUF at `path` (and add the decode copies unless `bits` is 0: the linears' in int4
    or int8, the head's in int4). Raises ModelLoadError, UnsupportedModelError."""
    f = GGUFFile.open(path)
    config = model_config(f)
    state = gguf_state(f, config, dtype)
    if bits:
        model = build(config, state, torch.device("cpu"), path)
        model.quantize(bits, four_bit_linears(f, config))
        state = model.state_dict()
    return Prepared(
        config, state, "tokenizer.chat_template" in f.metadata, f.fingerprints() if fingerprints else None
    )


def load_or_build(folder: Path, path: Path, dtype: torch.dtype, bits: int) -> Prepared:
    """The cached preparation of the GGUF at `path`, building (and caching) it first when there is none
    or it is damaged. One process builds at a time (a file lock in `folder`); one that waited reads what
    the other wrote. A cache that cannot be written (a full or read-only disk) is logged and skipped.
    Raises what `from_gguf` raises."""
    path = path.resolve()  # once: a link re-pointed meanwhile cannot mix two models in one entry
    stamp = _stamp(path)
    key = _key(path, stamp, dtype, bits)
    try:
        return _read(folder, key, path, stamp, dtype)
    except WeightCacheError as exc:
        log.info("weight cache: %s; preparing %s", exc, path.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(folder / LOCK)
        lock.acquire()
    except OSError as exc:
        log.warning("weight cache: %s cannot be used (%s); preparing %s without it", folder, exc, path.name)
        return from_gguf(path, dtype, bits, fingerprints=True)
    try:
        try:
            return _read(folder, key, path, stamp, dtype)  # written meanwhile by the lock's holder
        except WeightCacheError:
            pass
        prepared = from_gguf(path, dtype, bits, fingerprints=True)
        if _stamp(path) != stamp:
            log.warning("weight cache: %s changed while it was prepared; not cached", path.name)
            return prepared
        try:
            _sweep(folder, str(path), stamp)
            _write(folder, key, path, stamp, prepared)
        except (OSError, SafetensorError) as exc:
            _remove(folder, key)
            log.warning("weight cache: could not write %s (%s); the next start prepares again", folder, exc)
            return prepared
        try:  # the mapped entry, so that the prepared copy in memory (the size of the file) is freed
            return _read(folder, key, path, stamp, dtype)
        except WeightCacheError as exc:
            log.warning("weight cache: %s just after writing it; using the prepared weights", exc)
            return prepared
    finally:
        lock.release()


def _key(path: Path, stamp: list[int], dtype: torch.dtype, bits: int) -> str:
    """The entry's name: the model file's identity (resolved path, `_stamp`), the variant, `_build`."""
    source = [FORMAT, str(path), *stamp, str(dtype), bits, *_build(bool(bits))]
    return hashlib.sha256(json.dumps(source).encode()).hexdigest()[:32]


def _build(copies: bool) -> list[str]:
    """What the int4 head's packed layout depends on (with decode copies): the torch build and the CPU's
    vector instructions (AVX512 and AVX2 kernels interleave rows differently). An entry packed for
    another reads as garbage without failing any check, so it gets another key."""
    return [torch.__version__, torch.backends.cpu.get_cpu_capability(), platform.machine()] if copies else []


def _stamp(path: Path) -> list[int]:
    """What changes when the file does: size, times (a copy that keeps the modification time still gets
    a new change time) and inode (a replacement file)."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _read(folder: Path, key: str, path: Path, stamp: list[int], dtype: torch.dtype) -> Prepared:
    """The entry `key` for the model at (resolved) `path` with `stamp`, in `dtype`. Raises
    WeightCacheError (a damaged entry is removed first)."""
    tensors, sidecar = folder / f"{key}.safetensors", folder / f"{key}.json"
    try:
        if sidecar.exists() and not sidecar.is_file():  # a folder or a FIFO (reading one would block)
            raise WeightCacheError(f"entry {key} has a sidecar that is not a file")
        meta = json.loads(sidecar.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise WeightCacheError(f"entry {key} is not of format {FORMAT}")
        if meta["source"] != str(path) or meta["stamp"] != stamp:
            raise WeightCacheError(f"entry {key} was prepared from another file")
        if tensors.stat().st_size != meta["size"] or _crc32(tensors) != meta["crc32"]:
            raise WeightCacheError(f"entry {key} is damaged (size or checksum)")
        state, offsets = _map(tensors)
        fields = meta["config"]
        config = ModelConfig(**{**fields, "local_layers": tuple(fields["local_layers"])})
        check_state(config, state, tensors)
        table = state["embed.weight"]
        if table.dtype != dtype:
            raise ValueError(f"{tensors} holds {table.dtype} weights, not {dtype}")
        rows = TableRows(tensors, offsets["embed.weight"], tuple(table.shape), table.dtype)
        return Prepared(config, state, bool(meta["instruct"]), tuple(meta["fingerprints"]), rows)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise WeightCacheError(f"no entry {key}") from exc
    except RecursionError as exc:  # a sidecar nested too deep for the JSON parser
        _remove(folder, key)
        raise WeightCacheError(f"entry {key} is unreadable ({exc})") from exc
    except (MemoryError, RuntimeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in _SHORT_OF_RESOURCES:
            _remove(folder, key)
            raise WeightCacheError(f"entry {key} is unreadable ({exc})") from exc
        raise WeightCacheError(f"entry {key} cannot be read now ({exc})") from exc  # kept: not damage
    except (ValueError, KeyError, TypeError, ArithmeticError, AssertionError, ModelLoadError) as exc:
        _remove(folder, key)  # unreadable JSON, header, fields or tensors
        raise WeightCacheError(f"entry {key} is unreadable ({exc})") from exc
    except WeightCacheError:
        _remove(folder, key)
        raise


_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "I8": torch.int8,
    "U8": torch.uint8,
}


def _map(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The tensors of a safetensors file as views of one private memory map of it, and each one's offset
    in the file.

    Not `safetensors.torch.load_file`: it makes 177 MB of the default model's entry resident at load (the
    pages it reads to set tensors up), and resident memory is a target here; mapping the file with torch
    touches nothing until the model reads it. The header is checked (known dtypes, sizes that match the
    shapes, offsets inside the file): ValueError otherwise. A tensor whose offset is not a multiple of
    ALIGN (after one with an odd size) is copied: the int8 kernels crash on misaligned weights."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length <= size - 8:
            raise ValueError(f"{path} has a header length of {length} bytes in a file of {size}")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a header that is not a table of tensors")
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    base, state, offsets = 8 + length, {}, {}
    entries = sorted(
        ((name, e) for name, e in header.items() if name != "__metadata__"), key=lambda e: _offsets(e[1])
    )
    expected_start = 0  # tensors tile the data region exactly, in order, as safetensors writes them
    for name, entry in entries:
        dtype, shape, (start, end) = _DTYPES[entry["dtype"]], entry["shape"], _offsets(entry)
        if not (isinstance(shape, list) and all(_natural(d) for d in shape)):
            raise ValueError(f"{path}: tensor {name} has the shape {shape!r}")
        nbytes = math.prod(shape) * dtype.itemsize
        if start != expected_start or end - start != nbytes or base + end > size:
            raise ValueError(f"{path}: tensor {name} has offsets {start}-{end} for {nbytes} bytes")
        expected_start = end
        raw = torch.empty(0, dtype=torch.uint8).set_(storage, base + start, (nbytes,), (1,))
        raw = raw.clone() if (base + start) % ALIGN else raw
        state[name], offsets[name] = raw.view(dtype).view(shape), base + start
    if base + expected_start != size:
        raise ValueError(f"{path} has {size - base - expected_start} bytes after its last tensor")
    return state, offsets


def _natural(value: object) -> bool:
    return type(value) is int and value >= 0


def _offsets(entry: dict) -> tuple[int, int]:
    start, end = entry["data_offsets"]
    if not (_natural(start) and _natural(end)):
        raise ValueError(f"offsets {start!r}-{end!r} are not byte positions")
    return start, end


def _write(folder: Path, key: str, path: Path, stamp: list[int], prepared: Prepared) -> None:
    """Write the entry (the caller holds the lock): tensors first, then the sidecar that completes it.
    A failed write (a full disk) leaves none of its partial files behind."""
    tensors = folder / f"{key}.safetensors"
    partial, aligned = folder / f".{key}.safetensors.partial", folder / f".{key}.aligned.partial"
    try:
        save_file({k: t.contiguous() for k, t in prepared.state.items()}, partial)
        _align(partial, aligned)
        os.replace(aligned, tensors)
    finally:
        _unlink(partial)
        _unlink(aligned)
    meta = {
        "format": FORMAT,
        "source": str(path),
        "stamp": stamp,
        "size": tensors.stat().st_size,
        "crc32": _crc32(tensors),
        "config": asdict(prepared.config),
        "instruct": prepared.instruct,
        "fingerprints": list(prepared.fingerprints or ()),
        "build": _build("head_int4" in prepared.state),
    }
    write_atomic(folder / f"{key}.json", json.dumps(meta))  # fsynced, renamed, folder fsynced


def _align(source: Path, target: Path) -> None:
    """Copy a safetensors file with its header padded (spaces, as safetensors pads) so that the data
    starts at a multiple of ALIGN: every tensor in it is then aligned when the file is memory-mapped
    (safetensors aligns the data only to 8 bytes; the default model's tensor sizes are all multiples of
    64, and a tensor that ends up misaligned is copied when read)."""
    with source.open("rb") as src, target.open("wb") as dst:
        length = int.from_bytes(src.read(8), "little")
        header = src.read(length)
        pad = -(8 + length) % ALIGN
        dst.write((length + pad).to_bytes(8, "little") + header + b" " * pad)
        shutil.copyfileobj(src, dst, _READ_CHUNK)
        dst.flush()
        os.fsync(dst.fileno())
    source.unlink()


def _sweep(folder: Path, source: str, stamp: list[int]) -> None:
    """Remove (the caller holds the lock) what no load can use: entries of another format, of an earlier
    version of this model file or of a file that is gone, tensors without their sidecar, and anything
    else left in the folder (partial files of a build that was killed)."""
    complete: set[str] = set()
    for sidecar in folder.glob("*.json"):
        try:
            if not sidecar.is_file():  # a folder or a FIFO (reading one would block)
                raise ValueError(f"{sidecar} is not a file")
            meta = json.loads(sidecar.read_text())
            old = meta["source"] == source and meta["stamp"] != stamp
            other_build = meta["build"] not in ([], _build(True))  # a torch or CPU this one is not
            stale = meta["format"] != FORMAT or old or other_build or not Path(meta["source"]).exists()
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            stale = True
        if stale:
            _remove(folder, sidecar.stem)
        else:
            complete.add(sidecar.stem)
    for item in folder.iterdir():
        if item.name != LOCK and item.stem not in complete:
            _unlink(item)


def _remove(folder: Path, key: str) -> None:
    _unlink(folder / f"{key}.json")
    _unlink(folder / f"{key}.safetensors")


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # a folder the user cannot write: the entry stays unusable, and is skipped
        log.warning("weight cache: could not remove %s (%s)", path, exc)


def _crc32(path: Path) -> int:
    """CRC32 of a file, read in chunks (not mapped, so that checking adds nothing to resident memory)."""
    crc, buffer = 0, bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    with path.open("rb") as f:
        while n := f.readinto(buffer):
            crc = zlib.crc32(view[:n], crc)
    return crc
