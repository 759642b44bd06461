"""Whose turn it is on the model: answers first, background work (memories, embeddings) in between.

On a small CPU two busy torch thread pools slow each other several-fold, so the engine runs one kind of
work at a time: background work takes one short batch at a time and only while no answer runs; an answer
that arrives during a batch waits for that batch to end (a fraction of a second), never for the backlog.
Answers do not wait for each other: two users' questions run side by side.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_POLL_S = 0.2  # how soon a waiting batch notices its stop event when nobody wakes it


class Turns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._answers = 0
        self._batch = False  # a background batch holds the model

    @property
    def answers(self) -> int:
        """Answers (and generations) in progress."""
        return self._answers

    @contextmanager
    def answer(self) -> Iterator[None]:
        """Hold for the whole of an answer: from now on no background batch starts."""
        with self._cond:
            self._answers += 1
            while self._batch:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._answers -= 1
                self._cond.notify_all()

    @contextmanager
    def batch(self, stop: threading.Event | None = None) -> Iterator[bool]:
        """Hold for one short background batch; waits while any answer or another batch is in progress
        (so two writers never interleave their batches). Yields False, holding nothing, when `stop` is
        set before the turn comes: seen at once after a `wake()`, else within STOP_POLL_S (a client
        that hangs up sets its stop event without waking anyone)."""
        with self._cond:
            granted = False
            while not granted:
                if stop is not None and stop.is_set():
                    break
                if self._answers or self._batch:
                    self._cond.wait(STOP_POLL_S)
                else:
                    self._batch = granted = True
        if not granted:
            yield False
            return
        try:
            yield True
        finally:
            with self._cond:
                self._batch = False
                self._cond.notify_all()

    def wake(self) -> None:
        """Make waiting background work look at its stop event again."""
        with self._cond:
            self._cond.notify_all()
