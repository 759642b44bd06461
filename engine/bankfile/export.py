"""Export: the catalog's documents (all of them, one folder's, or those a glob names) with their chunks,
memories and vectors, streamed into one `.m3bank` file (docs/bank-format.md).

Paths leave as POSIX paths relative to a label (a watched folder's base name, an imported collection's
label), in NFC: no absolute path or user name is written. A document whose name cannot travel (not
UTF-8, a backslash, a control character) is left out and reported, never renamed.
"""

from __future__ import annotations

import fnmatch
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine import package_version
from engine.bankfile.layout import BankFileError, check_cancel
from engine.bankfile.records import check_label, check_path
from engine.bankfile.writer import BankWriter
from ingest import chunker
from ingest.folders import candidates

if TYPE_CHECKING:
    from engine.facade import Engine
    from engine.memory.profiles import MemoryProfile

Progress = Callable[[str, int, int], None]  # (stage, done, total)
BATCH = 256  # records read from the catalog, the bank or the index at a time
CANCELLED = "The export was cancelled; no file was written."


@dataclass
class Exported:
    """What an export wrote (counts) and what it left out (`skipped`: one sentence per document)."""

    path: Path
    documents: int = 0
    chunks: int = 0
    memories: int = 0
    vectors: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Doc:
    id: int
    label: str
    path: str
    sha256: str | None
    size: int


