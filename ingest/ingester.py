"""The ingester: scan, follow the watcher, and turn queued documents into chunks, one transaction each.

No model here: the caller passes the tokenizer's count, so chunks are cut in the model's own tokens.
A document's new chunks, the memory work they cause and the completion of its job are committed
together, so a kill -9 anywhere either keeps all of it or none of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest import chunker, parsers
from ingest.catalog import NOT_UTF8, Catalog, Folder, SkippedFiles, storable
from ingest.chunker import chunk_text
from ingest.config import IngestConfig
from ingest.errors import NotFoundError, ParseError
from ingest.parsers import parse
from ingest.queue import CRASHED, MAX_ATTEMPTS, Job, JobQueue
from ingest.scan import Reconciler, Scanning, ScanReport, ScanStopped, describe, sha256_file
from ingest.watcher import Batch, Watcher

log = logging.getLogger(__name__)

PARSED_WITH = f"parsers {parsers.VERSION}, chunker {chunker.VERSION}"  # kept per document (catalog v8)

PROGRESS_EVERY_S = 0.25  # counting rows for every file would cost more than parsing small files


@dataclass(frozen=True)
class Progress:
    files_seen: int  # documents in the catalog
    files_parsed: int
    files_failed: int
    files_pending: int  # waiting to be (re)parsed
    chunks: int
    chunks_pending: int  # chunks whose memory is still to be written
    current: Path | None = None  # the file just handled
    scanning: Scanning | None = None  # while a scan walks the folders: how far it is

    @classmethod
    def of(
        cls, counts: dict[str, int], current: Path | None = None, scanning: Scanning | None = None
    ) -> Progress:
        """From the catalog's `counts()`."""
        return cls(
            counts["documents"],
            counts["ok"],
            counts["failed"],
            counts["pending"],
            counts["chunks"],
            counts["memories_to_write"],
            current,
            scanning,
        )


@dataclass(frozen=True)
class Status:
    folders: list[Folder]
    missing: list[Path]  # watched folders not on the disk (renamed? a drive unplugged?): their documents kept
    progress: Progress
    memories_to_drop: int
    failures: list[tuple[Path, str]]  # (file, readable reason)
    warnings: list[tuple[Path, str]]  # (file, readable doubt) of documents read all the same
    skipped: SkippedFiles  # files that are no documents: too large, of a type not read, left out
    collections: list[Folder]  # imported from bank files: read-only, never scanned
    imports: int  # bank files committed whose memories and vectors are still being applied

    @classmethod
    def read(cls, catalog: Catalog, scanning: Scanning | None = None) -> Status:
        """The catalog's folders, progress and failures, and how far a scan's walk is (`scanning`, which
        only the process running it knows); reads only."""
        counts = catalog.counts()
        folders = catalog.folders()
        return cls(
            folders,
            [f.path for f in folders if not os.path.isdir(f.path)],  # never raises (unreadable: missing)
            Progress.of(counts, scanning=scanning),
            counts["memories_to_drop"],
            catalog.failures(),
            catalog.warnings(),
            catalog.skipped_files(),
            catalog.folders("imported"),
            counts["imports"],
        )


