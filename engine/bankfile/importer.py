"""Import a bank file: check all of it, stage it, commit it to the catalog in one transaction, then apply
its memories and vectors. Read-only until that one commit.

The steps, and what a kill -9 during each leaves:
1. copy the file into the data folder's `imports/` under a temporary name, fsynced (a file we own, so
   nothing can change it between the check and the use); 2. read and check every byte of the copy;
3. rename it to `bank-<token>.m3bank`; 4. one catalog transaction adds the collections, documents and
chunks, marks the memories the file brings as written, and records the import as pending.
Before 4 commits, nothing of the user's changed: the next start deletes the staged copy. After it, the
import is decided: 5. its memories and vectors are applied in short turns (answers go first), from the
staged copy, by this call or, after a crash or a cancel, by the engine's background work; then the
pending row and the copy are deleted. Applying is idempotent (both the bank and the index skip what they
hold), so a crash halfway through is finished by running it again.

Merging is by chunk hash (a chunk's hash is its text's): a text already here keeps its memory and vector,
and importing the same file twice changes nothing. Nothing in the file is unpickled, evaluated or used as
a path: documents live in the catalog only, in read-only collections named by their labels.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.bankfile.layout import BankFileCancelled, BankFileError
from engine.bankfile.manifest import Manifest
from engine.bankfile.plan import Contents, Plan, Verdict, plan, read_contents, verdict, written_here
from engine.bankfile.reader import BankReader
from engine.memory.codec import decode
from ingest.atomic import fsync_dir
from ingest.catalog import PendingImport
from ingest.chunker import Chunk
from ingest.sqlite import batches, placeholders

if TYPE_CHECKING:
    from engine.facade import Engine

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)
COPY_BLOCK = 4 << 20
APPLY_BATCH = 64  # memories or vectors per turn on the engine: an answer waits for one batch at most
STAGED = "bank-{}.m3bank"
INCOMING = ".incoming-{}"


@dataclass
class Inspection:
    """A bank file, checked: its manifest, the verdict on its memories and vectors, and the plan."""

    manifest: Manifest
    verdict: Verdict
    plan: Plan
    file_bytes: int
    imported: bool = False  # committed (its memories may still be being applied: `pending`)
    pending: bool = False


class Importer:
    """Imports into one engine, one at a time (a lock; the background's resume only tries it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.folder = engine.home.data / "imports"
        self._lock = threading.Lock()

    def inspect(
        self, path: Path, on_progress: Progress | None = None, cancel: threading.Event | None = None
    ) -> Inspection:
        """Check the whole file where it is and say what importing it would do; writes nothing."""
        return self._inspect(BankReader.open(path), on_progress, cancel)[0]

    def run(
        self, path: Path, on_progress: Progress | None = None, cancel: threading.Event | None = None
    ) -> Inspection:
        """Import the bank file at `path` (see the module's docstring). BankFileError for a file that
        fails any check, BankFileCancelled if `cancel` is set before the commit; both change nothing. A
        cancel after the commit leaves the rest of the applying to the background (`pending`)."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            token = secrets.token_hex(8)
            incoming = self.folder / INCOMING.format(token)
            staged = self.folder / STAGED.format(token)
            committed = False
            try:
                size = BankReader.open(path).size  # the cheap checks first, on the user's file
                _copy(Path(path), incoming, size, on_progress, cancel)
                inspection, contents = self._inspect(BankReader.open(incoming), on_progress, cancel)
                _cancelled(cancel)
                if not inspection.plan.work:  # the same file again: nothing to commit or apply
                    inspection.imported = True
                    return inspection
                os.replace(incoming, staged)
                fsync_dir(self.folder)
                self._commit(contents, inspection.verdict, staged.name)
                committed = True
            finally:
                if not committed:
                    incoming.unlink(missing_ok=True)
                    staged.unlink(missing_ok=True)
            inspection.imported = True
            inspection.pending = not self._apply_pending(cancel, on_progress)
            return inspection

    def resume(self, stop: threading.Event | None = None) -> bool:
        """Finish imports committed but not applied (a crash, a cancel), delete staged copies no import
        will use; False when an import is running (it does this itself) or `stop` cut it short."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self._apply_pending(stop)
        finally:
            self._lock.release()

    # Checking

    def _inspect(
        self, reader: BankReader, on_progress: Progress | None, cancel: threading.Event | None
    ) -> tuple[Inspection, Contents]:
        decided = verdict(self.engine, reader.manifest)
        contents = read_contents(self.engine, reader, decided.memories, on_progress, cancel)
        planned = plan(self.engine, contents, decided)
        return Inspection(reader.manifest, decided, planned, reader.size), contents

    # The commit

    def _commit(self, contents: Contents, decided: Verdict, staged: str) -> None:
        """Everything the catalog learns from the file, in one transaction."""
        catalog = self.engine.catalog
        with catalog.atomic():
            collections = {str(f.path): f.id for f in catalog.folders("imported")}
            for doc in contents.documents:
                if doc.label not in collections:
                    collections[doc.label] = catalog.add_folder(Path(doc.label), kind="imported").id
                folder_id = collections[doc.label]
                chunks = [
                    Chunk(c.text, c.char_start, c.char_end, c.line_start, c.line_end, c.page)
                    for c in contents.chunks.get(doc.id, [])
                ]
                here = catalog.documents(folder_id, doc.path).get(doc.path)
                if here is None:
                    doc_id = catalog.insert_document(
                        folder_id, doc.path, doc.size, 0, doc.sha256, status="ok"
                    )
                elif catalog.chunk_hashes(here.id) == [c.hash for c in chunks]:
                    continue
                else:
                    doc_id = here.id
                    catalog.update_document(doc_id, size=doc.size, sha256=doc.sha256, status="ok", error=None)
                catalog.replace_chunks(doc_id, chunks)
            if decided.memories == "import":
                brought = contents.memories & contents.hashes
                catalog.complete_memory_work(written=brought - written_here(self.engine, brought))
            catalog.add_import(staged, decided.memories == "import", decided.vectors == "import")

    # Applying

    def _apply_pending(self, stop: threading.Event | None, on_progress: Progress | None = None) -> bool:
        """Apply every pending import, then delete stray staged copies; False if `stop` cut it short."""
        catalog = self.engine.catalog
        for pending in catalog.pending_imports():
            if not self._apply(pending, stop, on_progress):
                return False
            catalog.finish_import(pending.id)
            (self.folder / pending.file).unlink(missing_ok=True)
        self._remove_strays({p.file for p in catalog.pending_imports()})
        return True

    def _apply(
        self, pending: PendingImport, stop: threading.Event | None, on_progress: Progress | None
    ) -> bool:
        path = self.folder / pending.file
        try:
            return self._apply_from(BankReader.open(path), pending, stop, on_progress)
        except BankFileError as exc:  # checked before the commit: only a failing disk gets here
            log.error("the staged bank file %s is unreadable (%s); its texts are embedded again", path, exc)
            self._fall_back()
            return True

    def _apply_from(
        self,
        reader: BankReader,
        pending: PendingImport,
        stop: threading.Event | None,
        on_progress: Progress | None,
    ) -> bool:
        engine = self.engine
        hashes = {c.hash for c in reader.chunks()}
        if pending.memories:
            todo = reader.manifest.counts.memories
            batch: list[tuple[str, bytes]] = []
            done = 0
            for item in reader.memories():
                batch.append(item)
                if len(batch) == APPLY_BATCH:
                    if not self._put_memories(batch, stop):
                        return False
                    done += len(batch)
                    batch = []
                    _progress(on_progress, "applying memories", done, todo)
            if batch and not self._put_memories(batch, stop):
                return False
            _progress(on_progress, "applying memories", todo, todo)
        texts_needed = hashes - engine.retriever.stored(hashes)
        if pending.vectors:
            vectors = [(h, v) for h, v in reader.vectors() if h in texts_needed]
            for a in range(0, len(vectors), APPLY_BATCH):
                part = vectors[a : a + APPLY_BATCH]
                texts = engine.catalog.chunk_texts(h for h, _ in part)
                if not self._turn(
                    stop,
                    lambda p=part, t=texts: engine.retriever.add_embedded(
                        [(h, t[h], v) for h, v in p if h in t]
                    ),
                ):
                    return False
                _progress(on_progress, "applying vectors", a + len(part), len(vectors))
            texts_needed -= {h for h, _ in vectors}
        missing = sorted(texts_needed)
        for a in range(0, len(missing), APPLY_BATCH):
            texts = engine.catalog.chunk_texts(missing[a : a + APPLY_BATCH])
            if not self._turn(stop, lambda t=texts: engine.retriever.add(list(t.items()))):
                return False
            _progress(on_progress, "embedding", a + len(texts), len(missing))
        return True

    def _put_memories(self, batch: list[tuple[str, bytes]], stop: threading.Event | None) -> bool:
        """Store the batch's memories that are still wanted and not stored yet; one turn."""
        engine = self.engine

        def put() -> None:
            wanted = _wanted(engine, [h for h, _ in batch])
            new = [(h, payload) for h, payload in batch if h in wanted and h not in engine.bank]
            # over budget: those left out are written at their first retrieval
            engine.bank.put_many([(h, decode(payload)) for h, payload in new])

        return self._turn(stop, put)

    def _turn(self, stop: threading.Event | None, work: Callable[[], object]) -> bool:
        with self.engine.turns.batch(stop) as granted:
            if granted:
                work()
            return granted

    def _fall_back(self) -> None:
        """The staged copy is unreadable (it was checked before the commit: only a failing disk gets
        here). Its texts are in the catalog: embed those the index lacks; their memories are written at
        their first retrieval, as for any memory the bank lost."""
        engine = self.engine
        hashes = {r["hash"] for r in engine.catalog.rows("SELECT DISTINCT hash FROM chunks")}
        missing = sorted(hashes - engine.retriever.stored(hashes))
        for a in range(0, len(missing), APPLY_BATCH):
            engine.retriever.add(list(engine.catalog.chunk_texts(missing[a : a + APPLY_BATCH]).items()))

    def _remove_strays(self, keep: set[str]) -> None:
        if not self.folder.is_dir():
            return
        for entry in os.scandir(self.folder):
            if entry.name not in keep:
                log.info("removing %s, a bank file staged by an import that never committed", entry.path)
                Path(entry.path).unlink(missing_ok=True)


def _wanted(engine: Engine, hashes: list[str]) -> set[str]:
    found: set[str] = set()
    for part in batches(hashes):
        found.update(
            r["hash"]
            for r in engine.catalog.rows(
                f"SELECT hash FROM memory_work WHERE wanted = 1 AND hash IN ({placeholders(len(part))})", part
            )
        )
    return found


def _copy(
    source: Path, target: Path, size: int, on_progress: Progress | None, cancel: threading.Event | None
) -> None:
    """Copy `size` bytes of `source` (what the reader saw) to `target`, fsynced, with progress."""
    done = 0
    with open(source, "rb") as src, open(target, "xb") as out:
        while done < size:
            _cancelled(cancel)
            block = src.read(min(COPY_BLOCK, size - done))
            if not block:
                raise BankFileError(f"{source} became shorter while it was being read.")
            out.write(block)
            done += len(block)
            _progress(on_progress, "copying", done, size)
        if src.read(1):
            raise BankFileError(f"{source} grew while it was being read.")
        out.flush()
        os.fsync(out.fileno())


def _cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BankFileCancelled("The import was cancelled; nothing was changed.")


def _progress(on_progress: Progress | None, stage: str, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(stage, done, total)
