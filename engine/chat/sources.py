"""What a chat reads: the chunks a query retrieves, named through the catalog, and the memories of them.

One object owns the three stores behind an answer's sources — the retriever (vectors and keywords), the
catalog (chunk texts and where they come from) and the memory store — so that a chat asks it for chunks
and memories instead of calling back into whoever built it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.memory.profiles import MemoryKV
from engine.memory.store import MemoryStore
from engine.retrieval.retriever import Retriever
from ingest.catalog import Catalog


@dataclass(frozen=True)
class Chunk:
    """A retrieved chunk: its hash (the memory's key), text, where it comes from, and how well it matched
    its query (the retriever's fused score: reciprocal rank fusion, engine/retrieval/fusion.py)."""

    hash: str
    text: str
    path: str
    page: int | None
    line_start: int
    line_end: int
    score: float
    front_matter: dict = field(default_factory=dict)  # its note's title, date and tags, where it has them
    missing: bool = False  # its file is not on the disk now (its folder renamed or unplugged)


@dataclass(frozen=True)
class Reading:
    """One retrieval of an answer: what the model had read by then (`step`: body and reply tokens), the
    query, and the chunks it brought, best first."""

    step: int
    query: str
    chunks: list[Chunk]

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "query": self.query,
            "sources": [
                {
                    "hash": c.hash,
                    "path": c.path,
                    "page": c.page,
                    "line_start": c.line_start,
                    "line_end": c.line_end,
                    "score": c.score,
                }
                for c in self.chunks
            ],
        }


class Sources:
    def __init__(self, retriever: Retriever, catalog: Catalog, store: MemoryStore | None):
        """store: where the chunks' memories come from; None: a chat that reads no memories."""
        self.retriever, self.catalog, self.store = retriever, catalog, store

    def with_store(self, store: MemoryStore | None) -> Sources:
        """The same chunks, their memories from another store (benchmarks compare memory profiles)."""
        return Sources(self.retriever, self.catalog, store)

    def search(self, query: str, k: int, focus: bool = False) -> list[Chunk]:
        """The k chunks that best match `query` (vectors and keywords fused), best first; chunks deleted
        since they were indexed are left out, so fewer may come back. focus: only those of them that hold
        the query's rarest word, when some do (`Retriever.focus`): what an answer reads."""
        hits = self.retriever.search(query, k)
        if focus:
            hits = self.retriever.focus(query, hits)
        texts = self.catalog.chunk_texts(h.hash for h in hits)
        chunks = []
        for hit in hits:
            found = self.catalog.sources(hit.hash)
            if hit.hash not in texts or not found:
                continue  # deleted since it was indexed
            there = next((s for s in found if os.path.exists(s.path)), None)  # the first copy still there
            src = there or found[0]
            chunks.append(
                Chunk(
                    hit.hash,
                    texts[hit.hash],
                    str(src.path),
                    src.page,
                    src.line_start,
                    src.line_end,
                    hit.score,
                    src.front_matter,
                    there is None,
                )
            )
        return chunks

    def recall(self, chunks: Sequence[Chunk]) -> list[MemoryKV]:
        """The chunks' memories, in order, each keyed by its chunk's hash; none without a store."""
        if self.store is None:
            return []
        return self.store.get_many([(c.hash, c.text) for c in chunks])
