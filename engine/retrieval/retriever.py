"""Hybrid retrieval of chunks: vector search (hnswlib) and keyword search (SQLite FTS5), fused by rank.

Everything lives in one folder: `retrieval.db` holds each chunk's hash, text and vector (the truth) and
an FTS5 index over the texts' keyword form; `hnsw/` holds the vector index, which is rebuilt from the stored
vectors whenever it is missing, damaged, made by another embedder, or out of step with the database. Texts
are kept so that FTS can be rebuilt (as it is when the keyword form changes) and vectors recomputed if the
embedder changes. While the live vectors are few (`exact.EXACT_UP_TO`), vector search is exact, over a
matrix of them kept in memory beside the index: an HNSW graph can lose a node (engine/retrieval/exact.py).
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import RetrievalError
from engine.retrieval import keyword
from engine.retrieval.embedder import Embedder
from engine.retrieval.exact import EXACT_UP_TO, ExactVectors
from engine.retrieval.fusion import fuse, latin_share
from engine.retrieval.vector_index import VectorIndex
from ingest.sqlite import SQLite, batches, placeholders

if TYPE_CHECKING:
    from sqlite_utils import Database

log = logging.getLogger(__name__)

AUTOSAVE_S = 60.0  # save the vector index at most this often while adding; close() always saves

# IF NOT EXISTS: before there were migrations, a crash could leave these tables in a file at version 0.
_ITEMS = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so hnswlib labels are never reused either
    hash TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    vector BLOB NOT NULL                   -- float32, the embedder's dimension
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


def _v1(db: Database) -> None:
    """Chunks (hash, text, vector), the keyword index over their texts, the state (generation, embedder)."""
    db.executescript(_ITEMS + keyword.SCHEMA_V1)


def _v2(db: Database) -> None:
    """The keyword index over the texts' keyword form (CJK bigrams, folding); filled on open."""
    db.executescript(keyword.SCHEMA_V2)