def export_bank(
    engine: Engine,
    target: Path,
    folder: str | None = None,
    collection: str | None = None,
    documents: str | None = None,
    vectors: bool = True,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Exported:
    """Write the bank file `target` (replacing it; a partial file never carries its name).

    folder: a watched folder's path; collection: an imported collection's label; documents: a glob
    matched against `label/path` and the absolute path (`*` crosses `/`); at most one of them.
    BankFileError (one sentence) for nothing to export, a target that is no regular file or lies in the
    data, cache or config folder, or one that cannot be written; BankFileCancelled when `cancel` is set
    (the partial file is removed)."""
    if sum(x is not None for x in (folder, collection, documents)) > 1:
        raise BankFileError("Export a folder, a collection or the documents a glob names: one of them.")
    report = Exported(Path(target))
    _check_target(engine, report.path)
    docs = _select(engine, folder, collection, documents, report.skipped)
    scoped = folder or collection or documents
    if not docs:
        raise BankFileError("There are no documents to export" + (" in that scope." if scoped else "."))
    progress = on_progress or (lambda stage, done, total: None)
    manifest = _manifest(engine, _scope(docs, folder, collection, documents))
    try:
        with BankWriter(report.path) as writer:
            _sections(engine, writer, docs, vectors, report, progress, cancel or threading.Event())
            writer.finish(**manifest)
    except OSError as exc:
        raise BankFileError(f"{report.path} cannot be written ({exc.strerror or exc}).") from exc
    report.bytes = report.path.stat().st_size
    return report


def _sections(
    engine: Engine,
    writer: BankWriter,
    docs: list[_Doc],
    vectors: bool,
    report: Exported,
    progress: Progress,
    stop: threading.Event,
) -> None:
    """Stream the documents, their chunks, the memories the bank holds of them and (if `vectors`) their
    vectors into `writer`, counting into `report`."""
    with writer.section("documents", codec="zstd") as out:
        for i, doc in enumerate(docs):
            out.write_line(
                {"id": i, "label": doc.label, "path": doc.path, "sha256": doc.sha256, "size": doc.size}
            )
    report.documents = len(docs)
    hashes: dict[str, None] = {}
    with writer.section("chunks", codec="zstd") as out:
        for i, doc in enumerate(docs):
            check_cancel(stop, CANCELLED)
            for r in engine.catalog.rows(
                "SELECT ord, hash, text, char_start, char_end, line_start, line_end, page FROM chunks"
                " WHERE document_id = ? ORDER BY ord",
                (doc.id,),
            ):
                out.write_line({"document": i, **r})
                hashes[r["hash"]] = None
                report.chunks += 1
            progress("writing documents", i + 1, len(docs))
    stored = set(engine.bank.keys(engine.profile.name))
    with_memory = [h for h in hashes if h in stored]
    with writer.section("memories", codec="none") as out:
        for done, h in enumerate(with_memory, 1):
            check_cancel(stop, CANCELLED)
            payload = engine.bank.encoded(h)
            if payload is not None:  # damaged since: written again from the text where imported
                out.write_memory(h, payload)
                report.memories += 1
            if done % 16 == 0 or done == len(with_memory):
                progress("writing memories", done, len(with_memory))
    if vectors:
        with writer.section("vectors", codec="none") as out:
            for done, part in _parts(list(hashes)):
                check_cancel(stop, CANCELLED)
                for h, v in engine.retriever.vectors(part).items():
                    out.write_vector(h, v)
                    report.vectors += 1
                progress("writing vectors", done, len(hashes))


def _manifest(engine: Engine, scope: dict) -> dict:
    """The manifest's fields the writer does not fill in itself: who wrote the memories and vectors."""
    config = engine.runtime.model.config
    fingerprint, tokenizer = engine.runtime.fingerprints
    embedder = engine.retriever.embedder
    return {
        "producer": f"memory3 {package_version()}",
        "scope": scope,
        "model": {
            "name": engine.model_path.name,
            "fingerprint": fingerprint,
            "tokenizer": tokenizer,
            "arch": config.arch,
            "n_layer": config.n_layer,
            "n_kv_head": config.n_kv_head,
            "head_dim": config.head_dim,
        },
        "profile": profile_info(engine.profile),
        "embedder": {"name": embedder.name, "dim": embedder.dim, "hash": embedder.weights_hash},
        "chunker": chunker.VERSION,
    }


def profile_info(profile: MemoryProfile) -> dict:
    """A memory profile as the manifest records it."""
    layers = profile.layers if isinstance(profile.layers, str) else list(profile.layers)
    return {
        "name": profile.name,
        "layers": layers,
        "tokens": profile.tokens,
        "bits": profile.bits,
        "positions": profile.positions,
        "group": profile.group,
    }


def _select(
    engine: Engine, folder: str | None, collection: str | None, glob: str | None, skipped: list[str]
) -> list[_Doc]:
    """The documents in scope, in label and path order, with their labels and travelling paths."""
    catalog = engine.catalog
    # imported collections first: they keep their labels, a watched folder with the same base name yields
    folders = catalog.rows("SELECT id, path, kind FROM folders ORDER BY kind, path")
    labels = _labels(folders)
    if folder is not None:
        paths = {str(p) for p in candidates(folder)}
        folders = [f for f in folders if f["kind"] == "watched" and f["path"] in paths]
        if not folders:
            raise BankFileError(f"{folder} is not a watched folder.")
    elif collection is not None:
        folders = [f for f in folders if f["kind"] == "imported" and f["path"] == collection]
        if not folders:
            raise BankFileError(f"There is no imported collection named '{collection}'.")
    docs: dict[tuple[str, str], _Doc] = {}
    for f in folders:
        for r in catalog.rows(
            "SELECT id, rel_path, sha256, size FROM documents WHERE folder_id = ? AND status = 'ok'"
            " ORDER BY rel_path",
            (f["id"],),
        ):
            label, rel = labels[f["id"]], r["rel_path"]
            full = f"{f['path']}/{rel}"
            if glob is not None and not (
                fnmatch.fnmatchcase(f"{label}/{rel}", glob) or fnmatch.fnmatchcase(full, glob)
            ):
                continue
            path = unicodedata.normalize("NFC", rel)
            try:
                check_path(label, path)
            except BankFileError as exc:
                skipped.append(f"{full}: {exc}")
                continue
            if (label, path) in docs:  # names that differ only in Unicode normalization: the first travels
                skipped.append(f"{full}: another file has the same name once normalized (NFC).")
                continue
            docs[label, path] = _Doc(r["id"], label, path, r["sha256"], r["size"])
    return sorted(docs.values(), key=lambda d: (d.label, d.path))


def _labels(folders: list[dict]) -> dict[int, str]:
    """A label per folder, in the order given: an imported collection keeps its own, a watched folder
    takes its base name (NFC; "folder" if that cannot travel), made unique with -2, -3... where it would
    repeat one before it."""
    taken: set[str] = set()
    out: dict[int, str] = {}
    for f in folders:
        path = Path(f["path"])
        # a watched home folder would carry the user's name as its label
        name = "home" if f["kind"] == "watched" and path == Path.home() else path.name
        base = f["path"] if f["kind"] == "imported" else unicodedata.normalize("NFC", name)
        try:
            check_label(base)
        except BankFileError:
            base = "folder"
        label, n = base, 1
        while label in taken:
            n += 1
            label = f"{base}-{n}"
        taken.add(label)
        out[f["id"]] = label
    return out


def _scope(docs: list[_Doc], folder: str | None, collection: str | None, glob: str | None) -> dict:
    """The manifest's scope. A glob is not kept: it is matched against full paths, so any part of it may
    name the user's folders."""
    if folder is not None or collection is not None:
        return {"kind": "folder", "value": docs[0].label}
    if glob is not None:
        return {"kind": "documents", "value": None}
    return {"kind": "all", "value": None}


def _check_target(engine: Engine, target: Path) -> None:
    """Refuse a target that is not a plain file to replace, or that lies in memory3's own folders."""
    if "\0" in str(target):
        raise BankFileError("A file's name cannot hold a NUL character.")
    if target.is_dir():
        raise BankFileError(f"{target} is a folder; give the bank file's name.")
    if not target.parent.is_dir():
        raise BankFileError(f"{target.parent} does not exist.")
    if target.exists() and not target.is_file():
        raise BankFileError(f"{target} is not a regular file; a bank file cannot replace it.")
    where = target.parent.resolve() / target.name
    home = engine.home
    for own in (home.data, home.cache, home.config):
        if where.is_relative_to(own.resolve()):
            raise BankFileError(f"{target} is inside memory3's own folder {own}; choose another place.")


def _parts(hashes: list[str]) -> Iterator[tuple[int, list[str]]]:
    for a in range(0, len(hashes), BATCH):
        part = hashes[a : a + BATCH]
        yield a + len(part), part
