"""The service's background work, in a thread of its own: scan the watched folders, follow them, write the
memories they need (`Engine.watch`). It yields to answers between short batches (`engine.turns`).

`restart()` begins again with a scan (a folder was added: it is scanned and followed at once); `paused()`
keeps it off while a request does the same work in front (an explicit scan, a doctor's repairs).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine.facade import Engine

log = logging.getLogger(__name__)

RETRY_S = 30.0  # after an unexpected failure (logged), try again this much later


class Background:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._stop = threading.Event()  # ends the current watch
        self._closed = threading.Event()
        self._front = threading.Lock()  # held by the one request doing the work in front (paused())
        self._holds = 0  # requests that keep it paused
        self._running = False  # inside a watch
        self._thread = threading.Thread(target=self._loop, name="m3-background", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def restart(self) -> None:
        """End the current watch after its batch in progress; the next one starts with a scan."""
        with self._cond:
            self._stop.set()
        self.engine.turns.wake()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No background work during the block, and one such block at a time (two scans, or a scan and
        the doctor's repairs, would work on the same documents). It waits for the watch in progress to
        end: after its batch of memories, or after its scan of the folders when one is running."""
        with self._front:
            with self._cond:
                self._holds += 1
                self._stop.set()
            self.engine.turns.wake()
            with self._cond:
                self._cond.wait_for(lambda: not self._running)
            try:
                yield
            finally:
                with self._cond:
                    self._holds -= 1
                    self._cond.notify_all()

    def close(self) -> None:
        """Stop for good and wait for the thread (at most a batch of work, after answers were stopped)."""
        with self._cond:
            self._closed.set()
            self._stop.set()
            self._cond.notify_all()
        self.engine.turns.wake()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed.is_set() or not self._holds)
                if self._closed.is_set():
                    return
                self._stop = stop = threading.Event()
                self._running = True
            failed = False
            try:
                self.engine.watch(stop)
            except Exception:  # the catalog keeps the queue: nothing is lost, the next try resumes it
                log.exception("the background work failed; trying again in %.0f s", RETRY_S)
                failed = True
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
            if failed:
                self._closed.wait(RETRY_S)
