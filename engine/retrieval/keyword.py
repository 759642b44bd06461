"""Keyword search over the stored chunk texts: SQLite FTS5 (BM25), in the retrieval database.

The FTS index is an external-content table over `items(text)`, kept in step by triggers, so it is
updated inside the same transactions as the items and can always be rebuilt from them.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Iterable

from ingest.sqlite import batches, placeholders

MAX_TERMS = 16  # keyword search uses only the rarest words of a query: its cost grows with their chunks

# Part of the retrieval database's first schema; needs the `items` table.
SCHEMA = """
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
"""


def query_pieces(text: str) -> list[str]:
    """The distinct whitespace-separated pieces of `text` that hold a word, lower-cased, in NFKC as the
    documents' texts are (a full-width `Ｔｅｓｌａ` typed finds `Tesla`)."""
    pieces = (piece.lower() for piece in re.split(r"[\s\x00]+", unicodedata.normalize("NFKC", text)))
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


class KeywordIndex:
    """BM25 search of the chunk texts on the retrieval database's connection. Not locked: its owner (the
    Retriever) serialises calls, and calls `changed()` whenever the items change."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._doc_count: dict[str, int] = {}

    def search(self, query: str, n: int, total: int) -> list[int]:
        """Ids of the `n` chunks that best match the informative words of `query`, of `total` chunks.

        A word in half the chunks or more gets no weight from FTS5's BM25 (its IDF is clamped to 1e-6)
        but costs a pass over all those chunks, so such words are left out, as are words in no chunk;
        of the rest only the MAX_TERMS rarest are kept.
        """
        pieces = query_pieces(query)
        counts = self._doc_counts({t for piece in pieces for t in tokens(piece)})

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

    def changed(self) -> None:
        """Forget the cached word counts: the items changed."""
        self._doc_count.clear()

    def check(self) -> str | None:
        """What FTS5's integrity check finds wrong with the index, or None when it is sound."""
        try:
            self._db.execute("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return None

    def rebuild(self) -> None:
        """Index every item's text again; run it inside a write transaction."""
        self._db.execute("INSERT INTO items_fts(items_fts) VALUES ('rebuild')")
        self.changed()

    def _doc_counts(self, words: set[str]) -> dict[str, int]:
        """How many chunks hold each of `words` (absent: none); cached until the items change."""
        missing = sorted(words - self._doc_count.keys())
        for part in batches(missing):
            found = dict(
                self._db.execute(
                    f"SELECT term, doc FROM items_vocab WHERE term IN ({placeholders(len(part))})", part
                )
            )
            self._doc_count.update((w, found.get(w, 0)) for w in part)
        return {w: self._doc_count[w] for w in words}
