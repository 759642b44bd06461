"""The catalog: one SQLite file (WAL) that mirrors the watched folders as documents and chunks.

It also holds the memory work: one row per chunk hash, `wanted` while some chunk has that text and
`written` once the engine has stored its memory. A hash shared by two documents is one row, so one memory;
the engine writes where wanted and not written, and drops where written and no longer wanted.
Every verb that changes chunks keeps those rows in step inside the same transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlite_utils import Database

from ingest.errors import CatalogError
from ingest.schema import MIGRATIONS, newer_catalog
from ingest.sqlite import SQLite, batches, placeholders

if TYPE_CHECKING:
    from ingest.chunker import Chunk

DocStatus = Literal["pending", "ok", "failed"]
NAME_NOT_UTF8 = "file name is not valid UTF-8"  # the reason such a file is listed as failed
# A folder of such a name is listed once, failed, for all its files (they were listed one by one).
FOLDER_NOT_UTF8 = "folder name is not valid UTF-8: its files are left out until it is renamed"
NOT_UTF8 = (NAME_NOT_UTF8, FOLDER_NOT_UTF8)  # the failures only a rename mends
FolderKind = Literal["watched", "imported"]


@dataclass(frozen=True)
class Folder:
    """A watched folder (`path` absolute), or a collection imported from a bank file (`path` its label)."""

    id: int
    path: Path
    added_at: float
    kind: FolderKind = "watched"


@dataclass(frozen=True)
class PendingImport:
    """A bank file committed to the catalog whose memories and vectors are still to be applied."""

    id: int
    file: str  # a name in the data folder's imports/, never a path from the bank file
    memories: bool  # apply the file's memories (same model and profile), else write them from the text
    vectors: bool  # apply the file's vectors (same embedder), else embed the texts


@dataclass(frozen=True)
class Document:
    id: int
    folder_id: int
    rel_path: str
    size: int
    mtime_ns: int
    sha256: str | None  # None until the file's bytes were read once
    status: DocStatus
    error: str | None


@dataclass(frozen=True)
class MemoryWork:
    hash: str
    action: Literal["write", "drop"]
    text: str | None  # the chunk text to encode, for writes


@dataclass(frozen=True)
class FolderCounts:
    """A watched folder and what the catalog holds of it."""

    id: int
    path: Path
    kind: FolderKind
    documents: int  # files known, whatever their status
    failed: int  # files that could not be parsed
    chunks: int
    memories: int  # distinct chunk texts of the folder whose memory is written
    memories_pending: int  # ... whose memory is still to be written


@dataclass(frozen=True)
class Source:
    """Where a chunk's text comes from, for citations."""

    path: Path
    line_start: int
    line_end: int
    page: int | None
    front_matter: dict = field(default_factory=dict)  # the note's title, date and tags, where it has them


CITED_FRONT_MATTER = ("title", "date", "tags")  # what of a note's front matter its citations carry
LISTED = 20  # files over the size limit, and types not read, that the status names (the rest are counted)


@dataclass(frozen=True)
class Skipped:
    """A file of a watched folder that is not a document (or a folder an .m3ignore excludes), and why."""

    rel_path: str
    kind: str  # too_large, unsupported or ignored (ingest.ignore.Skip; hidden files are not recorded)
    suffix: str  # lower case with its dot, "" for none: unsupported files are counted by type
    size: int
    mtime_ns: int
    reason: str  # what the status says


@dataclass(frozen=True)
class SkippedFiles:
    """What a search will not find in the watched folders, and why, summed up for the status."""

    too_large: int
    unsupported: int
    ignored: int  # files and folders an .m3ignore excludes: the user's choice, counted only
    too_large_files: list[tuple[Path, str]]  # the first LISTED, by path, with the reason
    unsupported_types: list[tuple[str, int]]  # files by suffix ("" for none), most first, the first LISTED