# The database's history, oldest first: version N is reached by applying the first N steps. Append only.
MIGRATIONS = (_v1, _v2)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its fused score and its 1-based rank in each list (None where absent)."""

    hash: str
    score: float
    vector_rank: int | None
    keyword_rank: int | None


class Retriever:
    """Chunks by content hash, searchable by meaning and by keyword. Safe to share between threads."""

    def __init__(self, folder: Path, embedder: Embedder) -> None:
        self.folder = Path(folder)
        self.embedder = embedder
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "retrieval.db"
        self._sql = SQLite(
            path,
            MIGRATIONS,
            newer=lambda version, known: RetrievalError(
                f"{path} was written by a newer memory3 (schema {version})."
            ),
            unreadable=lambda exc: RetrievalError(
                f"{path} is not a usable retrieval database ({exc}); delete it to re-index."
            ),
            synchronous="FULL",
        )
        self._db, self._lock = self._sql.conn, self._sql.lock
        self.keywords = keyword.KeywordIndex(self._db)
        self._dirty = False
        self._saved_at = time.monotonic()
        self._ensure_embedder()
        self._ensure_keyword_form()
        self.exact: ExactVectors | None = None  # the live vectors while there are at most EXACT_UP_TO
        self.index = self._open_index()
        if self.exact is None and len(self) <= EXACT_UP_TO:
            self._search_exactly(*self._stored())

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
        with self._sql.atomic():
            self._db.executemany(
                "UPDATE items SET vector = ? WHERE id = ?",
                [(v.tobytes(), i) for (i, _), v in zip(rows, vectors, strict=True)],
            )
            self._set_state("embedder", self.embedder.name)
            self._set_state("dim", self.embedder.dim)
            if rows:
                self._bump()

    def _ensure_keyword_form(self) -> None:
        """Index every text again if the keyword index holds another keyword form (or none: schema 2 starts
        empty)."""
        if self._state("keyword_form") == keyword.FORM:
            return
        if count := len(self):
            log.warning("indexing the keywords of %d chunks again (keyword form %d)", count, keyword.FORM)
        with self._sql.atomic():
            self.keywords.rebuild()
            self._set_state("keyword_form", keyword.FORM)

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
        ids, vectors = self._stored()
        index.rebuild(ids, vectors)
        index.generation = self.generation
        index.save()
        self._dirty = False
        self._search_exactly(ids, vectors)

    def _search_exactly(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Search these (all the stored) vectors exactly from now on if they are few enough, else by the
        index alone."""
        self.exact = ExactVectors(self.embedder.dim, ids, vectors) if len(ids) <= EXACT_UP_TO else None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM items").fetchone()[0]

    def add(self, items: Sequence[tuple[str, str]], batch_size: int = 64) -> int:
        """Add (hash, text) chunks not stored yet, in one transaction; return how many were new."""
        with self._lock:
            new = self._missing(_first(items))
            if not new:
                return 0
            return self._insert(new, self.embedder.embed(list(new.values()), batch_size=batch_size))

    def add_embedded(self, items: Sequence[tuple[str, str, np.ndarray]]) -> int:
        """Add (hash, text, vector) chunks not stored yet, whose vectors this embedder made elsewhere
        (a bank file's); one transaction; return how many were new."""
        with self._lock:
            given = _first([(h, v) for h, _, v in items])
            new = self._missing(_first([(h, t) for h, t, _ in items]))
            if not new:
                return 0
            vectors = np.stack([np.asarray(given[h], np.float32) for h in new])
            if vectors.shape != (len(new), self.embedder.dim):
                raise ValueError(f"vectors of shape {vectors.shape[1:]} for a {self.embedder.dim}-d index")
            return self._insert(new, vectors)

    def vectors(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vector (float32, the embedder's dimension) of each of these hashes that is stored."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for part in batches(list(dict.fromkeys(hashes))):
                marks = placeholders(len(part))
                for h, v in self._db.execute(f"SELECT hash, vector FROM items WHERE hash IN ({marks})", part):
                    found[h] = np.frombuffer(v, dtype=np.float32)
        return found

    def stored(self, hashes: Iterable[str]) -> set[str]:
        """Those of `hashes` that are stored."""
        found: set[str] = set()
        with self._lock:
            for part in batches(list(dict.fromkeys(hashes))):
                sql = f"SELECT hash FROM items WHERE hash IN ({placeholders(len(part))})"
                found.update(h for (h,) in self._db.execute(sql, part))
        return found

    def _missing(self, new: dict[str, str]) -> dict[str, str]:
        """`new` less the hashes already stored."""
        stored = self.stored(new)
        return {h: t for h, t in new.items() if h not in stored}

    def _insert(self, new: dict[str, str], vectors: np.ndarray) -> int:
        with self._sql.atomic():
            ids = [
                self._db.execute(
                    "INSERT INTO items(hash, text, vector) VALUES (?, ?, ?)", (h, text, v.tobytes())
                ).lastrowid
                for (h, text), v in zip(new.items(), vectors, strict=True)
            ]
            generation = self._bump()
        self.index.add(np.array(ids, dtype=np.int64), vectors)
        if self.exact is not None:
            self.exact.add(np.array(ids, dtype=np.int64), vectors)
            if len(self.exact) > EXACT_UP_TO:  # grown past it: the index alone from now on
                self.exact = None
        self._changed(generation)
        return len(ids)

    def delete(self, hashes: Iterable[str]) -> int:
        """Remove the chunks with these hashes (unknown ones are ignored); return how many were removed."""
        with self._lock:
            wanted = list(dict.fromkeys(hashes))
            ids: list[int] = []
            with self._sql.atomic():
                for part in batches(wanted):
                    marks = placeholders(len(part))
                    ids += [
                        i for (i,) in self._db.execute(f"SELECT id FROM items WHERE hash IN ({marks})", part)
                    ]
                    self._db.execute(f"DELETE FROM items WHERE hash IN ({marks})", part)
                generation = self._bump() if ids else self.generation
            if ids:
                self.index.delete(ids)
                if self.exact is not None:
                    self.exact.delete(ids)
                elif len(self.index) <= EXACT_UP_TO:  # shrunk back under it: exact again
                    self._search_exactly(*self._stored())
                self._changed(generation)
            return len(ids)

    def compact(self) -> bool:
        """Rebuild the vector index once it is `worn` (its deleted vectors past REBUILD_AT of the live
        ones), without holding up searches: built from the stored vectors outside the lock, swapped in
        only if no change came meanwhile (else the next call tries again). Returns whether it swapped."""
        with self._lock:
            if not self.index.worn:
                return False
            generation = self.generation
            ids, vectors = self._stored()
        fresh = VectorIndex(self.index.folder, self.embedder.name, self.embedder.dim, generation)
        fresh.rebuild(ids, vectors)
        with self._lock:
            if self.generation != generation:
                return False
            self.index, self._dirty = fresh, True
            self.save()
        return True

    def _changed(self, generation: int) -> None:
        self.index.generation = generation
        self.keywords.changed()
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
            self._sql.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def vector_search(self, vector: np.ndarray, n: int) -> list[int]:
        """Ids of the `n` chunks nearest in meaning to `vector`: exactly while they are few."""
        with self._lock:
            searched = self.exact if self.exact is not None else self.index
            return [i for i, _ in searched.search(vector, n)]

    def keyword_search(self, query: str, n: int) -> list[int]:
        """Ids of the `n` chunks that best match the informative words of `query` (BM25)."""
        with self._lock:
            return self.keywords.search(query, n, total=len(self.index))  # the row count, kept in memory

    def hashes(self, ids: Sequence[int]) -> dict[int, str]:
        with self._lock:
            marks = placeholders(len(ids))
            return dict(self._db.execute(f"SELECT id, hash FROM items WHERE id IN ({marks})", list(ids)))

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The `k` chunks best for `query`, vector and keyword results fused by reciprocal rank, the vectors
        weighted by the query's share of Latin letters (fusion.latin_share). The query is in Unicode NFKC, as
        the documents' texts are (ingest.document.ParsedText.normalized)."""
        query = unicodedata.normalize("NFKC", query)
        n = max(50, 4 * k)
        vector = self.embedder.embed([query])[0]
        fused = fuse(self.vector_search(vector, n), self.keyword_search(query, n), k, latin_share(query))
        names = self.hashes([i for i, *_ in fused])
        return [Hit(names[i], score, vr, kr) for i, score, vr, kr in fused if i in names]

    def focus(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """Of `hits` (best first), those holding the query's rarest word, when it is in no more chunks than
        there are hits (and in fewer than half of all) and the best hit or keyword search's best holds it;
        otherwise all of them. Words tied for rarest count alike.

        A question names what it asks about ("the Griadipou Bridge") by a word few chunks hold; the other
        hits often hold the same kind of fact about something else (another bridge's year), and a small
        model answers from the wrong one (README "Memory bank, retrieval and chat": `m3 bench editing`).
        The rarest word is not always that name (a typo, "which", a word of another article): narrowing
        only when a best hit holds it dropped every chunk holding the answer for 2% of XQuAD questions,
        against 8% without that condition. Our rule, in the spirit of a required term in a query."""
        if not hits:
            return []
        with self._lock:
            query = unicodedata.normalize("NFKC", query)
            words = self.keywords.rarest(query, at_most=len(hits), total=len(self.index))
            if not words:
                return list(hits)
            ids = dict(
                self._db.execute(
                    f"SELECT hash, id FROM items WHERE hash IN ({placeholders(len(hits))})",
                    [h.hash for h in hits],
                )
            )
            holding = self.keywords.holding(words, list(ids.values()))
        kept = [h for h in hits if ids.get(h.hash) in holding]
        if not any(h is hits[0] or h.keyword_rank == 1 for h in kept):
            return list(hits)
        return kept

    def check(self) -> list[str]:
        """Problems found in the database, its FTS index and the vector index; empty when all is well."""
        problems: list[str] = []
        with self._lock:
            result = self._db.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                problems.append(f"database integrity check: {result}")
            if keyword_problem := self.keywords.check():
                problems.append(f"keyword index: {keyword_problem}")
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
            with self._sql.atomic():
                self.keywords.rebuild()
            self._rebuild(self.index)


def _first(pairs: Iterable[tuple[str, object]]) -> dict:
    """Each key with the value it first came with, in first-seen order."""
    out: dict = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out