class Ingester:
    def __init__(
        self,
        catalog: Catalog,
        count_tokens: Callable[[str], int],
        config: IngestConfig | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_walk: Callable[[Scanning | None], None] | None = None,
    ):
        """`on_progress` hears how far the ingest is, every PROGRESS_EVERY_S at most (it counts the
        catalog's rows); `on_walk`, how far a scan's walk is at every folder, then None when it is over."""
        self.catalog = catalog
        self.count_tokens = count_tokens
        self.config = config or IngestConfig()
        self.on_progress = on_progress
        self.on_walk = on_walk
        self.queue = JobQueue(catalog, self.config.lease_s)
        self.reconciler = Reconciler(catalog, self.queue, self.config)
        self._emitted_at = 0.0

    def scan(self, folders: list[Folder] | None = None, stop: threading.Event | None = None) -> ScanReport:
        """Reconcile the watched folders (all by default) with the disk; parsing is left to
        `process_pending`. Progress is told while the folders are walked (`Progress.scanning`: the first
        folder at once, then every PROGRESS_EVERY_S), and once more when the catalog has changed.
        ScanStopped if `stop` is set during the walk."""
        self._emitted_at = 0.0
        try:
            report = self.reconciler.scan(folders, self._walking, stop)
        finally:
            self._walking(None)  # the walk is over, however it ended
        self._read_again()
        return report

    def _read_again(self) -> None:
        """Queue the documents older parsers read (PARSED_WITH), their files unchanged: they stay
        searchable as they were until they are read again. Those whose file is not there now (a watched
        folder renamed or unplugged) wait for it."""
        for doc in self.catalog.parsed_before(PARSED_WITH, CRASHED):
            if os.path.isfile(self.catalog.document_path(doc)):
                self.queue.enqueue(doc.id)

    def apply(self, batch: Batch, hold_s: float = 0.0) -> ScanReport:
        """Reconcile what a watcher batch touched; what vanished is deleted, or with `hold_s` kept that long
        for a create of its bytes, which makes it a move (`apply_next`)."""
        report = self.reconciler.reconcile_paths(batch.paths, batch.moves, hold_s)
        if report.held:
            log.info("%d vanished document(s) held %.1f s for a create of its bytes", report.held, hold_s)
        self._emit(force=True)
        return report

    def apply_next(self, watcher: Watcher, timeout: float) -> Batch | None:
        """Apply the watcher's next batch, waiting up to `timeout` for it. Its deletions wait one more
        debounce window (max_latency_s): a file moved into a folder created a moment before (its watch was
        not there yet), or out of the folders and back, reaches us as a delete, then a create in a later
        batch, and is a move then (its id, chunks and memories kept). Once their time is up, and no event
        is gathering, those still gone are deleted."""
        batch = watcher.next_batch(timeout)
        if batch is not None:
            watcher.follow(self.apply(batch, self.config.max_latency_s).links)
        if not watcher.gathering() and self.reconciler.release():
            self._emit(force=True)
        return batch

    def watcher(self) -> Watcher:
        roots = [f.path for f in self.catalog.folders()]
        return Watcher(roots, self.config.quiet_s, self.config.max_latency_s)

    def process_pending(self, limit: int | None = None, stop: threading.Event | None = None) -> int:
        """Parse and chunk queued documents until none is left (or `limit`, or `stop`); returns how many."""
        done = 0
        while (limit is None or done < limit) and not (stop and stop.is_set()):
            job = self.queue.claim()
            if job is None:
                break
            try:
                self._process(job)
            except BaseException:
                self.queue.release(job)
                raise
            done += 1
        if done:
            self._emit(force=True)
        return done

    def run(self, stop: threading.Event, between: Callable[[], bool] | None = None) -> None:
        """Keep the catalog in step with the folders until `stop` is set: watch, scan, then parse while
        following the watcher. A folder added or removed meanwhile restarts the watch. `between` runs after
        each batch of parsed files (the engine writes their memories there) and says whether it did work."""
        while not stop.is_set():
            folders = self.catalog.folders()
            with self.watcher() as watcher:  # started before the scan, so no change falls in between
                with contextlib.suppress(ScanStopped):  # stopped mid-walk: nothing changed, the loop ends
                    watcher.follow(self.scan(stop=stop).links)
                while not stop.is_set() and self.catalog.folders() == folders:
                    busy = self.process_pending(limit=16, stop=stop) > 0
                    if between is not None:
                        busy = between() or busy
                    self.apply_next(watcher, timeout=0 if busy else 0.5)

    def status(self) -> Status:
        return Status.read(self.catalog)

    def retry(self, path: Path) -> None:
        """Queue the failed document at the absolute `path` to be parsed again: its file may read now though
        it is unchanged on disk (a permission or a parser fixed), which no scan would notice. One given up for
        crashing the process goes with every copy of its bytes (each copy given up would fail it again at
        once). NotFoundError if no document there failed."""
        with self.catalog.atomic():
            doc = self.catalog.failed_document(path)
            if doc is None:
                raise NotFoundError(f"No document at {path} failed to be read.")
            if doc.error in NOT_UTF8:  # it would fail again, as a vanished file: only a rename helps
                raise NotFoundError(
                    f"{storable(str(path))} cannot be read until it is renamed ({doc.error})."
                )
            crashed = doc.error == CRASHED and doc.sha256 is not None
            copies = self.catalog.failed_with(doc.sha256, CRASHED) if crashed else []
            for doc_id in dict.fromkeys([doc.id, *copies]):
                self.catalog.update_document(doc_id, status="pending", error=None)
                self.queue.enqueue(doc_id)

    def _process(self, job: Job) -> None:
        doc = self.catalog.document(job.document_id)
        if doc is None:
            return  # deleted since it was queued (its job went with it)
        path = self.catalog.document_path(doc)
        error: str | None = None
        sha: str | None = None
        try:
            st = os.stat(path)  # before reading: a change during the read leaves a newer mtime than ours
            sha = sha256_file(path)
            if job.attempts > MAX_ATTEMPTS or self.catalog.failed_with(sha, CRASHED):
                raise ParseError(CRASHED)  # these bytes killed the process before: not again
            parsed = parse(path)
            chunks = chunk_text(parsed, self.count_tokens, self.config.max_chunk_tokens)
            for chunk in chunks:
                chunk.text.encode()  # SQLite keeps UTF-8: a lone surrogate would fail the transaction below
        except ParseError as exc:
            error, chunks = str(exc), []
        except OSError as exc:
            error, chunks = describe(exc), []
        except UnicodeEncodeError:
            error, chunks = "the text holds characters that are not valid Unicode", []
        except Exception as exc:  # a tokenizer or chunker failing on this one text: the others go on
            log.info("%s: chunking failed (%s: %s)", path, type(exc).__name__, exc)  # the detail: for the log
            error, chunks = "could not cut the text into chunks", []
        with self.catalog.atomic():
            if self.catalog.document(doc.id) is not None:
                self.catalog.replace_chunks(doc.id, chunks)
                if error is None:
                    self.catalog.update_document(
                        doc.id,
                        size=st.st_size,
                        mtime_ns=st.st_mtime_ns,
                        sha256=sha,
                        status="ok",
                        error=None,
                        parsed_at=time.time(),
                        meta=json.dumps(parsed.meta),
                        warning="; ".join(parsed.warnings) or None,
                        parsed_with=PARSED_WITH,
                    )
                else:
                    self.catalog.update_document(
                        doc.id,
                        status="failed",
                        error=error,
                        parsed_at=time.time(),
                        meta="{}",
                        warning=None,
                        parsed_with=PARSED_WITH,
                        **({"sha256": sha} if sha else {}),  # the content that failed: a crash is its own
                    )
            self.queue.complete(job)
        self._emit(current=path)

    def _walking(self, scanning: Scanning | None) -> None:
        """How far the walk is (None: over): for `on_walk` each time, for `on_progress` as often as it
        hears of progress."""
        if self.on_walk is not None:
            self.on_walk(scanning)
        self._emit(scanning=scanning, force=scanning is None)

    def _emit(
        self, current: Path | None = None, force: bool = False, scanning: Scanning | None = None
    ) -> None:
        if self.on_progress is None or not (force or time.monotonic() - self._emitted_at >= PROGRESS_EVERY_S):
            return
        self._emitted_at = time.monotonic()
        self.on_progress(Progress.of(self.catalog.counts(), current, scanning))
