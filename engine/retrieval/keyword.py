"""Keyword search over the stored chunk texts: SQLite FTS5 (BM25), in the retrieval database.

FTS5 indexes each text's keyword form (`keyword_form`), and queries are cut into pieces of the same form
(`query_pieces`), so what a user types and what a document shows meet in one place: case and compatibility
forms folded, the marks a writer may leave out dropped, digits of any script made ASCII, and runs of the
scripts written without spaces between words (Han, kana, Hangul, Thai, Lao, Khmer, Myanmar) cut into
overlapping character bigrams (as Lucene's CJKAnalyzer does for Han, kana and Hangul). Python makes the
words; FTS5's tokenizer only splits them at spaces, so the words counted here are exactly the index's terms.

The FTS index is an external-content table over a view of `items` that computes the form (the SQL function
m3_keyword_form, which KeywordIndex registers on the connection), kept in step by triggers, so it is
updated inside the same transactions as the items and can always be rebuilt from them. FORM names the
form: a database indexed by another is indexed again on open (Retriever).
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import groupby

from ingest.sqlite import batches, placeholders

MAX_TERMS = 16  # keyword search uses only the rarest words of a query: its cost grows with their chunks
FORM = 2  # keyword_form's version (1: FTS5's own unicode61 words of the raw text)

# The first schema's keyword index, as it was: a new file still reaches the current schema through it.
SCHEMA_V1 = """
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

# Schema 2: the index of the texts' keyword form, empty until KeywordIndex.rebuild fills it. Every category
# but the separators (Z*) makes words, so FTS5 splits the form at its spaces only.
SCHEMA_V2 = """
DROP TRIGGER items_fts_insert;
DROP TRIGGER items_fts_delete;
DROP TABLE items_vocab;
DROP TABLE items_fts;
CREATE VIEW items_keyword(id, text) AS SELECT id, m3_keyword_form(text) FROM items;
CREATE VIRTUAL TABLE items_fts USING fts5(
    text, content='items_keyword', content_rowid='id',
    tokenize="unicode61 remove_diacritics 0 categories 'L* M* N* P* S* C*'"
);
CREATE VIRTUAL TABLE items_vocab USING fts5vocab(items_fts, 'row');
CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN
    INSERT INTO items_fts(rowid, text) VALUES (new.id, m3_keyword_form(new.text));
END;
CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts(items_fts, rowid, text) VALUES ('delete', old.id, m3_keyword_form(old.text));
END;
"""

