"""A passage in its context: a chunk and the chunks around it in its document, so that a reader sees where
a cited or retrieved passage stands.

Chunks partition their document's text in order (ingest/chunker.py), so neighbours never overlap: the
texts before, the passage's and those after, joined, are the document's text over that span.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingest.catalog import Catalog
from ingest.errors import NotFoundError


@dataclass(frozen=True)
class Piece:
    text: str
    page: int | None
    line_start: int
    line_end: int


@dataclass(frozen=True)
class Passage:
    hash: str
    path: Path
    piece: Piece
    before: list[Piece]  # nearest last
    after: list[Piece]  # nearest first


def passage(catalog: Catalog, chunk_hash: str, path: Path | None = None, context: int = 2) -> Passage:
    """The chunk `chunk_hash` with up to `context` chunks before and after it. A text found in several
    documents is taken from the one at `path`, else from its first source (as citations name it).
    NotFoundError when no chunk (of the document at `path`) has that hash."""
    places = catalog.rows(
        "SELECT c.document_id, c.ord, f.path, d.rel_path FROM chunks c"
        " JOIN documents d ON d.id = c.document_id JOIN folders f ON f.id = d.folder_id"
        " WHERE c.hash = ? ORDER BY f.path, d.rel_path, c.ord",
        (chunk_hash,),
    )
    found = next((p for p in places if path is None or Path(p["path"]) / p["rel_path"] == path), None)
    if found is None:
        if path is not None and places:
            raise NotFoundError(f"That passage is not in {path}.")
        raise NotFoundError(
            "That passage is no longer in your documents: its file was changed or removed since."
        )
    rows = catalog.rows(
        "SELECT ord, text, page, line_start, line_end FROM chunks"
        " WHERE document_id = ? AND ord BETWEEN ? AND ? ORDER BY ord",
        (found["document_id"], found["ord"] - context, found["ord"] + context),
    )
    pieces = {r["ord"]: Piece(r["text"], r["page"], r["line_start"], r["line_end"]) for r in rows}
    at = found["ord"]
    return Passage(
        chunk_hash,
        Path(found["path"]) / found["rel_path"],
        pieces[at],
        [p for o, p in pieces.items() if o < at],
        [p for o, p in pieces.items() if o > at],
    )
