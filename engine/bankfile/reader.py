"""Reading a bank file that may be damaged or hostile: validate the structure first, then stream sections.

`BankReader.open` reads only the header, footer, manifest and the few zero bytes between sections, and
refuses anything out of place, in a fixed order (docs/bank-format.md, "Validation order"). The section
iterators then stream one section at a time while hashing its stored bytes; a section's SHA-256 can only be
checked at its end, so records are yielded before their section is known intact: run `verify()` once
before acting on anything (it is the importer's first pass). Every size is checked against a cap before
it is allocated, zstd output is bounded by the declared raw length (a bomb stops at its first excess
block), and the reader never writes, never unpickles, and never uses a name from the file as a path.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np
import zstandard

from engine.bankfile.layout import (
    ALIGN,
    END_MAGIC,
    FOOTER,
    FORMAT_MAJOR,
    HASH_HEX,
    HEADER,
    MAGIC,
    MAX_LINE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MEMORY_RECORD,
    MAX_TEXT_SECTION_RAW,
    MAX_ZSTD_RATIO,
    MEMORY_FRAME,
    MIN_CHUNK_LINE,
    MIN_DOCUMENT_LINE,
    MIN_FILE_BYTES,
    BankFileCancelled,
    BankFileError,
    align,
    check_cancel,
)
from engine.bankfile.manifest import REQUIRED_SECTIONS, SECTION_CODEC, Manifest, Section, decode_manifest
from engine.bankfile.records import (
    ChunkRecord,
    DocumentRecord,
    MemoryExpectation,
    check_chunk,
    check_document,
    is_hex64,
)
from ingest.chunker import text_hash

BLOCK = 1 << 16  # bytes read or decompressed at a time
ByteProgress = Callable[[int], None]  # bytes read since the last call


class BankReader:
    """A validated bank file, ready to stream. Holds no open file: each iterator opens its own."""

    def __init__(self, path: Path, size: int, manifest: Manifest, manifest_offset: int):
        self.path, self.size, self.manifest, self.manifest_offset = path, size, manifest, manifest_offset
        self._chunk_hashes: frozenset[bytes] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BankReader:
        """Check everything but the sections' contents; BankFileError (one sentence) if anything is wrong."""
        path = Path(path)
        try:
            with open_regular(path) as f:
                return cls._validate(path, f)
        except OSError as e:
            raise BankFileError(f"The bank file cannot be read ({e.strerror or e}).") from e

    @classmethod
    def _validate(cls, path: Path, f: BinaryIO) -> BankReader:
        size = os.fstat(f.fileno()).st_size
        if size < MIN_FILE_BYTES:
            raise BankFileError(f"The file is too short to be a bank file ({size} bytes).")
        magic, major, minor, reserved = HEADER.unpack(_read_at(f, 0, HEADER.size))
        if magic != MAGIC:
            raise BankFileError("The file is not a memory3 bank file (its first bytes are wrong).")
        if major != FORMAT_MAJOR:
            raise BankFileError(
                f"This bank was written by a newer memory3 (format {major}.{minor}); "
                "upgrade memory3 to import it."
                if major > FORMAT_MAJOR
                else f"This bank file has format {major}.{minor}, which no memory3 reads."
            )
        if any(reserved):
            raise BankFileError("The bank file's header has non-zero reserved bytes.")
        end_magic, m_offset, m_length, m_sha, end_reserved = FOOTER.unpack(
            _read_at(f, size - FOOTER.size, FOOTER.size)
        )
        if end_magic != END_MAGIC:
            raise BankFileError("The bank file is truncated or its footer is damaged.")
        if any(end_reserved):
            raise BankFileError("The bank file's footer has non-zero reserved bytes.")
        footer_at = size - FOOTER.size
        if m_length > MAX_MANIFEST_BYTES:
            raise BankFileError(f"The bank file's manifest is larger than {MAX_MANIFEST_BYTES} bytes.")
        if m_offset % ALIGN or m_offset < HEADER.size or m_offset + align(m_length) != footer_at:
            raise BankFileError("The bank file's footer places the manifest where it cannot be.")
        text = _read_at(f, m_offset, m_length)
        if hashlib.sha256(text).digest() != m_sha:
            raise BankFileError("The bank file's manifest fails its checksum.")
        _zeros(f, m_offset + m_length, footer_at, "after the manifest")
        manifest = decode_manifest(text)
        if tuple(manifest.version) != (major, minor):
            raise BankFileError(
                f"The bank file's header says format {major}.{minor} but its manifest says "
                f"{manifest.version[0]}.{manifest.version[1]}."
            )
        _check_table(manifest, m_offset)
        end = HEADER.size
        for s in sorted(manifest.sections, key=lambda s: s.offset):
            _zeros(f, end, s.offset, f"before the {s.name} section")
            end = s.offset + s.length
        _zeros(f, end, m_offset, "before the manifest")
        return cls(path, size, manifest, m_offset)

    # Streaming

    def documents(
        self, cancel: threading.Event | None = None, _progress: ByteProgress | None = None
    ) -> Iterator[DocumentRecord]:
        """The documents in order, each checked: ids 0..n-1, path rules, no (label, path) twice."""
        section = self._section("documents")
        seen: set[tuple[str, str]] = set()
        decoder = msgspec.json.Decoder(DocumentRecord)

        def parse(line: bytes, n: int) -> DocumentRecord:
            doc = _decode_line(decoder, line, section, n)
            check_document(doc, n)
            if (doc.label, doc.path) in seen:
                raise BankFileError(f"The bank file lists document {doc.label}/{doc.path} twice.")
            seen.add((doc.label, doc.path))
            return doc

        yield from self._lines(section, parse, cancel, _progress)

    def chunks(
        self, cancel: threading.Event | None = None, _progress: ByteProgress | None = None
    ) -> Iterator[ChunkRecord]:
        """The chunks in order: grouped by document (ascending), ords 0..n-1 within each, each hash the
        hash of its text (so one hash never names two texts)."""
        section = self._section("chunks")
        n_documents = self.manifest.counts.documents
        hashes: set[bytes] = set()
        document, next_ord = -1, 0
        decoder = msgspec.json.Decoder(ChunkRecord)

        def parse(line: bytes, n: int) -> ChunkRecord:
            nonlocal document, next_ord
            chunk = _decode_line(decoder, line, section, n)
            if not 0 <= chunk.document < n_documents:
                raise BankFileError(
                    f"The bank file has a chunk of document {chunk.document}, which it lacks."
                )
            if chunk.document < document:
                raise BankFileError(f"The bank file's chunks of document {chunk.document} are out of order.")
            if chunk.document > document:
                document, next_ord = chunk.document, 0
            if chunk.ord != next_ord:
                raise BankFileError(
                    f"The bank file's chunk {chunk.ord} of document {document} "
                    f"comes where chunk {next_ord} should."
                )
            next_ord += 1
            check_chunk(chunk)
            if text_hash(chunk.text) != chunk.hash:
                raise BankFileError(
                    f"The bank file's chunk {chunk.ord} of document {document} "
                    "has a hash that is not its text's."
                )
            hashes.add(bytes.fromhex(chunk.hash))
            return chunk

        yield from self._lines(section, parse, cancel, _progress)
        self._chunk_hashes = frozenset(hashes)

    def memories(
        self, cancel: threading.Event | None = None, _progress: ByteProgress | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """(chunk hash, payload) per memory; payloads are codec bytes, not yet decoded (see
        MemoryExpectation.decode). Each hash is a chunk's, at most once."""
        section = self.manifest.section("memories")
        if section is None:
            return
        known = self.chunk_hashes()
        seen: set[bytes] = set()
        with open_regular(self.path) as f:
            src = _Source(f, section, _progress)
            try:
                for _ in range(section.records):
                    check_cancel(cancel, "Reading the bank file was cancelled.")
                    length, raw_key = MEMORY_FRAME.unpack(src.read_exact(MEMORY_FRAME.size))
                    if length > MAX_MEMORY_RECORD:
                        raise BankFileError(
                            f"The bank file has a memory record of {length} bytes, over the cap."
                        )
                    key = _key(raw_key, known, seen, "memory")
                    yield key, src.read_exact(length)
                src.finish()
            except BankFileError as e:
                src.blame(e)
                raise

    def vectors(
        self, cancel: threading.Event | None = None, _progress: ByteProgress | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(chunk hash, float32 vector of the embedder's dim) per vector; each hash a chunk's, once."""
        section = self.manifest.section("vectors")
        if section is None:
            return
        known = self.chunk_hashes()
        seen: set[bytes] = set()
        dim = self.manifest.embedder.dim
        with open_regular(self.path) as f:
            src = _Source(f, section, _progress)
            try:
                for _ in range(section.records):
                    check_cancel(cancel, "Reading the bank file was cancelled.")
                    raw = src.read_exact(HASH_HEX + 4 * dim)
                    key = _key(raw[:HASH_HEX], known, seen, "vector")
                    vector = np.frombuffer(raw, dtype="<f4", offset=HASH_HEX).astype(np.float32)
                    if not np.isfinite(vector).all():
                        raise BankFileError(
                            f"The bank file's vector for chunk {key[:12]} holds NaN or infinity."
                        )
                    yield key, vector
                src.finish()
            except BankFileError as e:
                src.blame(e)
                raise

    def chunk_hashes(self) -> frozenset[bytes]:
        """The digests of every chunk hash in the file (streams the chunks section once if not yet read)."""
        if self._chunk_hashes is None:
            for _ in self.chunks():
                pass
        assert self._chunk_hashes is not None
        return self._chunk_hashes

    def verify(
        self,
        on_progress: Callable[[str, int, int], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        expect: MemoryExpectation | None = None,
        on_record: Callable[[str, object], None] | None = None,
    ) -> None:
        """Stream every section once, checking everything: the importer's first pass. on_progress(section,
        bytes done, bytes total) as it goes (totals over all sections); on_record(section, record) per
        record (DocumentRecord, ChunkRecord, or the chunk hash of a memory or vector). With `expect`, every
        memory payload is also decoded and checked against it. BankFileCancelled if `cancel` is set
        (checked between records)."""
        total = sum(s.length for s in self.manifest.sections)
        done = 0
        for name in ("documents", "chunks", "memories", "vectors"):

            def progress(n: int, name: str = name) -> None:
                nonlocal done
                done += n
                if on_progress is not None:
                    on_progress(name, done, total)

            for record in getattr(self, name)(cancel, progress):
                if name == "memories":
                    key, payload = record
                    if expect is not None:
                        expect.decode(key, payload)
                    record = key
                elif name == "vectors":
                    record = record[0]
                if on_record is not None:
                    on_record(name, record)

    def _section(self, name: str) -> Section:
        """A section the table has (documents and chunks always are: open() checked)."""
        return self.manifest.section(name)  # type: ignore[return-value]

    def _lines(
        self,
        section: Section,
        parse: Callable[[bytes, int], object],
        cancel: threading.Event | None,
        progress: ByteProgress | None,
    ) -> Iterator[Any]:
        """parse(line, n) of each JSON line of a zstd section, bounded: output past raw_length or a line
        past MAX_LINE_BYTES stops it; the record count, raw length and SHA-256 are checked at the end. A
        fault found on the way is reported as the section failing its checksum when it does."""
        name = section.name
        with open_regular(self.path) as f:
            src = _Source(f, section, progress)
            stream = zstandard.ZstdDecompressor().stream_reader(
                src, read_size=BLOCK, read_across_frames=True, closefd=False
            )
            buf = bytearray()
            total = records = scanned = 0
            try:
                while True:
                    try:
                        block = stream.read(BLOCK)
                    except zstandard.ZstdError as e:
                        raise BankFileError(f"The bank file's {name} section is damaged ({e}).") from e
                    if not block:
                        break
                    total += len(block)
                    if total > section.raw_length:
                        raise BankFileError(
                            f"The bank file's {name} section decompresses past its declared size."
                        )
                    buf += block
                    start, pos = 0, scanned  # bytes before `scanned` hold no newline
                    while (nl := buf.find(b"\n", pos)) >= 0:
                        check_cancel(cancel, "Reading the bank file was cancelled.")
                        if records == section.records:
                            raise BankFileError(
                                f"The bank file's {name} section holds more than its "
                                f"{section.records} records."
                            )
                        yield parse(bytes(buf[start:nl]), records)
                        records += 1
                        start = pos = nl + 1
                    del buf[:start]
                    scanned = len(buf)
                    if len(buf) > MAX_LINE_BYTES:
                        raise BankFileError(
                            f"The bank file's {name} section has a record over {MAX_LINE_BYTES} bytes."
                        )
                src.finish()
            except BankFileError as e:
                src.blame(e)
                raise
            if buf:
                raise BankFileError(f"The bank file's {name} section ends inside a record.")
            if total != section.raw_length:
                raise BankFileError(f"The bank file's {name} section is shorter than its declared size.")
            if records != section.records:
                raise BankFileError(
                    f"The bank file's {name} section holds {records} records, not {section.records}."
                )


class _Source:
    """A section's stored bytes as a file, read at most to its end, hashed and counted as they go by."""

    def __init__(self, f: BinaryIO, section: Section, progress: ByteProgress | None):
        self.f, self.section, self.progress = f, section, progress
        self.remaining = section.length
        self.sha = hashlib.sha256()
        f.seek(section.offset)

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        data = self.f.read(n) if n else b""
        if len(data) != n:
            raise BankFileError(f"The bank file's {self.section.name} section is cut short.")
        self.remaining -= n
        self.sha.update(data)
        if self.progress is not None and data:
            self.progress(len(data))
        return data

    def read_exact(self, n: int) -> bytes:
        if n > self.remaining:
            raise BankFileError(f"The bank file's {self.section.name} section ends inside a record.")
        return self.read(n)

    def finish(self) -> None:
        """Check that the whole section was read and hashes to what the table says."""
        if self.remaining and self.section.codec == "none":
            raise BankFileError(
                f"The bank file's {self.section.name} section has bytes after its last record."
            )
        while self.remaining:
            self.read(BLOCK)
        if self.sha.hexdigest() != self.section.sha256:
            raise BankFileError(f"The bank file's {self.section.name} section fails its checksum.")

    def blame(self, error: BankFileError) -> None:
        """Raise "fails its checksum" instead of `error` if the section is damaged: a flipped byte that
        broke a record is damage, not a bad record (reads the rest of the section to know)."""
        if isinstance(error, BankFileCancelled):
            return
        try:
            while self.remaining:
                self.read(BLOCK)
        except BankFileError:
            return
        if self.sha.hexdigest() != self.section.sha256:
            raise BankFileError(f"The bank file's {self.section.name} section fails its checksum.") from error


def _check_table(manifest: Manifest, manifest_offset: int) -> None:
    """The section table against the layout and the caps, before any section is read."""
    sections = manifest.sections
    names = [s.name for s in sections]
    for name in names:
        if names.count(name) > 1:
            raise BankFileError(f"The bank file lists its {name} section twice.")
    for name in REQUIRED_SECTIONS:
        if name not in names:
            raise BankFileError(f"The bank file has no {name} section.")
    counts = msgspec.structs.asdict(manifest.counts)
    for name, count in counts.items():
        if name not in names and count:
            raise BankFileError(f"The bank file counts {count} {name} but has no {name} section.")
    for s in sections:
        _check_section(s, manifest, manifest_offset, counts[s.name])
    end = HEADER.size
    for s in sorted(sections, key=lambda s: s.offset):
        if s.offset < end:
            raise BankFileError(f"The bank file's {s.name} section overlaps the one before it.")
        if s.offset != align(end):
            raise BankFileError(
                f"The bank file has {s.offset - end} unaccounted bytes before its {s.name} section."
            )
        end = s.offset + s.length
    if manifest_offset != align(end):
        raise BankFileError(
            f"The bank file has {manifest_offset - end} unaccounted bytes before its manifest."
        )


def _check_section(s: Section, manifest: Manifest, manifest_offset: int, count: int) -> None:
    what = f"The bank file's {s.name} section"
    if s.codec != SECTION_CODEC[s.name]:
        raise BankFileError(f"{what} uses codec {s.codec}, not {SECTION_CODEC[s.name]}.")
    if min(s.offset, s.length, s.raw_length, s.records) < 0:
        raise BankFileError(f"{what} has a negative offset, length or count.")
    if s.offset % ALIGN:
        raise BankFileError(f"{what} does not start on a {ALIGN}-byte boundary.")
    if s.offset < HEADER.size or s.offset + s.length > manifest_offset:
        raise BankFileError(f"{what} lies outside the file's data area.")
    if not is_hex64(s.sha256):
        raise BankFileError(f"{what} has a malformed SHA-256.")
    if s.records != count:
        raise BankFileError(f"{what} holds {s.records} records but the manifest counts {count}.")
    if s.codec == "zstd":
        if s.raw_length > MAX_TEXT_SECTION_RAW:
            raise BankFileError(
                f"{what} declares {s.raw_length} bytes, over the {MAX_TEXT_SECTION_RAW}-byte cap."
            )
        if s.raw_length > s.length * MAX_ZSTD_RATIO:
            raise BankFileError(f"{what} claims to compress more than {MAX_ZSTD_RATIO} to 1.")
        least = MIN_DOCUMENT_LINE if s.name == "documents" else MIN_CHUNK_LINE
        if s.records * least > s.raw_length:
            raise BankFileError(
                f"{what} claims {s.records} records, more than its {s.raw_length} bytes can hold."
            )
    else:
        if s.raw_length != s.length:
            raise BankFileError(f"{what} is stored uncompressed but declares a different raw size.")
        if s.name == "vectors" and s.records * (HASH_HEX + 4 * manifest.embedder.dim) != s.length:
            raise BankFileError(f"{what} is not {s.records} vectors of dimension {manifest.embedder.dim}.")
        if s.name == "memories" and s.records * MEMORY_FRAME.size > s.length:
            raise BankFileError(
                f"{what} claims {s.records} records, more than its {s.length} bytes can hold."
            )


def open_regular(path: Path) -> BinaryIO:
    """Open for reading without blocking (a FIFO named like a bank would hang a plain open) and only if it
    is a regular file."""
    if "\0" in str(path):
        raise BankFileError("A file's name cannot hold a NUL character.")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BankFileError("The bank file is not a regular file.")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise BankFileError("The bank file changed size while it was being read.")
    return data


def _zeros(f: BinaryIO, start: int, end: int, where: str) -> None:
    if end > start and any(_read_at(f, start, end - start)):
        raise BankFileError(f"The bank file has non-zero padding {where}.")


def _decode_line(decoder: msgspec.json.Decoder, line: bytes, section: Section, n: int) -> Any:
    try:
        return decoder.decode(line)
    except msgspec.ValidationError as e:
        raise BankFileError(
            f"The bank file's {section.name} record {n} does not fit the format ({e})."
        ) from e
    except msgspec.DecodeError as e:
        raise BankFileError(f"The bank file's {section.name} record {n} is not valid JSON ({e}).") from e


def _key(raw: bytes, known: frozenset[bytes], seen: set[bytes], what: str) -> str:
    """A record's chunk hash: lowercase hex, a chunk's, and not seen before in its section."""
    key = raw.decode("ascii", "replace")
    if not is_hex64(key):
        raise BankFileError(f"The bank file has a {what} record with a malformed chunk hash.")
    digest = bytes.fromhex(key)
    if digest not in known:
        raise BankFileError(f"The bank file has a {what} for chunk {key[:12]}, which it does not contain.")
    if digest in seen:
        raise BankFileError(f"The bank file has two {what} records for chunk {key[:12]}.")
    seen.add(digest)
    return key


__all__ = ["BankReader", "MemoryExpectation"]
