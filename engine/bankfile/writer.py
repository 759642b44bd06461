"""Writing a bank file as a stream: header, sections one after another, then the manifest and footer.

Why a stream: a bank can be larger than memory, so each section is compressed and hashed as it is
written, and its place in the manifest is known only when it ends; hence the manifest comes last and the
footer says where it is. Why a partial file: the final name only ever holds a complete, fsynced file.
Writing goes to `.<name>.partial-<random>` beside it, which is renamed over the final name by `finish`
and deleted on any error or `abort`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np
import zstandard

from engine.bankfile.layout import (
    MAX_MANIFEST_BYTES,
    MEMORY_FRAME,
    BankFileError,
    align,
    pack_footer,
    pack_header,
)
from engine.bankfile.manifest import SECTION_CODEC, SECTION_NAMES, Manifest, Section, check_manifest
from engine.bankfile.records import is_hex64
from ingest.atomic import fsync_dir

ZSTD_LEVEL = 3


class SectionWriter:
    """One section being written: bytes in, compressed (or not), hashed and counted on the way out."""

    def __init__(self, out: BankWriter, name: str, codec: str):
        self.name, self.codec = name, codec
        self.records = 0
        self.raw_length = 0
        self.length = 0
        self._out = out
        self._sha = hashlib.sha256()
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj() if codec == "zstd" else None
        self._json = msgspec.json.Encoder()

    def write(self, data: bytes, records: int = 0) -> None:
        """Raw section bytes, holding `records` whole records (for callers that frame records themselves)."""
        self.raw_length += len(data)
        self.records += records
        self._emit(self._zstd.compress(data) if self._zstd is not None else data)

    def write_line(self, record: Any) -> None:
        """One JSON-lines record (a dict or a msgspec Struct)."""
        self.write(self._json.encode(record) + b"\n", records=1)

    def write_memory(self, key: str, payload: bytes) -> None:
        """One memories record: the chunk hash it is the memory of, and its codec.encode() bytes."""
        if not is_hex64(key):
            raise ValueError(f"a memory key must be 64 lowercase hex digits, not {key!r}")
        self.write(MEMORY_FRAME.pack(len(payload), key.encode()) + payload, records=1)

    def write_vector(self, key: str, vector: np.ndarray) -> None:
        """One vectors record: the chunk hash and its embedding, as little-endian float32."""
        if not is_hex64(key):
            raise ValueError(f"a vector key must be 64 lowercase hex digits, not {key!r}")
        self.write(key.encode() + np.ascontiguousarray(vector, dtype="<f4").tobytes(), records=1)

    def _emit(self, data: bytes) -> None:
        if data:
            self._sha.update(data)
            self.length += len(data)
            self._out._write(data)

    def _close(self, offset: int) -> Section:
        if self._zstd is not None:
            self._emit(self._zstd.flush())
        return Section(
            name=self.name,  # type: ignore[arg-type]
            codec=self.codec,  # type: ignore[arg-type]
            offset=offset,
            length=self.length,
            raw_length=self.raw_length,
            sha256=self._sha.hexdigest(),
            records=self.records,
        )


class BankWriter:
    """A bank file being written. Use as a context manager; `finish` publishes it, anything else deletes it.

    with BankWriter(path) as w:
        with w.section("documents") as s:
            s.write_line({...})
        ...
        w.finish(producer=..., scope=..., model=..., profile=..., embedder=..., chunker=...)
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial-{secrets.token_hex(6)}")
        self.bytes_written = 0  # for progress: everything written so far, header included
        self.sections: list[Section] = []
        self._file: BinaryIO | None = None
        self._open_section = False
        self._done = False

    def __enter__(self) -> BankWriter:
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self._file = os.fdopen(fd, "wb")
        self._write(pack_header())
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if not self._done:
            self.abort()

    @contextmanager
    def section(self, name: str, codec: str | None = None) -> Iterator[SectionWriter]:
        """A section to stream records into; it is closed (and placed in the table) when the block ends."""
        codec = codec or SECTION_CODEC.get(name, "")
        if name not in SECTION_NAMES:
            raise ValueError(f"{name!r} is not a bank file section")
        if codec != SECTION_CODEC[name]:
            raise ValueError(
                f"the {name} section is stored with codec {SECTION_CODEC[name]!r}, not {codec!r}"
            )
        if any(s.name == name for s in self.sections) or self._open_section:
            raise ValueError(f"the {name} section is already written or another section is open")
        offset = self._pad()
        writer = SectionWriter(self, name, codec)
        self._open_section = True
        try:
            yield writer
        finally:
            self._open_section = False
        self.sections.append(writer._close(offset))

    def add_section(self, name: str, records: Iterable[Any], codec: str | None = None) -> Section:
        """A whole section from an iterable: dicts/Structs for documents and chunks, (hash, payload) for
        memories, (hash, vector) for vectors."""
        with self.section(name, codec) as s:
            for record in records:
                if name == "memories":
                    s.write_memory(*record)
                elif name == "vectors":
                    s.write_vector(*record)
                else:
                    s.write_line(record)
        return self.sections[-1]

    def finish(self, **fields: Any) -> Path:
        """Write the manifest (from `fields`: producer, scope, model, profile, embedder, chunker and
        optionally created; counts, sections, format and version are filled in) and the footer, then
        publish the file under its final name. Returns that name."""
        if self._file is None or self._done or self._open_section:
            raise ValueError("a bank file can be finished once, inside its with block, with no section open")
        counts = {name: 0 for name in SECTION_NAMES}
        counts.update({s.name: s.records for s in self.sections})
        fields.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
        fields.update(
            format="m3bank",
            version=(1, 0),
            counts=counts,
            sections=[msgspec.to_builtins(s) for s in self.sections],
        )
        manifest = msgspec.convert(fields, Manifest, from_attributes=True)
        check_manifest(manifest)
        missing = [n for n in ("documents", "chunks") if manifest.section(n) is None]
        if missing:
            raise BankFileError(f"A bank file needs a {missing[0]} section.")
        text = msgspec.json.encode(manifest)
        if len(text) > MAX_MANIFEST_BYTES:
            raise BankFileError(f"The bank file's manifest would be larger than {MAX_MANIFEST_BYTES} bytes.")
        offset = self._pad()
        self._write(text)
        self._pad()
        self._write(pack_footer(offset, text, hashlib.sha256(text).digest()))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        self._done = True
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Stop and delete the partial file; the final name is left as it was."""
        self._done = True
        if self._file is not None:
            self._file.close()
        self.partial.unlink(missing_ok=True)

    def _pad(self) -> int:
        """Zero-fill up to the next aligned offset; returns it."""
        end = align(self.bytes_written)
        self._write(bytes(end - self.bytes_written))
        return end

    def _write(self, data: bytes) -> None:
        assert self._file is not None, "a BankWriter is used inside its with block"
        self._file.write(data)
        self.bytes_written += len(data)


__all__ = ["BankWriter", "SectionWriter"]
