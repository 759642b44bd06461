"""Import a bank file: check all of it, stage it, commit it to the catalog in one transaction, then apply
its memories and vectors. Read-only until that one commit.

The steps, and what a kill -9 during each leaves:
1. copy the file into the data folder's `imports/` under a temporary name, fsynced (a file we own, so
   nothing can change it between the check and the use); 2. read and check every byte of the copy;
3. rename it to `bank-<token>.m3bank`; 4. one catalog transaction adds the collections, documents and
chunks, marks the memories the file brings as written, and records the import, with those texts, as
pending. Before 4 commits, nothing of the user's changed: the next start deletes the staged copy. After
it, the import is decided: 5. the memories and vectors it brings are applied in short turns (answers go
first), from the staged copy, by this call or, after a crash or a cancel, by the engine's background
work; then the pending row and the copy are deleted. Applying is idempotent (the bank and the index skip
what they hold), so a crash halfway through is finished by running it again.

A file brings memories only for texts new to this catalog (merging is by chunk hash, a chunk's hash is
its text's): a text already here keeps its memory and vector, or has them written here, so importing the
same file twice changes nothing and no file can replace or plant the memory of a text the user has. Texts
whose memory the file does not bring (another model, a missing memory) are written here from the text by
the background work, which indexes them as it writes (so an index entry always has its memory written).
Nothing in the file is unpickled, evaluated or used as a path: documents live in the catalog only, in
read-only collections named by their labels.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from engine.bankfile.layout import BankFileError, check_cancel
from engine.bankfile.manifest import Manifest
from engine.bankfile.plan import (
    CANCELLED,
    Contents,
    Plan,
    Verdict,
    brought,
    place,
    plan,
    read_contents,
    verdict,
)
from engine.bankfile.reader import BankReader, open_regular
from engine.memory.codec import decode
from ingest.atomic import fsync_dir
from ingest.catalog import PendingImport
from ingest.chunker import Chunk

if TYPE_CHECKING:
    from engine.facade import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

Progress = Callable[[str, int, int], None]  # (stage, done, total)
COPY_BLOCK = 4 << 20
APPLY_BATCH = 64  # memories or vectors per turn on the engine: an answer waits for one batch at most
RETRY_S = 60.0  # an import whose applying failed (a full disk, a failing one) is tried again this much later
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
        self._failed: dict[int, float] = {}  # import id -> when its applying last failed (monotonic)
        self._swept = False  # strays are looked for once, then after each import, not at every resume

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
                if not contents.documents:
                    raise BankFileError("The bank file holds no documents: there is nothing to import.")
                check_cancel(cancel, CANCELLED)
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
            self._swept = False  # its staged copy is removed once applied
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
        """Everything the catalog learns from the file, in one transaction; the staged copy is deleted
        at once when it brings no memory (the background work writes them all here)."""
        catalog = self.engine.catalog
        with catalog.atomic():
            bringing = brought(self.engine, contents, decided)  # read before the chunks go in
            collections = {str(f.path): f.id for f in catalog.folders("imported")}
            for doc in contents.documents:
                chunks = [
                    Chunk(c.text, c.char_start, c.char_end, c.line_start, c.line_end, c.page)
                    for c in contents.chunks.get(doc.id, [])
                ]
                if doc.label not in collections:
                    collections[doc.label] = catalog.add_folder(Path(doc.label), kind="imported").id
                where, here = place(catalog, collections[doc.label], doc.path, [c.hash for c in chunks])
                if where == "unchanged":
                    continue
                if here is None:
                    doc_id = catalog.insert_document(
                        collections[doc.label], doc.path, doc.size, 0, doc.sha256, status="ok"
                    )
                else:
                    doc_id = here.id
                    catalog.update_document(doc_id, size=doc.size, sha256=doc.sha256, status="ok", error=None)
                catalog.replace_chunks(doc_id, chunks)
            if bringing:
                catalog.complete_memory_work(written=bringing)
                catalog.add_import(staged, True, decided.vectors == "import", bringing)
        if not bringing:
            (self.folder / staged).unlink(missing_ok=True)

    # Applying

    def _apply_pending(self, stop: threading.Event | None, on_progress: Progress | None = None) -> bool:
        """Apply every pending import, then delete stray staged copies; False if `stop` cut it short.
        An import that fails to apply is logged and tried again RETRY_S later: it never holds up the
        memory writing that runs after this."""
        catalog = self.engine.catalog
        pending_imports = catalog.pending_imports()
        if self._swept and not pending_imports:
            return True  # the background's resume, every half second: nothing to do
        for pending in pending_imports:
            if time.monotonic() - self._failed.get(pending.id, -RETRY_S) < RETRY_S:
                continue
            try:
                if not self._apply(pending, stop, on_progress):
                    return False
            except Exception:
                log.exception("applying the bank file %s failed; trying again later", pending.file)
                self._failed[pending.id] = time.monotonic()
                continue
            catalog.finish_import(pending.id)
            (self.folder / pending.file).unlink(missing_ok=True)
        self._remove_strays({p.file for p in catalog.pending_imports()})
        self._swept = True
        return True

    def _apply(
        self, pending: PendingImport, stop: threading.Event | None, on_progress: Progress | None
    ) -> bool:
        path = self.folder / pending.file
        hashes = self.engine.catalog.import_hashes(pending.id)
        try:
            reader = BankReader.open(path)
            if not self._apply_memories(reader, hashes, stop, on_progress):
                return False
            vectors = reader.vectors() if pending.vectors else iter(())
            return self._apply_vectors(vectors, hashes, stop, on_progress)
        except BankFileError as exc:  # checked before the commit: only a failing disk gets here
            log.error("the staged bank file %s is unreadable (%s); its texts are written again", path, exc)
            self._fall_back(hashes)
            return True

    def _apply_memories(
        self, reader: BankReader, hashes: set[str], stop: threading.Event | None, on_progress: Progress | None
    ) -> bool:
        """Store the file's memories of `hashes`, batch by batch, until done or the bank's budget is full
        (the rest are written at their first retrieval, as for any memory over budget)."""
        bank, catalog = self.engine.bank, self.engine.catalog
        done, total = 0, len(hashes)
        for batch in batched((h, p) for h, p in reader.memories() if h in hashes):
            full = False

            def put(batch: list[tuple[str, bytes]] = batch) -> None:
                nonlocal full
                wanted = catalog.memory_hashes([h for h, _ in batch], wanted=True)  # not removed since
                new = [(h, decode(p)) for h, p in batch if h in wanted and h not in bank]
                full = bank.put_many(new) < len(new)

            if not self._turn(stop, put):
                return False
            done += len(batch)
            _progress(on_progress, "applying memories", done, total)
            if full:
                break
        return True

    def _apply_vectors(
        self,
        vectors: Iterable[tuple[str, object]],
        hashes: set[str],
        stop: threading.Event | None,
        on_progress: Progress | None,
    ) -> bool:
        """Index `hashes`: with the file's vectors where it has them, embedding the rest."""
        engine = self.engine
        todo = hashes - engine.retriever.stored(hashes)
        done, total = 0, len(todo)

        def index(batch: list[tuple[str, object]], embedded: bool) -> bool:
            nonlocal done

            def add() -> None:
                wanted = engine.catalog.memory_hashes([h for h, _ in batch], wanted=True)
                texts = engine.catalog.chunk_texts(h for h, _ in batch if h in wanted)
                if embedded:
                    engine.retriever.add_embedded([(h, texts[h], v) for h, v in batch if h in texts])
                else:
                    engine.retriever.add(list(texts.items()))

            if not self._turn(stop, add):
                return False
            done += len(batch)
            _progress(on_progress, "applying vectors" if embedded else "embedding", done, total)
            return True

        for batch in batched((h, v) for h, v in vectors if h in todo):
            if not index(list(batch), embedded=True):
                return False
            todo -= {h for h, _ in batch}
        return all(index([(h, None) for h in part], embedded=False) for part in batched(sorted(todo)))

    def _turn(self, stop: threading.Event | None, work: Callable[[], object]) -> bool:
        with self.engine.turns.batch(stop) as granted:
            if granted:
                work()
            return granted

    def _fall_back(self, hashes: set[str]) -> None:
        """The staged copy went bad: the texts whose memory it brought and the bank lacks are written
        again here by the background work (which indexes them); those it stored are indexed now."""
        engine = self.engine
        stored = {h for h in hashes if h in engine.bank}
        engine.catalog.complete_memory_work(dropped=hashes - stored)
        missing = sorted(stored - engine.retriever.stored(stored))
        for part in batched(missing):
            engine.retriever.add(list(engine.catalog.chunk_texts(part).items()))

    def _remove_strays(self, keep: set[str]) -> None:
        if not self.folder.is_dir():
            return
        for entry in os.scandir(self.folder):
            if entry.name not in keep and not entry.is_dir(follow_symlinks=False):
                log.info("removing %s, a bank file staged by an import that never committed", entry.path)
                Path(entry.path).unlink(missing_ok=True)


def batched(items: Iterable[T], n: int = APPLY_BATCH) -> Iterator[list[T]]:
    """`items` in lists of `n` (itertools.batched, Python 3.12)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _copy(
    source: Path, target: Path, size: int, on_progress: Progress | None, cancel: threading.Event | None
) -> None:
    """Copy `size` bytes of `source` (what the reader saw) to `target`, fsynced, with progress."""
    done = 0
    with open_regular(source) as src, open(target, "xb") as out:
        while done < size:
            check_cancel(cancel, CANCELLED)
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


def _progress(on_progress: Progress | None, stage: str, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(stage, done, total)
