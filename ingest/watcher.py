"""The live watcher: watchdog reports changes, we gather them and hand them over in debounced batches.

The observer's threads only record paths (and renames, in order). The caller's thread takes a batch with
`next_batch` once the folders have been quiet for `quiet_s`, or at the latest `max_latency_s` after the
batch's first event: an editor saving five times a second gives one batch, and a `git checkout` of
thousands of files a few, not thousands. A batch goes to `Reconciler.reconcile_paths`, which checks each
path against the disk, so a lost or misleading event costs nothing worse than a stat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

# What can change a document. Opening and reading files is left out, so our own parsing is not an event.
EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


@dataclass(frozen=True)
class Batch:
    paths: frozenset[Path]  # files and folders whose state must be checked against the catalog
    moves: tuple[tuple[Path, Path], ...]  # renames (src, dst), in the order they happened
    events: int  # how many events were gathered


class _Recorder(FileSystemEventHandler):
    def __init__(self, watcher: Watcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Synthetic events repeat a folder's create or move for each file inside it: the folder is enough.
        if not event.is_synthetic:
            self.watcher._record(event)


class _OverflowAlarm(logging.Handler):
    """The kernel's event queue overflowed: events were lost, and watchdog only says so in its log."""

    def __init__(self, watcher: Watcher):
        super().__init__(logging.WARNING)
        self.watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.watcher._record_overflow()


class Watcher:
    def __init__(self, roots: Iterable[Path], quiet_s: float = 0.5, max_latency_s: float = 5.0):
        self.roots = [Path(r) for r in roots]
        self.quiet_s = quiet_s
        self.max_latency_s = max_latency_s
        self._cond = threading.Condition()
        self._paths: set[Path] = set()
        self._moves: list[tuple[Path, Path]] = []
        self._events = 0
        self._first = self._last = 0.0
        self._observer = Observer()
        self._alarm = _OverflowAlarm(self)
        self._recorder = _Recorder(self)
        self._links: dict[Path, set[Path]] = {}  # real target -> the links to it in the roots (`follow`)

    def start(self) -> Watcher:
        """Watch every root that exists (one that is missing, an unplugged drive, is skipped)."""
        for root in self.roots:
            if root.is_dir():
                self._observer.schedule(self._recorder, str(root), recursive=True, event_filter=EVENTS)
        logging.getLogger("watchdog.observers").addHandler(self._alarm)
        self._observer.start()
        return self

    def stop(self) -> None:
        logging.getLogger("watchdog.observers").removeHandler(self._alarm)
        self._observer.stop()
        self._observer.join()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def follow(self, links: dict[Path, set[Path]]) -> None:
        """Watch the targets of symbolic links found inside the roots (real target -> its links, as the scan
        reports them): a change there is a change at each link's path. A target outside every root gets a
        watch of its own (a file's: its folder, alone; a folder's: all of it); one inside a root is
        watched already. Targets seen before are not watched twice."""
        with self._cond:
            new = [target for target in links if target not in self._links]
            for target, paths in links.items():
                self._links.setdefault(target, set()).update(paths)
        for target in new:
            if any(target.is_relative_to(root) for root in self.roots):
                continue
            folder, recursive = (target, True) if os.path.isdir(target) else (target.parent, False)
            with contextlib.suppress(OSError):  # gone meanwhile: the next scan says so
                self._observer.schedule(self._recorder, str(folder), recursive=recursive, event_filter=EVENTS)

    def _linked(self, path: Path) -> list[Path]:
        """The paths inside the roots that show `path` through a followed link (none for most paths)."""
        return [
            link / path.relative_to(target)
            for target, links in self._links.items()
            if path.is_relative_to(target)
            for link in links
        ]

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """Wait for a batch; None if `timeout` seconds pass without one being ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                wait = None
                if self._events:
                    ready_at = min(self._last + self.quiet_s, self._first + self.max_latency_s)
                    if now >= ready_at:
                        return self._take()
                    wait = ready_at - now
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = deadline - now if wait is None else min(wait, deadline - now)
                self._cond.wait(wait)

    def gathering(self) -> bool:
        """Whether events wait in a batch not yet ready."""
        with self._cond:
            return bool(self._events)

    def _take(self) -> Batch:
        batch = Batch(frozenset(self._paths), tuple(self._moves), self._events)
        self._paths, self._moves, self._events = set(), [], 0
        return batch

    def _record(self, event: FileSystemEvent) -> None:
        with self._cond:
            src = Path(str(event.src_path))
            self._paths.update([src, *self._linked(src)])
            if isinstance(event, (FileMovedEvent, DirMovedEvent)):
                dst = Path(str(event.dest_path))
                self._moves.append((src, dst))
                self._paths.update([dst, *self._linked(dst)])
            self._touch()

    def _record_overflow(self) -> None:
        with self._cond:
            self._paths.update(self.roots)  # check everything
            self._touch()

    def _touch(self) -> None:
        now = time.monotonic()
        if not self._events:
            self._first = now
        self._last = now
        self._events += 1
        self._cond.notify_all()
