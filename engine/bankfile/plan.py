"""What importing a bank file would do, decided before anything changes: the compatibility verdict (take
its memories and vectors, or write them again here) and the plan (what is new, replaced, already here).

A bank's memories are the attention keys and values of one model under one memory profile: another
model (fingerprint), tokenizer or profile cannot read them, so their text is kept and the memories are
written again here, in the background. Vectors from another embedder are recomputed the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import msgspec

from engine.bankfile.export import profile_info
from engine.bankfile.layout import check_cancel
from engine.bankfile.manifest import Manifest
from engine.bankfile.reader import BankReader, MemoryExpectation
from engine.bankfile.records import ChunkRecord, DocumentRecord
from ingest import chunker

if TYPE_CHECKING:
    from engine.facade import Engine
    from ingest.catalog import Catalog, Document

Progress = Callable[[str, int, int], None]  # (stage, done, total)
CANCELLED = "The import was cancelled before its commit; nothing was changed."


@dataclass
class Verdict:
    """memories: "import" (take the file's) or "write" (write them here from the text); vectors: "import"
    or "embed"; reasons: one sentence for each thing that is not taken as it is."""

    memories: Literal["import", "write"]
    vectors: Literal["import", "embed"]
    reasons: list[str] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return self.memories == "import" and self.vectors == "import"


@dataclass
class Plan:
    """What an import changes, counted. Chunks and memories are counted by distinct text (hash)."""

    collections: list[str] = field(default_factory=list)
    new_collections: list[str] = field(default_factory=list)
    documents_new: int = 0
    documents_replaced: int = 0
    documents_unchanged: int = 0
    chunks: int = 0  # distinct chunk texts in the file
    memories_import: int = 0  # taken from the file
    memories_present: int = 0  # already written here
    memories_write: int = 0  # to write here from the text, in the background
    vectors_import: int = 0
    vectors_present: int = 0
    vectors_embed: int = 0

    @property
    def changes(self) -> bool:
        """Whether the catalog gains or replaces documents."""
        return bool(self.documents_new or self.documents_replaced)

    @property
    def work(self) -> bool:
        """Whether importing does anything at all: documents, or memories or vectors this home lacks."""
        return self.changes or bool(self.memories_import or self.vectors_import or self.vectors_embed)


@dataclass
class Contents:
    """A checked bank file's documents and chunks (in memory: the commit needs them all) and which chunk
    hashes it holds memories and vectors for (those are streamed from the file when applied)."""

    manifest: Manifest
    documents: list[DocumentRecord]
    chunks: dict[int, list[ChunkRecord]]  # by document id, in order
    memories: set[str]
    vectors: set[str]

    @property
    def hashes(self) -> set[str]:
        return {c.hash for chunks in self.chunks.values() for c in chunks}


def verdict(engine: Engine, manifest: Manifest) -> Verdict:
    """Whether the file's memories and vectors can be used here as they are, and why not."""
    reasons: list[str] = []
    fingerprint, tokenizer = engine.runtime.fingerprints
    model = manifest.model
    memories: Literal["import", "write"] = "import"
    if model.fingerprint != fingerprint:
        memories = "write"
        reasons.append(
            f"Its memories were written by another model ({model.name}); they will be written again here"
            " from the text, in the background."
        )
    elif model.tokenizer != tokenizer:
        memories = "write"
        reasons.append(
            "Its model's tokenizer differs from this one's; its memories will be written again here."
        )
    elif msgspec.to_builtins(manifest.profile) != profile_info(engine.profile):
        memories = "write"
        reasons.append(
            f"Its memories have the profile {manifest.profile.name}, this engine uses {engine.profile.name};"
            " they will be written again here from the text, in the background."
        )
    embedder = engine.retriever.embedder
    theirs = manifest.embedder
    vectors: Literal["import", "embed"] = "import"
    if (theirs.name, theirs.dim, theirs.hash) != (embedder.name, embedder.dim, embedder.weights_hash):
        vectors = "embed"
        reasons.append(
            f"Its vectors were made by another embedder ({theirs.name}); the texts will be embedded here."
        )
    elif manifest.counts.vectors == 0:
        vectors = "embed"
        reasons.append("It holds no vectors; the texts will be embedded here.")
    if manifest.chunker != chunker.VERSION:
        reasons.append(
            f"Its documents were cut into chunks by chunker version {manifest.chunker} (this one is"
            f" {chunker.VERSION}); they are kept as they were cut."
        )
    return Verdict(memories, vectors, reasons)


def expectation(engine: Engine, manifest: Manifest, memories: str) -> MemoryExpectation:
    """The shape every memory record must have: the manifest's model and profile, and, when the memories
    are to be used here, this engine's model too (a fingerprint match with other dimensions is a lie)."""
    local = engine.runtime.model.config if memories == "import" else None
    return MemoryExpectation.of(manifest, local)


def read_contents(
    engine: Engine,
    reader: BankReader,
    memories: str,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Contents:
    """Read and check every section of the file (reader.verify's order and rules), keeping documents and
    chunks. BankFileError (one sentence) for the first fault found, BankFileCancelled if `cancel` is set."""
    manifest = reader.manifest
    expect = expectation(engine, manifest, memories)
    documents: list[DocumentRecord] = []
    chunks: dict[int, list[ChunkRecord]] = {}
    memory_hashes: set[str] = set()
    vector_hashes: set[str] = set()

    def keep(section: str, record: object) -> None:
        check_cancel(cancel, CANCELLED)
        if section == "documents":
            documents.append(record)
        elif section == "chunks":
            chunks.setdefault(record.document, []).append(record)
        elif section == "memories":
            memory_hashes.add(record)
        elif section == "vectors":
            vector_hashes.add(record)

    checking = None if on_progress is None else lambda name, done, total: on_progress("checking", done, total)
    reader.verify(expect=expect, on_record=keep, on_progress=checking)
    return Contents(manifest, documents, chunks, memory_hashes, vector_hashes)


def place(
    catalog: Catalog, folder_id: int | None, path: str, hashes: list[str]
) -> tuple[str, Document | None]:
    """Where a file's document goes in its collection (`folder_id`, None if the collection is new): "new",
    "unchanged" (the same chunks in order) or "replaced", with the document already there."""
    here = catalog.documents(folder_id, path).get(path) if folder_id is not None else None
    if here is None:
        return "new", None
    return ("unchanged" if catalog.chunk_hashes(here.id) == hashes else "replaced"), here


def brought(engine: Engine, contents: Contents, verdict: Verdict) -> set[str]:
    """The chunk texts whose memory (and vector) the file brings: new to this catalog, and held by the
    file under a verdict that takes its memories. A text this home knows keeps its own (or has it
    written here): a file can never replace, or plant, a memory for a text already here."""
    if verdict.memories != "import":
        return set()
    hashes = contents.hashes
    return (contents.memories & hashes) - engine.catalog.memory_hashes(hashes)


def plan(engine: Engine, contents: Contents, verdict: Verdict) -> Plan:
    """What importing `contents` into this engine's catalog, bank and index would change."""
    catalog = engine.catalog
    out = Plan()
    existing = {str(f.path): f.id for f in catalog.folders("imported")}
    out.collections = list(dict.fromkeys(d.label for d in contents.documents))
    out.new_collections = [label for label in out.collections if label not in existing]
    for doc in contents.documents:
        hashes = [c.hash for c in contents.chunks.get(doc.id, [])]
        where, _ = place(catalog, existing.get(doc.label), doc.path, hashes)
        setattr(out, f"documents_{where}", getattr(out, f"documents_{where}") + 1)
    hashes = contents.hashes
    known = catalog.memory_hashes(hashes)
    taken = brought(engine, contents, verdict)
    out.chunks = len(hashes)
    out.memories_present = len(catalog.memory_hashes(hashes, written=True))
    out.memories_import = len(taken)
    out.memories_write = len(hashes - known - taken)
    out.vectors_present = len(engine.retriever.stored(hashes))
    out.vectors_import = len(taken & contents.vectors) if verdict.vectors == "import" else 0
    out.vectors_embed = len(hashes - known) - out.vectors_import
    if verdict.memories == "import" and out.memories_write:
        verdict.reasons.append(
            f"It holds no memory for {out.memories_write} of its texts; they will be written here from the"
            " text, in the background."
        )
    return out
