"""The answers (and generations) in progress: an id each, and each its own cancel event.

`DELETE /v1/answers/{id}` and a client hanging up set one answer's event; the generation checks it before
every token, so it stops within one token. There is no engine-wide flag: other answers are not affected.
"""

from __future__ import annotations

import secrets
import threading


class Answers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    def open(self) -> tuple[str, threading.Event]:
        """A new answer's id and cancel event."""
        answer_id, cancel = secrets.token_hex(6), threading.Event()
        with self._lock:
            self._running[answer_id] = cancel
        return answer_id, cancel

    def close(self, answer_id: str) -> None:
        """The answer ended (its stream finished, however it finished)."""
        with self._lock:
            self._running.pop(answer_id, None)

    def cancel(self, answer_id: str) -> bool:
        """Tell one answer to stop; False if no such answer is running."""
        with self._lock:
            cancel = self._running.get(answer_id)
        if cancel is None:
            return False
        cancel.set()
        return True

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._running)
