"""Hybrid retrieval of chunks: vector search (hnswlib) and keyword search (SQLite FTS5), fused by rank.

Everything lives in one folder: `retrieval.db` holds each chunk's hash, text and vector (the truth) and
an FTS5 index over the texts; `hnsw/` holds the vector index, which is rebuilt from the stored vectors
whenever it is missing, damaged, made by another embedder, or out of step with the database. Texts are
kept so that FTS can be rebuilt and vectors recomputed if the embedder changes.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import RetrievalError
from engine.retrieval.embedder import Embedder
from engine.retrieval.vector_index import VectorIndex

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
K_RRF = 60
MAX_TERMS = 16  # keyword search uses only the rarest words of a query: its cost grows with their chunks
AUTOSAVE_S = 60.0  # save the vector index at most this often while adding; close() always saves
_BATCH = 500  # ids per `IN (...)` query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so hnswlib labels are never reused either
    hash TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    vector BLOB NOT NULL                   -- float32, the embedder's dimension
);
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(
    text, content='items', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE IF NOT EXISTS items_vocab USING fts5vocab(items_fts, 'row');
CREATE TRIGGER IF NOT EXISTS items_fts_insert AFTER INSERT ON items BEGIN
    INSERT INTO items_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts(items_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its fused score and its 1-based rank in each list (None where absent)."""

    hash: str
    score: float
    vector_rank: int | None
    keyword_rank: int | None


def query_pieces(text: str) -> list[str]:
    """The distinct whitespace-separated pieces of `text` that hold a word, lower-cased."""
    pieces = (piece.lower() for piece in re.split(r"[\s\x00]+", text))
    return list(dict.fromkeys(piece for piece in pieces if tokens(piece)))


