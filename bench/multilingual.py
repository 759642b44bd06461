"""The multilingual part of `m3 bench retrieval`: does a query in a user's language find the passage
that answers it, by keyword, by meaning, and fused as chat retrieves?

`assets/multilingual/` holds four short documents in each of thirteen languages (English as the control;
German, French, Spanish, Russian, Greek, Arabic, Hebrew, Hindi, Thai, Chinese, Japanese, Korean) and a few
queries per language whose answer is in one known paragraph (`queries.json`). A query's `kind` says how it was
written: `words` uses the document's words, `typed` spells them as a user might type them (no diacritics,
another case, ss for ß, half-width kana, a part of a German compound...; `note` says which), `paraphrase`
asks in other words. Every document of every language is in one index, as in a folder of mixed languages;
each paragraph is a chunk (the chunker cuts at blank lines first, and these paragraphs are under its
128-token budget). A query is found at k when the paragraph that answers it is among the first k chunks:
with twelve chunks per language, a search that only told the languages apart would find it at 1 one time
in twelve and at 5 five times in twelve.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.retrieval.embedder import Embedder
from engine.retrieval.retriever import Retriever
from ingest.parsers import parse

FOLDER = Path(__file__).resolve().parents[1] / "assets" / "multilingual"
K = 5
METHODS = ("keyword", "vector", "fused")
LANGUAGES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "ru": "Russian",
    "el": "Greek",
    "ar": "Arabic",
    "he": "Hebrew",
    "hi": "Hindi",
    "th": "Thai",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
}


@dataclass(frozen=True)
class Query:
    language: str
    text: str
    chunk: str  # the answer's: "<language>/<file stem>#<paragraph>"
    kind: str  # words, typed or paraphrase
    note: str = ""


def load(folder: Path = FOLDER) -> tuple[list[tuple[str, str]], list[Query]]:
    """The chunks, (hash "<language>/<stem>#<paragraph>", text) as ingest parses the files; the queries."""
    chunks = []
    for path in sorted(folder.glob("*/*.txt")):
        paragraphs = re.split(r"\n\s*\n", parse(path).text.strip())
        chunks += [(f"{path.parent.name}/{path.stem}#{i}", p) for i, p in enumerate(paragraphs)]
    queries = [
        Query(
            language, q["query"], f"{language}/{q['document']}#{q['paragraph']}", q["kind"], q.get("note", "")
        )
        for language, entries in json.loads((folder / "queries.json").read_text("utf-8")).items()
        for q in entries
    ]
    return chunks, queries


def ranks(r: Retriever, embedder: Embedder, query: Query) -> dict[str, int | None]:
    """The 1-based rank of the query's answer among the first K chunks of each method (None: not there)."""
    text = unicodedata.normalize("NFKC", query.text)  # as Retriever.search takes it
    ids = {
        "keyword": r.keyword_search(text, K),
        "vector": r.vector_search(embedder.embed([text])[0], K),
    }
    names = r.hashes([i for found in ids.values() for i in found])
    found = {method: [names[i] for i in found] for method, found in ids.items()}
    found["fused"] = [hit.hash for hit in r.search(query.text, K)]
    return {
        method: next((n for n, h in enumerate(hashes, 1) if h == query.chunk), None)
        for method, hashes in found.items()
    }


def _recall(rows: list[dict]) -> dict:
    """Recall@1 and @K of each method over `rows` (each a query's ranks)."""
    out: dict = {"queries": len(rows)}
    for method in METHODS:
        found = [row[method] for row in rows]
        out[method] = {
            "recall_at_1": statistics.mean(f == 1 for f in found),
            f"recall_at_{K}": statistics.mean(f is not None for f in found),
        }
    return out


def measure(embedder: Embedder, folder: Path = FOLDER) -> dict:
    """Recall@1 and @K by keyword, vector and fused search, per language and per kind of query, with
    each query's ranks."""
    chunks, queries = load(folder)
    with tempfile.TemporaryDirectory(prefix="m3-multilingual-") as tmp, Retriever(Path(tmp), embedder) as r:
        r.add(chunks)
        rows = [
            {"language": q.language, "query": q.text, "chunk": q.chunk, "kind": q.kind, "note": q.note}
            | ranks(r, embedder, q)
            for q in queries
        ]
    others = [row for row in rows if row["language"] != "en"]
    per_language = Counter(h.split("/")[0] for h, _ in chunks)
    return {
        "languages": {lang: _recall([row for row in rows if row["language"] == lang]) for lang in LANGUAGES},
        "other_languages": _recall(others),
        "kinds": {
            kind: _recall([row for row in others if row["kind"] == kind])
            for kind in ("words", "typed", "paraphrase")
        },
        "queries": rows,
        "setup": {
            "folder": "assets/multilingual",
            "documents": len({h.split("#")[0] for h, _ in chunks}),
            "chunks": len(chunks),
            "k": K,
            "found": "the paragraph that answers the query among the first k chunks",
            "chance": {  # of a search that finds the query's language and nothing more
                "recall_at_1": statistics.mean(1 / n for n in per_language.values()),
                f"recall_at_{K}": statistics.mean(min(K, n) / n for n in per_language.values()),
            },
        },
    }


def table(m: dict) -> str:
    """Recall per language and per kind of query (the kinds over the languages other than English)."""
    head = " | ".join(f"{method} @1 | {method} @{K}" for method in METHODS)
    lines = [f"| language | queries | {head} |", "|---|---:|" + "---:|" * 2 * len(METHODS)]

    def row(name: str, r: dict) -> str:
        cells = " | ".join(f"{r[m]['recall_at_1']:.2f} | {r[m][f'recall_at_{K}']:.2f}" for m in METHODS)
        return f"| {name} | {r['queries']} | {cells} |"

    lines += [row(LANGUAGES[lang], r) for lang, r in m["languages"].items()]
    lines.append(row("**all but English**", m["other_languages"]))
    lines += [row(f"{kind} (all but English)", r) for kind, r in m["kinds"].items()]
    setup = m["setup"]
    chance = setup["chance"]
    lines += [
        "",
        f"{setup['documents']} documents in {len(m['languages'])} languages, one index of {setup['chunks']} "
        f"paragraph chunks ({setup['folder']}); found: {setup['found']} (chance, knowing only the "
        f"language: {chance['recall_at_1']:.2f} at 1, {chance[f'recall_at_{K}']:.2f} at {K}).",
    ]
    return "\n".join(lines)
