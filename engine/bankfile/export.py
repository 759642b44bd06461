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
from engine.bankfile.layout import BankFileCancelled, BankFileError
from engine.bankfile.records import check_label, check_path
from engine.bankfile.writer import BankWriter
from ingest import chunker
from ingest.folders import candidates

if TYPE_CHECKING:
    from engine.facade import Engine
    from engine.memory.profiles import MemoryProfile

Progress = Callable[[str, int, int], None]  # (stage, done, total)
BATCH = 256  # records read from the catalog, the bank or the index at a time


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
    documents: str | None = None,
    vectors: bool = True,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Exported:
    """Write the bank file `target` (replacing it; a partial file never carries its name).

    folder: a watched folder's path or an imported collection's label; documents: a glob matched against
    `label/path` and the absolute path (`*` crosses `/`). BankFileError when nothing is to be exported,
    BankFileCancelled when `cancel` is set (the partial file is removed)."""
    if folder is not None and documents is not None:
        raise BankFileError("Export either a folder or the documents a glob names, not both.")
    report = Exported(Path(target))
    docs = _select(engine, folder, documents, report.skipped)
    if not docs:
        raise BankFileError(
            "There are no documents to export" + (" in that scope." if folder or documents else ".")
        )
    progress = on_progress or (lambda stage, done, total: None)
    stop = cancel or threading.Event()
    catalog, config = engine.catalog, engine.runtime.model.config
    profile = engine.profile
    with BankWriter(report.path) as writer:
        with writer.section("documents", codec="zstd") as out:
            for i, doc in enumerate(docs):
                out.write_line(
                    {"id": i, "label": doc.label, "path": doc.path, "sha256": doc.sha256, "size": doc.size}
                )
        report.documents = len(docs)
        hashes: dict[str, None] = {}
        with writer.section("chunks", codec="zstd") as out:
            for i, doc in enumerate(docs):
                _check(stop)
                for r in catalog.rows(
                    "SELECT ord, hash, text, char_start, char_end, line_start, line_end, page FROM chunks"
                    " WHERE document_id = ? ORDER BY ord",
                    (doc.id,),
                ):
                    out.write_line({"document": i, **r})
                    hashes[r["hash"]] = None
                    report.chunks += 1
                progress("writing documents", i + 1, len(docs))
        stored = set(engine.bank.keys(profile.name))
        with_memory = [h for h in hashes if h in stored]
        with writer.section("memories", codec="none") as out:
            for done, h in enumerate(with_memory, 1):
                _check(stop)
                payload = engine.bank.encoded(h)
                if payload is not None:  # damaged since: written again from the text where imported
                    out.write_memory(h, payload)
                    report.memories += 1
                if done % 16 == 0 or done == len(with_memory):
                    progress("writing memories", done, len(with_memory))
        if vectors:
            with writer.section("vectors", codec="none") as out:
                for done, part in _parts(list(hashes)):
                    _check(stop)
                    for h, v in engine.retriever.vectors(part).items():
                        out.write_vector(h, v)
                        report.vectors += 1
                    progress("writing vectors", done, len(hashes))
        fingerprint, tokenizer = engine.runtime.fingerprints
        embedder = engine.retriever.embedder
        writer.finish(
            producer=f"memory3 {package_version()}",
            scope={
                "kind": "folder" if folder else "documents" if documents else "all",
                "value": _scope_value(docs, folder, documents),
            },
            model={
                "name": engine.model_path.name,
                "fingerprint": fingerprint,
                "tokenizer": tokenizer,
                "arch": config.arch,
                "n_layer": config.n_layer,
                "n_kv_head": config.n_kv_head,
                "head_dim": config.head_dim,
            },
            profile=profile_info(profile),
            embedder={"name": embedder.name, "dim": embedder.dim, "hash": embedder.weights_hash},
            chunker=chunker.VERSION,
        )
    report.bytes = report.path.stat().st_size
    return report


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


def _select(engine: Engine, folder: str | None, glob: str | None, skipped: list[str]) -> list[_Doc]:
    """The documents in scope, in label and path order, with their labels and travelling paths."""
    catalog = engine.catalog
    folders = catalog.rows("SELECT id, path, kind FROM folders ORDER BY kind DESC, path")
    if folder is not None:
        folders = _folder(folders, folder)
    labels = _labels(folders)
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
    return list(docs.values())


def _folder(folders: list[dict], name: str) -> list[dict]:
    """The folder `name` names: an imported collection by its label, else a watched folder by its path."""
    chosen = [f for f in folders if f["kind"] == "imported" and f["path"] == name]
    if not chosen:
        paths = {str(p) for p in candidates(name)}
        chosen = [f for f in folders if f["kind"] == "watched" and f["path"] in paths]
    if not chosen:
        raise BankFileError(f"{name} is neither a watched folder nor an imported collection.")
    return chosen


def _labels(folders: list[dict]) -> dict[int, str]:
    """A label per folder: an imported collection keeps its own, a watched folder takes its base name
    (NFC), made unique with -2, -3... where two would share one."""
    taken: set[str] = set()
    out: dict[int, str] = {}
    for f in folders:
        base = f["path"] if f["kind"] == "imported" else unicodedata.normalize("NFC", Path(f["path"]).name)
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


def _scope_value(docs: list[_Doc], folder: str | None, glob: str | None) -> str | None:
    if folder is not None:
        return docs[0].label
    return glob


def _parts(hashes: list[str]) -> Iterator[tuple[int, list[str]]]:
    for a in range(0, len(hashes), BATCH):
        part = hashes[a : a + BATCH]
        yield a + len(part), part


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise BankFileCancelled("The export was cancelled; no file was written.")