def tokens(piece: str) -> list[str]:
    """The words FTS5's unicode61 tokenizer makes of `piece`, near enough: folded, no diacritics."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", piece.lower()) if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", folded)


def fts_query(pieces: Iterable[str]) -> str:
    """An FTS5 query that cannot fail to parse: each piece a quoted phrase, joined by OR.

    Pieces stay phrases, so "XJ-4471" matches those two tokens side by side.
    """
    return " OR ".join('"' + piece.replace('"', '""') + '"' for piece in pieces)


def fuse(
    vector_ids: Sequence[int], keyword_ids: Sequence[int], k: int
) -> list[tuple[int, float, int | None, int | None]]:
    """Reciprocal rank fusion: (id, score, vector rank, keyword rank) of the top `k`, best first."""
    ranks: dict[int, list[int | None]] = {}
    for which, ids in enumerate((vector_ids, keyword_ids)):
        for rank, i in enumerate(ids, start=1):
            ranks.setdefault(i, [None, None])[which] = rank
    scored = [
        (i, sum(1.0 / (K_RRF + r) for r in (vr, kr) if r is not None), vr, kr)
        for i, (vr, kr) in ranks.items()
    ]
    scored.sort(key=lambda t: (-t[1], min(r for r in t[2:] if r is not None), t[0]))
    return scored[:k]


def _chunks(seq: Sequence, size: int = _BATCH) -> Iterable[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class Retriever:
    """Chunks by content hash, searchable by meaning and by keyword. Safe to share between threads."""

    def __init__(self, folder: Path, embedder: Embedder) -> None:
        self.folder = Path(folder)
        self.embedder = embedder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = self._connect(self.folder / "retrieval.db")
        self._dirty = False
        self._saved_at = time.monotonic()
        self._doc_count: dict[str, int] = {}
        self._ensure_embedder()
        self.index = self._open_index()

    def _connect(self, path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RetrievalError(f"{path} was written by a newer memory3 (schema {version}).")
            with db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise RetrievalError(
                f"{path} is not a usable retrieval database ({exc}); delete it to re-index."
            ) from exc
        return db

    def _state(self, key: str, default: object = None) -> object:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def _set_state(self, key: str, value: object) -> None:
        self._db.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        """Bumped by every change to the items, and recorded in the vector index it is saved with."""
        return int(self._state("generation", 0))

    def _bump(self) -> int:
        generation = self.generation + 1
        self._set_state("generation", generation)
        return generation

    def _ensure_embedder(self) -> None:
        """Recompute every stored vector from its text if they were made by another embedder."""
        name, dim = self._state("embedder"), self._state("dim")
        if (name, dim) == (self.embedder.name, self.embedder.dim):
            return
        rows = self._db.execute("SELECT id, text FROM items ORDER BY id").fetchall()
        if rows:
            log.warning("re-embedding %d chunks made by %s with %s", len(rows), name, self.embedder.name)
        vectors = self.embedder.embed([text for _, text in rows])
        with self._db:
            self._db.executemany(
                "UPDATE items SET vector = ? WHERE id = ?",
                [(v.tobytes(), i) for (i, _), v in zip(rows, vectors, strict=True)],
            )
            self._set_state("embedder", self.embedder.name)
            self._set_state("dim", self.embedder.dim)
            if rows:
                self._bump()

    def _stored(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (id, vector), the truth the vector index is rebuilt from."""
        rows = self._db.execute("SELECT id, vector FROM items ORDER BY id").fetchall()
        ids = np.array([i for i, _ in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(v for _, v in rows), dtype=np.float32).reshape(
            len(rows), self.embedder.dim
        )
        return ids, vectors

    def _open_index(self) -> VectorIndex:
        folder, name, dim = self.folder / "hnsw", self.embedder.name, self.embedder.dim
        try:
            index = VectorIndex.open(folder, name, dim)
        except RetrievalError as exc:
            log.warning("rebuilding the vector index from stored vectors: %s", exc)
            index = VectorIndex(folder, name, dim)
        else:
            if index.generation == self.generation and len(index) == len(self):
                return index
            log.warning(
                "rebuilding the vector index: it has %d vectors at version %d, the database %d at version %d",
                len(index),
                index.generation,
                len(self),
                self.generation,
            )
        self._rebuild(index)
        return index

    def _rebuild(self, index: VectorIndex) -> None:
        index.rebuild(*self._stored())
        index.generation = self.generation
        index.save()
        self._dirty = False

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM items").fetchone()[0]

    def add(self, items: Sequence[tuple[str, str]], batch_size: int = 64) -> int:
        """Add (hash, text) chunks not stored yet, in one transaction; return how many were new."""
        with self._lock:
            new: dict[str, str] = {}
            for h, text in items:
                new.setdefault(h, text)
            for part in _chunks(list(new)):
                marks = ",".join("?" * len(part))
                for (h,) in self._db.execute(f"SELECT hash FROM items WHERE hash IN ({marks})", part):
                    del new[h]
            if not new:
                return 0
            vectors = self.embedder.embed(list(new.values()), batch_size=batch_size)
            with self._db:
                ids = [
                    self._db.execute(
                        "INSERT INTO items(hash, text, vector) VALUES (?, ?, ?)", (h, text, v.tobytes())
                    ).lastrowid
                    for (h, text), v in zip(new.items(), vectors, strict=True)
                ]
                generation = self._bump()
            self.index.add(np.array(ids, dtype=np.int64), vectors)
            self._changed(generation)
            return len(ids)

    def delete(self, hashes: Iterable[str]) -> int:
        """Remove the chunks with these hashes (unknown ones are ignored); return how many were removed."""
        with self._lock:
            wanted = list(dict.fromkeys(hashes))
            ids: list[int] = []
            with self._db:
                for part in _chunks(wanted):
                    marks = ",".join("?" * len(part))
                    ids += [
                        i for (i,) in self._db.execute(f"SELECT id FROM items WHERE hash IN ({marks})", part)
                    ]
                    self._db.execute(f"DELETE FROM items WHERE hash IN ({marks})", part)
                generation = self._bump() if ids else self.generation
            if ids:
                self.index.delete(ids)
                self._changed(generation)
            return len(ids)

    def _changed(self, generation: int) -> None:
        self.index.generation = generation
        self._doc_count.clear()
        self._dirty = True
        if time.monotonic() - self._saved_at > AUTOSAVE_S:
            self.save()

    def save(self) -> None:
        """Write the vector index if it has changed (the database is always up to date)."""
        with self._lock:
            if self._dirty:
                self.index.save()
                self._dirty = False
            self._saved_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self.save()
            self._db.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def vector_search(self, vector: np.ndarray, n: int) -> list[int]:
        """Ids of the `n` chunks nearest in meaning to `vector`."""
        with self._lock:
            return [i for i, _ in self.index.search(vector, n)]

    def keyword_search(self, query: str, n: int) -> list[int]:
        """Ids of the `n` chunks that best match the informative words of `query` (BM25).

        A word in half the chunks or more gets no weight from FTS5's BM25 (its IDF is clamped to 1e-6)
        but costs a pass over all those chunks, so such words are left out, as are words in no chunk;
        of the rest only the MAX_TERMS rarest are kept.
        """
        with self._lock:
            pieces = query_pieces(query)
            counts = self._doc_counts({t for piece in pieces for t in tokens(piece)})
            total = len(self.index)  # the row count, kept in memory

            def count(piece: str) -> int:  # a phrase is in no more chunks than its rarest word
                return min(counts.get(t, 0) for t in tokens(piece))

            kept = sorted((p for p in pieces if 0 < 2 * count(p) < total), key=count)[:MAX_TERMS]
            if not kept:
                return []
            rows = self._db.execute(
                "SELECT rowid FROM items_fts WHERE items_fts MATCH ? ORDER BY rank LIMIT ?",
                (fts_query(kept), n),
            )
            return [i for (i,) in rows]

    def _doc_counts(self, words: set[str]) -> dict[str, int]:
        """How many chunks hold each of `words` (absent: none); cached until the items change."""
        missing = sorted(words - self._doc_count.keys())
        for part in _chunks(missing):
            marks = ",".join("?" * len(part))
            found = dict(self._db.execute(f"SELECT term, doc FROM items_vocab WHERE term IN ({marks})", part))
            self._doc_count.update((w, found.get(w, 0)) for w in part)
        return {w: self._doc_count[w] for w in words}

    def hashes(self, ids: Sequence[int]) -> dict[int, str]:
        with self._lock:
            marks = ",".join("?" * len(ids))
            return dict(self._db.execute(f"SELECT id, hash FROM items WHERE id IN ({marks})", list(ids)))

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The `k` chunks best for `query`, vector and keyword results fused by reciprocal rank."""
        n = max(50, 4 * k)
        vector = self.embedder.embed([query])[0]
        fused = fuse(self.vector_search(vector, n), self.keyword_search(query, n), k)
        names = self.hashes([i for i, *_ in fused])
        return [Hit(names[i], score, vr, kr) for i, score, vr, kr in fused if i in names]

    def check(self) -> list[str]:
        """Problems found in the database, its FTS index and the vector index; empty when all is well."""
        problems: list[str] = []
        with self._lock:
            result = self._db.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                problems.append(f"database integrity check: {result}")
            try:
                self._db.execute("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)")
            except sqlite3.DatabaseError as exc:
                problems.append(f"keyword index: {exc}")
            bad = self._db.execute(
                "SELECT count(*) FROM items WHERE length(vector) != ?", (4 * self.embedder.dim,)
            ).fetchone()[0]
            if bad:
                problems.append(f"{bad} stored vectors have the wrong length")
            if len(self.index) != len(self):
                problems.append(f"vector index holds {len(self.index)} vectors for {len(self)} chunks")
            if not self._dirty:
                try:
                    saved = VectorIndex.open(self.index.folder, self.embedder.name, self.embedder.dim)
                except RetrievalError as exc:
                    problems.append(f"saved vector index: {exc}")
                else:
                    if saved.generation != self.generation or len(saved) != len(self):
                        problems.append("saved vector index is out of step with the database")
        return problems

    def repair(self) -> None:
        """Rebuild the keyword index from the texts and the vector index from the stored vectors."""
        with self._lock:
            with self._db:
                self._db.execute("INSERT INTO items_fts(items_fts) VALUES ('rebuild')")
            self._doc_count.clear()
            self._rebuild(self.index)
