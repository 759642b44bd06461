"""The memory bank: memories in append-only segment files, located through a small SQLite index.

Files in the bank folder: `seg-000001.m3s`, ... and `bank.db`. A segment is a run of records; a record is
a header (magic `M3RB`, u16 format version, u32 record length, the 64-character key, u32 payload length,
u32 CRC-32 of the header's other fields and the payload) followed by the payload (`memory_codec` bytes).
The index (WAL, synchronous=FULL) holds one row per live record and, per segment, its committed end.

Why it survives a crash: a put appends and fsyncs the record, then commits its row and the segment's new
end in one transaction. Anything past a segment's committed end is an append whose transaction did not
happen: on open, valid records there are indexed (their put may have been lost, their bytes are not) and a
torn record is cut off. A segment file the index does not list is a compaction that did not commit, or
one whose first put did not: it is deleted. Compaction writes new segments first, swaps the rows in one
transaction, then deletes the old files, so a crash leaves either the old or the new state.

A damaged record (a flipped byte, a truncated file) is never returned: `get` gives None and forgets it,
and `repair` reports the keys it had to drop, so the engine rebuilds those memories from their text.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from engine.errors import BankCorruptError, BankError
from engine.memory.codec import decode, encode
from engine.memory.profiles import Memory
from ingest.atomic import fsync_dir
from ingest.sqlite import SQLite, placeholders

if TYPE_CHECKING:
    from sqlite_utils import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

MAGIC = b"M3RB"
VERSION = 1
HEADER = struct.Struct("<4sHI64sII")  # magic, version, record length, key, payload length, crc
_CRC_AT = HEADER.size - 4  # the CRC covers the header up to itself, then the payload
_KEY = re.compile(r"[0-9a-f]{64}")
_SEGMENT = re.compile(r"seg-(\d{6})\.m3s")
_SCHEMA = """
CREATE TABLE segments (id INTEGER PRIMARY KEY, end INTEGER NOT NULL);
CREATE TABLE records (
    key TEXT PRIMARY KEY, segment INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    crc INTEGER NOT NULL, profile TEXT NOT NULL, nbytes INTEGER NOT NULL, written_at REAL NOT NULL
);
CREATE INDEX records_by_place ON records (segment, offset);
"""


@dataclass
class RepairReport:
    """What a repair changed. `lost`: keys whose memory must be rebuilt from the text."""

    lost: list[str] = field(default_factory=list)
    reindexed: list[str] = field(default_factory=list)
    truncated_bytes: int = 0
    removed_segments: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.reindexed or self.truncated_bytes or self.removed_segments)


@dataclass
class _Row:
    key: str
    segment: int
    offset: int
    length: int
    crc: int


class _BadPayload(BankCorruptError):
    """The header is intact, so the next record starts right after this one."""


def pack_record(key: str, payload: bytes) -> bytes:
    header = HEADER.pack(MAGIC, VERSION, HEADER.size + len(payload), key.encode(), len(payload), 0)
    crc = zlib.crc32(payload, zlib.crc32(header[:_CRC_AT]))
    return header[:_CRC_AT] + struct.pack("<I", crc) + payload


def check_record(buf: memoryview, key: str | None = None) -> tuple[str, int, int]:
    """(key, record length, crc) of the record at the start of `buf`; BankCorruptError if it is damaged.
    A header that fits but a payload that fails its CRC is reported as such, so scans can step over it."""
    if len(buf) < HEADER.size:
        raise BankCorruptError("a record header is cut off")
    magic, version, length, raw_key, payload_len, crc = HEADER.unpack_from(buf)
    if magic != MAGIC or version != VERSION or length != HEADER.size + payload_len:
        raise BankCorruptError("a record header is damaged")
    if length > len(buf):
        raise BankCorruptError("a record is cut off")
    found = raw_key.decode("ascii", "replace")
    if key is not None and found != key:
        raise BankCorruptError(f"the record for {key} holds {found} instead")
    if zlib.crc32(buf[HEADER.size : length], zlib.crc32(buf[:_CRC_AT])) != crc:
        raise _BadPayload(f"the record for {found} fails its checksum")
    return found, length, crc


def segment_name(segment: int) -> str:
    return f"seg-{segment:06d}.m3s"


class MemoryBank:
    """Memories by key (the chunk's text hash), within a byte budget. One writing process; any thread."""

    def __init__(self, folder: Path, budget_bytes: int = 2 * 2**30, segment_bytes: int = 256 * 2**20):
        self.folder, self.budget_bytes, self.segment_bytes = Path(folder), budget_bytes, segment_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._maps: dict[int, mmap.mmap] = {}
        index = self.folder / "bank.db"
        self._sql = SQLite(
            index,
            (self._v1,),  # the index's history, oldest first; append only
            newer=lambda version, known: BankError(
                f"the bank in {self.folder} was written by a newer memory3; upgrade memory3 to use it"
            ),
            unreadable=lambda e: BankError(
                f"the bank index {index} is unreadable ({e}); delete it to rebuild it"
            ),
            synchronous="FULL",
        )
        self._db, self._lock = self._sql.conn, self._sql.lock
        self.opened = self._repair_tails()  # what opening had to fix; `lost` keys need rewriting
        self._live = self._live_bytes()  # kept in step by every commit: a put must not sum a million rows

    # Reading

    def get(self, key: str) -> Memory | None:
        """The memory under `key`, or None if it is not stored or its record is damaged (then forgotten)."""
        return self._read(key, decode)

    def encoded(self, key: str) -> bytes | None:
        """The memory under `key` as stored (`memory_codec` bytes, checked against the record's CRC), or
        None as for `get`: what a bank file carries, without decoding and encoding it again."""
        return self._read(key, bytes)

    def _read(self, key: str, read: Callable[[memoryview], T]) -> T | None:
        with self._lock:
            row = self._row(key)
            if row is None:
                return None
            try:
                with self._record(row) as buf:
                    return read(buf[HEADER.size :])
            except BankCorruptError as e:
                log.warning("memory bank: %s; the memory will be rewritten from its text", e)
                self._forget([key])
                return None

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone() is not None

    def keys(self, profile: str | None = None) -> list[str]:
        """The keys stored, or those of memories written with the profile named `profile`."""
        where, params = ("", ()) if profile is None else (" WHERE profile = ?", (profile,))
        with self._lock:
            return [k for (k,) in self._db.execute(f"SELECT key FROM records{where} ORDER BY key", params)]

    def stats(self) -> dict:
        with self._lock:
            records, live = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length), 0) FROM records"
            ).fetchone()
            segments, file_bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(end), 0) FROM segments"
            ).fetchone()
            by_profile = {
                name: {"records": n, "bytes": b}
                for name, n, b in self._db.execute(
                    "SELECT profile, COUNT(*), SUM(length) FROM records GROUP BY profile"
                )
            }
        return {
            "records": records,
            "live_bytes": live,
            "file_bytes": file_bytes,
            "dead_bytes": file_bytes - live,
            "segments": segments,
            "budget": self.budget_bytes,
            "by_profile": by_profile,
        }

    # Writing

    def put(self, key: str, memory: Memory) -> bool:
        """Store `memory` durably under `key`. False, storing nothing, if it would pass the budget.
        A key already stored is kept as it is (keys name texts, so the memory is the same)."""
        return self.put_many([(key, memory)]) == 1

    def put_many(self, items: Sequence[tuple[str, Memory]]) -> int:
        """Store memories as `put` does, with one write, fsync and transaction per segment they reach
        rather than per memory; how many of `items`, in order, are stored now (those already stored
        count): it stops before the first that would pass the budget."""
        for key, _ in items:
            if not _KEY.fullmatch(key):
                raise ValueError(f"a bank key is 64 lowercase hex characters, not {key!r}")
        with self._lock:
            live = self._live
            segment, end = self._tail()
            start, records, rows = end, bytearray(), []
            done: set[str] = set()
            stored = 0
            for key, memory in items:
                if key in done or key in self:
                    stored += 1
                    continue
                record = pack_record(key, encode(memory))
                if live + len(record) > self.budget_bytes:
                    break
                if end and end + len(record) > self.segment_bytes:
                    self._commit_appends(segment, start, records, rows)
                    segment, end = segment + 1, 0
                    start, records, rows = 0, bytearray(), []
                crc = struct.unpack_from("<I", record, _CRC_AT)[0]
                rows.append((_Row(key, segment, end, len(record), crc), memory.profile.name, memory.nbytes))
                records += record
                end += len(record)
                live += len(record)
                done.add(key)
                stored += 1
            self._commit_appends(segment, start, records, rows)
            return stored

    def _commit_appends(
        self, segment: int, start: int, records: bytes, rows: list[tuple[_Row, str, int]]
    ) -> None:
        """Append `records` to `segment` at `start`, fsynced, then index them in one transaction."""
        if not records:
            return
        self._append(segment, start, bytes(records))
        with self._sql.atomic():
            self._set_end(segment, start + len(records))
            for row, profile, nbytes in rows:
                self._index(row, profile, nbytes)
        self._live += sum(row.length for row, _, _ in rows)

    def drop(self, keys: Iterable[str]) -> int:
        """Forget these memories; their bytes stay dead in their segments until `compact`."""
        with self._lock:
            return self._forget(list(keys))

    def compact(self) -> int:
        """Rewrite the live records of segments holding dead bytes into new segments; the bytes freed."""
        with self._lock:
            victims = [s for s, dead in self._dead_by_segment() if dead]
            if not victims:
                return 0
            before = self.stats()["file_bytes"]
            rows = self._rows(f"segment IN ({placeholders(len(victims))}) ORDER BY segment, offset", victims)
            moved, ends = self._write_compacted(rows)
            self._swap(victims, moved, ends)
            self._remove_segments(victims)
            return before - self.stats()["file_bytes"]

    # Checking and repairing

    def verify(self) -> list[str]:
        """Every problem found, in words: damaged records, index rows without data, torn or stray files."""
        with self._lock:
            problems = [f"{name} is not part of the bank" for name in self._stray_files()]
            for segment, end in self._segments():
                size = self._size(segment)
                if size is None:
                    problems.append(f"{segment_name(segment)} is missing")
                elif size != end:
                    problems.append(f"{segment_name(segment)} holds {size} bytes where the index says {end}")
            problems += [
                f"{segment_name(r.segment)} at {r.offset}: {p}"
                for r in self._rows()
                if (p := self._problem(r))
            ]
            return problems

    def repair(self) -> RepairReport:
        """Fix what `verify` finds: cut torn tails, index orphaned records, drop damaged ones (reported in
        `lost`, to be rewritten from their text), delete stray segment files."""
        with self._lock:
            report = self._repair_tails()
            damaged = [r.key for r in self._rows() if self._problem(r)]
            self._forget(damaged)
            report.lost += damaged
            self._live = self._live_bytes()  # the tails' repair may index orphaned records
            return report

    def close(self) -> None:
        with self._lock:
            for m in self._maps.values():
                m.close()
            self._maps.clear()
            self._sql.close()

    def __enter__(self) -> MemoryBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The index

    def _v1(self, db: Database) -> None:
        """The first index. A new one beside existing segments (the old one was lost) lists them all, in
        the same transaction, so that the tail scan indexes their records instead of deleting strays."""
        db.executescript(_SCHEMA)
        db.conn.executemany(
            "INSERT INTO segments (id, end) VALUES (?, 0)", [(s,) for s in sorted(self._files())]
        )

    def _row(self, key: str) -> _Row | None:
        rows = self._rows("key = ?", (key,))
        return rows[0] if rows else None

    def _rows(self, where: str = "1", params: Iterable[object] = ()) -> list[_Row]:
        sql = f"SELECT key, segment, offset, length, crc FROM records WHERE {where}"
        return [_Row(*r) for r in self._db.execute(sql, tuple(params))]

    def _segments(self) -> list[tuple[int, int]]:
        return list(self._db.execute("SELECT id, end FROM segments ORDER BY id"))

    def _tail(self) -> tuple[int, int]:
        """The segment appends go to and its committed end."""
        last = self._db.execute("SELECT id, end FROM segments ORDER BY id DESC LIMIT 1").fetchone()
        return tuple(last) if last else (1, 0)

    def _dead_by_segment(self) -> list[tuple[int, int]]:
        return list(
            self._db.execute(
                "SELECT s.id, s.end - COALESCE(SUM(r.length), 0) FROM segments s"
                " LEFT JOIN records r ON r.segment = s.id GROUP BY s.id ORDER BY s.id"
            )
        )

    def _set_end(self, segment: int, end: int) -> None:
        self._db.execute(
            "INSERT INTO segments (id, end) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET end = excluded.end",
            (segment, end),
        )

    def _index(self, row: _Row, profile: str, nbytes: int) -> None:
        self._db.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.key, row.segment, row.offset, row.length, row.crc, profile, nbytes, time.time()),
        )

    def _forget(self, keys: list[str]) -> int:
        with self._sql.atomic():
            freed = [
                length
                for k in keys
                for (length,) in self._db.execute("DELETE FROM records WHERE key = ? RETURNING length", (k,))
            ]
        self._live -= sum(freed)
        return len(freed)

    def _live_bytes(self) -> int:
        """The bytes of the live records, summed (at open and after a repair; commits keep `_live`)."""
        (live,) = self._db.execute("SELECT COALESCE(SUM(length), 0) FROM records").fetchone()
        return live

    # Segment files

    def _path(self, segment: int) -> Path:
        return self.folder / segment_name(segment)

    def _size(self, segment: int) -> int | None:
        try:
            return self._path(segment).stat().st_size
        except FileNotFoundError:
            return None

    def _files(self) -> dict[int, str]:
        return {int(m[1]): p.name for p in self.folder.iterdir() if (m := _SEGMENT.fullmatch(p.name))}

    def _stray_files(self) -> list[str]:
        known = {s for s, _ in self._segments()}
        return sorted(name for segment, name in self._files().items() if segment not in known)

    @contextmanager
    def _record(self, row: _Row) -> Iterator[memoryview]:
        """The bytes of an indexed record, checked against its header and CRC (BankCorruptError if not)."""
        m = self._map(row.segment, row.offset + row.length)
        with memoryview(m) as whole, whole[row.offset : row.offset + row.length] as buf:
            _, length, crc = check_record(buf, row.key)
            if (length, crc) != (row.length, row.crc):
                raise BankCorruptError(f"the record for {row.key} differs from its index entry")
            yield buf

    def _problem(self, row: _Row) -> str | None:
        """Why the record behind `row` cannot be read, or None when it is intact."""
        try:
            with self._record(row):
                return None
        except BankCorruptError as e:
            return str(e)

    def _map(self, segment: int, end: int) -> mmap.mmap:
        """A read-only map of the segment covering `end` bytes; remapped when the file has grown. The size
        is checked first: touching a map past the end of a file cut short would kill the process."""
        size = self._size(segment) or 0
        if size < end:
            raise BankCorruptError(
                f"{segment_name(segment)} ends at {size} bytes, before its record at {end}"
            )
        m = self._maps.get(segment)
        if m is None or len(m) < end:
            self._drop_map(segment)
            with open(self._path(segment), "rb") as f:
                m = self._maps[segment] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return m

    def _append(self, segment: int, end: int, record: bytes) -> None:
        """Write and fsync `record` at `end`; on failure the segment is cut back to `end`."""
        with open(self._path(segment), "r+b" if end else "wb") as f:
            try:
                f.seek(end)
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            except BaseException:
                f.truncate(end)
                raise
        if not end:
            fsync_dir(self.folder)

    def _write_compacted(self, rows: list[_Row]) -> tuple[list[_Row], dict[int, int]]:
        """Copy intact records into fresh segments numbered past the last; damaged ones are left behind.
        The new files are not in the index yet: if anything stops this, they are strays."""
        plan: dict[int, list[_Row]] = {}
        moved: list[_Row] = []
        segment, end = self._tail()[0] + 1, 0
        for row in rows:
            if problem := self._problem(row):
                log.warning("memory bank: %s; left out of compaction", problem)
                continue
            if end and end + row.length > self.segment_bytes:
                segment, end = segment + 1, 0
            plan.setdefault(segment, []).append(row)
            moved.append(_Row(row.key, segment, end, row.length, row.crc))
            end += row.length
        try:
            for segment, olds in plan.items():
                with open(self._path(segment), "xb") as out:
                    for row in olds:
                        with self._record(row) as buf:
                            out.write(buf)
                    out.flush()
                    os.fsync(out.fileno())
            fsync_dir(self.folder)
        except BaseException:
            for segment in plan:
                self._path(segment).unlink(missing_ok=True)
            raise
        ends = {s: sum(r.length for r in olds) for s, olds in plan.items()}
        return moved, ends

    def _swap(self, victims: list[int], moved: list[_Row], ends: dict[int, int]) -> None:
        """Point the index at the new segments and retire the old ones, all in one transaction."""
        with self._sql.atomic():
            for segment, end in ends.items():
                self._set_end(segment, end)
            self._db.executemany(
                "UPDATE records SET segment = ?, offset = ? WHERE key = ?",
                [(r.segment, r.offset, r.key) for r in moved],
            )
            self._db.executemany("DELETE FROM records WHERE segment = ?", [(s,) for s in victims])
            self._db.executemany("DELETE FROM segments WHERE id = ?", [(s,) for s in victims])

    def _remove_segments(self, segments: Iterable[int]) -> None:
        for segment in segments:
            self._drop_map(segment)
            self._path(segment).unlink(missing_ok=True)
        fsync_dir(self.folder)

    # Repair

    def _repair_tails(self) -> RepairReport:
        """The cheap repair: stray files deleted, missing or short segments' rows dropped, and what lies
        past each committed end indexed if valid, cut off from the first record that is not."""
        report = RepairReport()
        stray = self._stray_files()
        for name in stray:
            (self.folder / name).unlink()
        report.removed_segments += stray
        for segment, end in self._segments():
            size = self._size(segment)
            if size is None or size < end:
                self._cut_short(segment, size, report)
            elif size > end:
                self._scan_tail(segment, end, size, report)
        return report

    def _cut_short(self, segment: int, size: int | None, report: RepairReport) -> None:
        """A segment lost bytes it had committed (or its file): drop the rows it no longer holds and cut
        it after its last whole record."""
        ends = {r.key: r.offset + r.length for r in self._rows("segment = ?", (segment,))}
        lost = [k for k, e in ends.items() if e > (size or 0)]
        keep = max((e for e in ends.values() if e <= (size or 0)), default=0)
        self._drop_map(segment)
        if size is not None:
            os.truncate(self._path(segment), keep)
            report.truncated_bytes += size - keep
        with self._sql.atomic():
            self._db.executemany("DELETE FROM records WHERE key = ?", [(k,) for k in lost])
            if size is None:
                self._db.execute("DELETE FROM segments WHERE id = ?", (segment,))
            else:
                self._set_end(segment, keep)
        report.lost += lost

    def _scan_tail(self, segment: int, end: int, size: int, report: RepairReport) -> None:
        """Records past the committed end are appends whose transaction never ran: index the valid ones
        (unless their key is stored already) and cut the segment at the first one that is torn."""
        found: dict[str, tuple[_Row, str, int]] = {}
        pos = end
        with memoryview(self._map(segment, size)) as whole:
            while pos < size:
                with whole[pos:size] as buf:
                    try:
                        key, length, crc = check_record(buf)
                    except _BadPayload:
                        pos += HEADER.unpack_from(buf)[2]
                        continue
                    except BankCorruptError:
                        break
                    if key not in self and key not in found:
                        try:
                            memory = decode(buf[HEADER.size : length])
                        except BankCorruptError as e:
                            log.warning("memory bank: %s; not indexed", e)
                        else:
                            found[key] = (
                                _Row(key, segment, pos, length, crc),
                                memory.profile.name,
                                memory.nbytes,
                            )
                pos += length
        if pos < size:
            self._drop_map(segment)
            os.truncate(self._path(segment), pos)
            report.truncated_bytes += size - pos
        with self._sql.atomic():
            for row, profile, nbytes in found.values():
                self._index(row, profile, nbytes)
            self._set_end(segment, pos)
        report.reindexed += list(found)

    def _drop_map(self, segment: int) -> None:
        m = self._maps.pop(segment, None)
        if m is not None:
            m.close()