# Marks a writer may leave out, after canonical decomposition: accents and the like on Latin, Greek and
# Cyrillic letters (é, ά, ё, й), Hebrew points, Arabic vowel signs and hamza on alef (أ إ آ) and the
# tatweel, the Devanagari nukta (Lucene's ArabicNormalizer, HindiNormalizer and ASCII folding, in short).
_OPTIONAL_MARKS = re.compile(
    "[\u0300-\u036f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0610-\u061a\u0640\u064b-\u065f"
    "\u0670\u06d6-\u06dc\u06df-\u06e4\u06e7\u06e8\u06ea-\u06ed\u093c]+"
)
# Letters often typed for others: Arabic ى as ي and ة as ه (Lucene's ArabicNormalizer), Devanagari
# chandrabindu as anusvara (HindiNormalizer).
_LETTERS = (("\u0649", "\u064a"), ("\u0629", "\u0647"), ("\u0901", "\u0902"))
_DIGITS = re.compile(r"[^\D0-9]+")  # decimal digits of other scripts (Lucene's DecimalDigitFilter)
_ASCII_WORDS = re.compile("[a-z0-9]+")
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, Han (with its radicals and
# iteration marks), hiragana, katakana and Hangul.
_BIGRAM_SCRIPTS = (
    "\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029"
    "\u3038-\u303b\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f"
    "\uac00-\ud7ff\uf900-\ufaff\U00020000-\U0003ffff"
)
_BIGRAM_RUN = re.compile(f"[{_BIGRAM_SCRIPTS}]+")


class _Separators(dict[int, int]):
    """str.translate's table of separators to a space, other characters to themselves, filled as they come.
    Words are letters, numbers, marks and private use: unicode61's words, but for the marks (it cut नमस्ते
    at its vowel signs; Python's \\w lacks them too)."""

    def __missing__(self, code: int) -> int:
        category = unicodedata.category(chr(code))
        self[code] = code if category[0] in "LMN" or category == "Co" else ord(" ")
        return self[code]


_SEPARATORS = _Separators()


def _bigrams(run: re.Match[str]) -> str:
    """A run of a script written without spaces as its overlapping character bigrams (東京都: 東京 京都),
    a lone character as itself: Lucene's CJKBigramFilter."""
    text = run[0]
    return " " + " ".join(text[i : i + 2] for i in range(max(1, len(text) - 1))) + " "


def keyword_form(text: str) -> str:
    """`text` as the keyword index holds it: its words, folded as a user types them, one space apart.

    NFKC (full-width Ｔｅｓｌａ, half-width ﾗｰﾒﾝ, ligatures) and case folding (ß as ss, final ς as σ), then
    the optional marks dropped and letters mapped, digits made ASCII, separators made spaces, and runs of
    the scripts written without spaces made bigrams. Idempotent: a form's form is itself.
    """
    if text.isascii():  # every step leaves ASCII as it is but case and separators: a quicker way there
        return " ".join(_ASCII_WORDS.findall(text.lower()))
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _OPTIONAL_MARKS.sub("", unicodedata.normalize("NFD", folded))
    for letter, typed in _LETTERS:
        folded = folded.replace(letter, typed)
    folded = _DIGITS.sub(lambda m: "".join(str(unicodedata.decimal(d)) for d in m[0]), folded)
    words = unicodedata.normalize("NFC", folded).translate(_SEPARATORS)
    return " ".join(_BIGRAM_RUN.sub(_bigrams, words).split())


def tokens(text: str) -> list[str]:
    """The words the keyword index makes of `text`."""
    return keyword_form(text).split()


def query_pieces(text: str) -> list[str]:
    """The distinct phrases keyword search looks for in `text`, in keyword form: the words of each
    whitespace-separated piece side by side ("XJ-4471": "xj 4471"), but each bigram of a script written
    without spaces alone (a question in Chinese is one run: as one phrase it would find only itself)."""
    pieces: list[str] = []
    for piece in text.split():
        for bigrams, group in groupby(tokens(piece), key=lambda word: _BIGRAM_RUN.match(word) is not None):
            words = list(group)
            pieces += words if bigrams else [" ".join(words)]
    return list(dict.fromkeys(pieces))


def fts_query(pieces: Iterable[str]) -> str:
    """An FTS5 query that cannot fail to parse: each piece a quoted phrase, joined by OR."""
    return " OR ".join('"' + piece.replace('"', '""') + '"' for piece in pieces)


class KeywordIndex:
    """BM25 search of the chunk texts on the retrieval database's connection. Not locked: its owner (the
    Retriever) serialises calls, and calls `changed()` whenever the items change."""

    def __init__(self, db: sqlite3.Connection) -> None:
        """Registers m3_keyword_form on `db`: the schema's view and triggers call it."""
        self._db = db
        self._doc_count: dict[str, int] = {}
        db.create_function("m3_keyword_form", 1, keyword_form, deterministic=True)

    def search(self, query: str, n: int, total: int) -> list[int]:
        """Ids of the `n` chunks that best match the informative words of `query`, of `total` chunks.

        A word in half the chunks or more gets no weight from FTS5's BM25 (its IDF is clamped to 1e-6)
        but costs a pass over all those chunks, so such words are left out, as are words in no chunk;
        of the rest only the MAX_TERMS rarest are kept.
        """
        pieces = query_pieces(query)
        counts = self._doc_counts({word for piece in pieces for word in piece.split()})

        def count(piece: str) -> int:  # a phrase is in no more chunks than its rarest word
            return min(counts[word] for word in piece.split())

        kept = sorted((p for p in pieces if 0 < 2 * count(p) < total), key=count)[:MAX_TERMS]
        if not kept:
            return []
        rows = self._db.execute(
            "SELECT rowid FROM items_fts WHERE items_fts MATCH ? ORDER BY rank LIMIT ?",
            (fts_query(kept), n),
        )
        return [i for (i,) in rows]

    def rarest(self, query: str, at_most: int, total: int) -> list[str]:
        """The words of `query` held by the fewest chunks (all of them when tied), of `total`, when that is
        1 to `at_most` chunks and fewer than half, as `search` weighs words; empty when no word is. The
        bigrams of scripts written without spaces are not words (哪一年 gives 一年) and are left out."""
        words = {w for w in tokens(query) if not _BIGRAM_RUN.match(w)}
        counts = {w: n for w, n in self._doc_counts(words).items() if 0 < n <= at_most and 2 * n < total}
        fewest = min(counts.values(), default=0)
        return sorted(w for w, n in counts.items() if n == fewest)

    def holding(self, words: Sequence[str], ids: Sequence[int]) -> set[int]:
        """Those of `ids` whose text holds one of `words` (in keyword form)."""
        rows = self._db.execute(
            f"SELECT rowid FROM items_fts WHERE items_fts MATCH ? AND rowid IN ({placeholders(len(ids))})",
            (fts_query(words), *ids),
        )
        return {i for (i,) in rows}

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