class Catalog:
    """One connection to the catalog file. Safe to share between threads (a lock serialises use); a second
    process may open the same file, WAL lets its reads run beside our writes."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sql = SQLite(
            self.path,
            MIGRATIONS,
            newer=newer_catalog,
            unreadable=lambda exc: CatalogError(f"The catalog {path} cannot be opened ({exc})."),
            synchronous="NORMAL",  # in WAL: durable against crashes, not power loss
        )
        self.db: Database = self._sql.db
        self._lock = self._sql.lock

    def close(self) -> None:
        self._sql.close()

    def atomic(self) -> AbstractContextManager[None]:
        """One write transaction; nested calls join the outer one (see ingest.sqlite)."""
        return self._sql.atomic()

    def rows(self, sql: str, params: Sequence = ()) -> list[dict]:
        """The rows of a read, as dicts: for this class and the modules that read the catalog with it."""
        with self._lock:
            return list(self.db.query(sql, params))

    def _one(self, sql: str, params: Sequence = ()) -> int:
        with self._lock:
            return self.db.execute(sql, params).fetchone()[0]

    # Folders

    def add_folder(self, path: Path, kind: FolderKind = "watched") -> Folder:
        """A new watched folder, or (kind "imported", `path` a label) an imported collection."""
        now = time.time()
        with self.atomic():
            cur = self.db.execute(
                "INSERT INTO folders (path, added_at, kind) VALUES (?, ?, ?)", (str(path), now, kind)
            )
        return Folder(cur.lastrowid, path, now, kind)

    def folders(self, kind: FolderKind = "watched") -> list[Folder]:
        """The watched folders (what scans and the watcher follow), or the imported collections."""
        rows = self.rows("SELECT id, path, added_at FROM folders WHERE kind = ? ORDER BY path", (kind,))
        return [Folder(r["id"], Path(r["path"]), r["added_at"], kind) for r in rows]

    def folder_counts(self) -> list[FolderCounts]:
        """Every watched folder with its documents, failures, chunks and memories, counted in one query.
        A text two folders share is one memory, counted in each."""
        rows = self.rows(
            "SELECT f.id, f.path, f.kind, COUNT(DISTINCT d.id) AS documents,"
            " COUNT(DISTINCT CASE WHEN d.status = 'failed' THEN d.id END) AS failed, COUNT(c.id) AS chunks,"
            " COUNT(DISTINCT CASE WHEN m.written THEN c.hash END) AS memories,"
            " COUNT(DISTINCT CASE WHEN NOT m.written THEN c.hash END) AS memories_pending"
            " FROM folders f LEFT JOIN documents d ON d.folder_id = f.id"
            " LEFT JOIN chunks c ON c.document_id = d.id LEFT JOIN memory_work m ON m.hash = c.hash"
            " GROUP BY f.id ORDER BY f.kind DESC, f.path"
        )
        return [FolderCounts(**{**r, "path": Path(r["path"])}) for r in rows]

    def remove_folder(self, folder_id: int) -> None:
        """Forget the folder, its documents and chunks; memories no other document uses become drops."""
        with self.atomic():
            ids = [r["id"] for r in self.rows("SELECT id FROM documents WHERE folder_id = ?", (folder_id,))]
            self.delete_documents(ids)
            self.db.execute("DELETE FROM folders WHERE id = ?", (folder_id,))

    # Documents

    def documents(self, folder_id: int, under: str = "") -> dict[str, Document]:
        """Documents of a folder by relative path; `under` narrows to one file or one subfolder."""
        where, params = _within(folder_id, under)
        rows = self.rows(f"SELECT * FROM documents WHERE {where}", params)
        return {r["rel_path"]: _document(r) for r in rows}

    def documents_of_size(self, sizes: Iterable[int]) -> list[tuple[Document, Path]]:
        """The documents of watched folders whose bytes were read once, of one of these sizes, with their
        absolute paths: the candidates a new file of that size may have moved from."""
        found: list[tuple[Document, Path]] = []
        for part in batches(list(sizes)):
            rows = self.rows(
                "SELECT d.*, f.path AS folder FROM documents d JOIN folders f ON f.id = d.folder_id WHERE"
                f" f.kind = 'watched' AND d.sha256 IS NOT NULL AND d.size IN ({placeholders(len(part))})",
                part,
            )
            found += [(_document(r), Path(r["folder"]) / r["rel_path"]) for r in rows]
        return found

    def document(self, doc_id: int) -> Document | None:
        rows = self.rows("SELECT * FROM documents WHERE id = ?", (doc_id,))
        return _document(rows[0]) if rows else None

    def failed_document(self, path: Path) -> Document | None:
        """The document at the absolute `path`, if it failed."""
        rows = self.rows(
            "SELECT d.* FROM documents d JOIN folders f ON f.id = d.folder_id"
            " WHERE d.status = 'failed' AND f.path || '/' || d.rel_path = ?",
            (storable(str(path)),),
        )
        return _document(rows[0]) if rows else None

    def document_path(self, doc: Document) -> Path:
        folder = self.rows("SELECT path FROM folders WHERE id = ?", (doc.folder_id,))[0]
        return Path(folder["path"]) / doc.rel_path

    def insert_document(
        self,
        folder_id: int,
        rel_path: str,
        size: int,
        mtime_ns: int,
        sha256: str | None,
        status: DocStatus = "pending",
        error: str | None = None,
    ) -> int:
        with self.atomic():
            cur = self.db.execute(
                "INSERT INTO documents (folder_id, rel_path, size, mtime_ns, sha256, status, error,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (folder_id, rel_path, size, mtime_ns, sha256, status, error, time.time()),
            )
        return cur.lastrowid

    _UPDATABLE = frozenset(
        {
            "folder_id",
            "rel_path",
            "size",
            "mtime_ns",
            "sha256",
            "status",
            "error",
            "parsed_at",
            "meta",
            "warning",
            "parsed_with",
        }
    )

    def update_document(self, doc_id: int, **fields: object) -> None:
        unknown = set(fields) - self._UPDATABLE
        if unknown:
            raise ValueError(f"not document fields: {sorted(unknown)}")
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.atomic():
            self.db.execute(f"UPDATE documents SET {assignments} WHERE id = ?", (*fields.values(), doc_id))

    def delete_documents(self, doc_ids: Iterable[int]) -> None:
        """Remove documents with their chunks and jobs; their memories become drops unless still used."""
        ids = list(doc_ids)
        with self.atomic():
            for part in batches(ids):
                marks = placeholders(len(part))
                hashes = [
                    r["hash"]
                    for r in self.rows(
                        f"SELECT DISTINCT hash FROM chunks WHERE document_id IN ({marks})", part
                    )
                ]
                self.db.execute(f"DELETE FROM documents WHERE id IN ({marks})", part)
                self._release(hashes)

    # Files that are not documents

    def skipped(self, folder_id: int, under: str = "") -> dict[str, Skipped]:
        """The folder's files that are not documents, by relative path; `under` narrows as for documents."""
        where, params = _within(folder_id, under)
        rows = self.rows(
            f"SELECT rel_path, kind, suffix, size, mtime_ns, reason FROM skipped WHERE {where}", params
        )
        return {r["rel_path"]: Skipped(**r) for r in rows}

    def record_skipped(self, folder_id: int, skipped: Iterable[Skipped]) -> None:
        """Add or update these files that are not documents."""
        with self.atomic():
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO skipped (folder_id, rel_path, kind, suffix, size, mtime_ns, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(folder_id, s.rel_path, s.kind, s.suffix, s.size, s.mtime_ns, s.reason) for s in skipped],
            )

    def forget_skipped(self, folder_id: int, rel_paths: Iterable[str]) -> None:
        """These paths hold no skipped file any more: gone, a document now, or hidden."""
        with self.atomic():
            self.db.conn.executemany(
                "DELETE FROM skipped WHERE folder_id = ? AND rel_path = ?",
                [(folder_id, r) for r in rel_paths],
            )

    def skipped_files(self) -> SkippedFiles:
        """The files of watched folders a search will not find: counts by kind, the first files over the
        size limit, and the types not read with their counts."""
        kinds = self.rows("SELECT kind, COUNT(*) AS n FROM skipped GROUP BY kind")
        by_kind = {r["kind"]: r["n"] for r in kinds}
        types = self.rows(
            "SELECT suffix, COUNT(*) AS n FROM skipped WHERE kind = 'unsupported'"
            " GROUP BY suffix ORDER BY n DESC, suffix LIMIT ?",
            (LISTED,),
        )
        return SkippedFiles(
            by_kind.get("too_large", 0),
            by_kind.get("unsupported", 0),
            by_kind.get("ignored", 0),
            self._listed("d.kind = 'too_large'", "d.reason", "skipped", LISTED),
            [(r["suffix"], r["n"]) for r in types],
        )

    # Chunks and the memory work that follows them

    def replace_chunks(self, doc_id: int, chunks: Sequence[Chunk]) -> None:
        """Make `chunks` the document's chunks. Unchanged texts keep their hash, so their memory stays;
        new hashes become writes and hashes no document uses any more become drops."""
        with self.atomic():
            old = [
                r["hash"]
                for r in self.rows("SELECT DISTINCT hash FROM chunks WHERE document_id = ?", (doc_id,))
            ]
            self.db.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
            self.db.conn.executemany(
                "INSERT INTO chunks (document_id, ord, hash, char_start, char_end, line_start, line_end,"
                " page, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (doc_id, i, c.hash, c.start, c.end, c.line_start, c.line_end, c.page, c.text)
                    for i, c in enumerate(chunks)
                ],
            )
            now = time.time()
            self.db.conn.executemany(
                "INSERT INTO memory_work (hash, wanted, written, updated_at) VALUES (?, 1, 0, ?) ON CONFLICT"
                " (hash) DO UPDATE SET wanted = 1, updated_at = excluded.updated_at WHERE wanted = 0",
                [(h, now) for h in {c.hash for c in chunks}],
            )
            self._release(old)

    def _release(self, hashes: Iterable[str]) -> None:
        """Mark hashes no chunk uses any more as unwanted; forget those whose memory was never written."""
        now = time.time()
        unused = "NOT EXISTS (SELECT 1 FROM chunks WHERE chunks.hash = memory_work.hash)"
        hashes = list(hashes)
        self.db.conn.executemany(
            f"DELETE FROM memory_work WHERE hash = ? AND written = 0 AND {unused}", [(h,) for h in hashes]
        )
        self.db.conn.executemany(
            f"UPDATE memory_work SET wanted = 0, updated_at = ? WHERE hash = ? AND wanted = 1 AND {unused}",
            [(now, h) for h in hashes],
        )

    def chunk_hashes(self, doc_id: int) -> list[str]:
        return [
            r["hash"]
            for r in self.rows("SELECT hash FROM chunks WHERE document_id = ? ORDER BY ord", (doc_id,))
        ]

    def sources(self, chunk_hash: str) -> list[Source]:
        rows = self.rows(
            "SELECT f.path, d.rel_path, d.meta, c.line_start, c.line_end, c.page FROM chunks c"
            " JOIN documents d ON d.id = c.document_id JOIN folders f ON f.id = d.folder_id"
            " WHERE c.hash = ? ORDER BY f.path, d.rel_path, c.ord",
            (chunk_hash,),
        )
        return [
            Source(
                Path(r["path"]) / r["rel_path"], r["line_start"], r["line_end"], r["page"], _cited(r["meta"])
            )
            for r in rows
        ]

    def pending_memory_work(self, limit: int | None = None) -> list[MemoryWork]:
        """Memories to drop (first: they free room) and to write, oldest first."""
        rows = self.rows(
            "SELECT m.hash, m.wanted, (SELECT text FROM chunks c WHERE c.hash = m.hash LIMIT 1) AS text"
            " FROM memory_work m WHERE m.wanted != m.written ORDER BY m.wanted, m.updated_at, m.hash LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [MemoryWork(r["hash"], "write" if r["wanted"] else "drop", r["text"]) for r in rows]

    def complete_memory_work(self, written: Iterable[str] = (), dropped: Iterable[str] = ()) -> None:
        """Record what the engine stored or removed. Safe against races: a memory written after its chunks
        went away becomes a drop; one dropped after its text came back becomes a write again."""
        now = time.time()
        with self.atomic():
            self.db.conn.executemany(
                "INSERT INTO memory_work (hash, wanted, written, updated_at) VALUES (?, 0, 1, ?)"
                " ON CONFLICT (hash) DO UPDATE SET written = 1, updated_at = excluded.updated_at",
                [(h, now) for h in written],
            )
            dropped = list(dropped)
            self.db.conn.executemany(
                "UPDATE memory_work SET written = 0, updated_at = ? WHERE hash = ?",
                [(now, h) for h in dropped],
            )
            self.db.conn.executemany(
                "DELETE FROM memory_work WHERE hash = ? AND wanted = 0 AND written = 0",
                [(h,) for h in dropped],
            )

    def chunk_texts(self, hashes: Iterable[str]) -> dict[str, str]:
        """The text of each chunk hash still in the catalog."""
        hashes = list(dict.fromkeys(hashes))
        found: dict[str, str] = {}
        for part in batches(hashes):
            found.update(
                (r["hash"], r["text"])
                for r in self.rows(
                    f"SELECT hash, text FROM chunks WHERE hash IN ({placeholders(len(part))})", part
                )
            )
        return found

    # Status

    def counts(self) -> dict[str, int]:
        """Documents by status, chunks, and memory work left: what the UI shows as progress."""
        with self._lock:
            by_status = dict(
                self.db.execute("SELECT status, COUNT(*) FROM documents GROUP BY status").fetchall()
            )
            work = dict(
                self.db.execute(
                    "SELECT wanted, COUNT(*) FROM memory_work WHERE wanted != written GROUP BY wanted"
                ).fetchall()
            )
            return {
                "folders": self._one("SELECT COUNT(*) FROM folders"),
                "documents": sum(by_status.values()),
                "ok": by_status.get("ok", 0),
                "pending": by_status.get("pending", 0),
                "failed": by_status.get("failed", 0),
                "chunks": self._one("SELECT COUNT(*) FROM chunks"),
                "jobs": self._one("SELECT COUNT(*) FROM jobs"),
                "memories_to_write": work.get(1, 0),
                "memories_to_drop": work.get(0, 0),
                "imports": self._one("SELECT COUNT(*) FROM imports"),  # bank files still being applied
            }

    # Imports committed, not yet applied

    def add_import(self, file: str, memories: bool, vectors: bool, hashes: Iterable[str]) -> int:
        """Record a committed bank file and the chunk texts whose memory and vector it brings."""
        with self.atomic():
            cur = self.db.execute(
                "INSERT INTO imports (file, memories, vectors, created_at) VALUES (?, ?, ?, ?)",
                (file, memories, vectors, time.time()),
            )
            self.db.conn.executemany(
                "INSERT INTO import_hashes (import_id, hash) VALUES (?, ?)",
                [(cur.lastrowid, h) for h in hashes],
            )
        return cur.lastrowid

    def import_hashes(self, import_id: int) -> set[str]:
        rows = self.rows("SELECT hash FROM import_hashes WHERE import_id = ?", (import_id,))
        return {r["hash"] for r in rows}

    def memory_hashes(
        self, hashes: Iterable[str], written: bool | None = None, wanted: bool | None = None
    ) -> set[str]:
        """Those of `hashes` the memory work knows (any state, or only those `written` / `wanted`)."""
        states = (("written", written), ("wanted", wanted))
        where = "".join(f" AND {name} = {int(value)}" for name, value in states if value is not None)
        found: set[str] = set()
        for part in batches(list(dict.fromkeys(hashes))):
            found.update(
                r["hash"]
                for r in self.rows(
                    f"SELECT hash FROM memory_work WHERE hash IN ({placeholders(len(part))}){where}", part
                )
            )
        return found

    def pending_imports(self) -> list[PendingImport]:
        rows = self.rows("SELECT id, file, memories, vectors FROM imports ORDER BY id")
        return [PendingImport(r["id"], r["file"], bool(r["memories"]), bool(r["vectors"])) for r in rows]

    def finish_import(self, import_id: int) -> None:
        with self.atomic():
            self.db.execute("DELETE FROM imports WHERE id = ?", (import_id,))

    def failed_with(self, sha256: str, reason: str) -> list[int]:
        """The documents with this content that failed for `reason` (it crashed the process: every copy is
        given up, and tried again, together)."""
        rows = self.rows("SELECT id FROM documents WHERE sha256 = ? AND error = ?", (sha256, reason))
        return [r["id"] for r in rows]

    def parsed_before(self, parsed_with: str, except_error: str) -> list[Document]:
        """The documents of watched folders read (or failed) by other parsers than `parsed_with` and not
        queued, but for those that failed with `except_error` (their bytes crashed the process: never read
        again unasked). An imported collection's documents have no file to read."""
        rows = self.rows(
            "SELECT d.* FROM documents d JOIN folders f ON f.id = d.folder_id WHERE f.kind = 'watched'"
            " AND d.status != 'pending' AND d.parsed_with != ? AND (d.error IS NULL OR d.error != ?)"
            " AND d.id NOT IN (SELECT document_id FROM jobs) ORDER BY d.id",
            (parsed_with, except_error),
        )
        return [_document(r) for r in rows]

    def failures(self) -> list[tuple[Path, str]]:
        """(file, reason) of every document that could not be read."""
        return self._listed("d.status = 'failed'", "d.error")

    def warnings(self) -> list[tuple[Path, str]]:
        """(file, doubt) of every document read with a doubt (a guessed encoding)."""
        return self._listed("d.status = 'ok' AND d.warning IS NOT NULL", "d.warning")

    def _listed(
        self, where: str, column: str, table: str = "documents", limit: int = -1
    ) -> list[tuple[Path, str]]:
        """(absolute path, `column`) of the rows of `table` (as `d`) that `where` picks, by path."""
        rows = self.rows(
            f"SELECT f.path, d.rel_path, {column} AS said FROM {table} d"
            f" JOIN folders f ON f.id = d.folder_id WHERE {where} ORDER BY f.path, d.rel_path LIMIT ?",
            (limit,),
        )
        return [(Path(r["path"]) / r["rel_path"], r["said"]) for r in rows]


def _within(folder_id: int, under: str) -> tuple[str, tuple]:
    """The WHERE clause, and its parameters, of a folder's rows at `under`: one file or everything below
    one subfolder ("" for the whole folder)."""
    if not under:
        return "folder_id = ?", (folder_id,)
    under = storable(under)
    # '/' < '0' in code points: the range holds exactly the paths below `under/`.
    return "folder_id = ? AND (rel_path = ? OR (rel_path > ? AND rel_path < ?))", (
        folder_id,
        under,
        under + "/",
        under + "0",
    )


def _cited(meta: str) -> dict:
    front = json.loads(meta).get("front_matter", {})
    return {key: front[key] for key in CITED_FRONT_MATTER if key in front}


def _document(r: dict) -> Document:
    return Document(
        r["id"], r["folder_id"], r["rel_path"], r["size"], r["mtime_ns"], r["sha256"], r["status"], r["error"]
    )


def storable(name: str) -> str:
    r"""The catalog's form of a path: itself when it is valid Unicode. A file name of bytes that are not
    UTF-8 (`r\xe9sum\xe9.txt`: Latin-1 from an old archive) reaches Python with lone surrogates, which
    SQLite cannot store; those bytes are written as `\xNN` escapes, so the file can be listed (as failed)."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not an undecodable byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
