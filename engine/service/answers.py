"""The answers (and generations) in progress: an id each, each its own cancel event, and the chat each
answer is saved in.

`DELETE /v1/answers/{id}` and a client hanging up set one answer's event; the generation checks it before
every token, so it stops within one token. There is no engine-wide flag: other answers are not affected.
A chat with an answer in progress cannot be deleted (its answer is yet to be saved there).
"""

from __future__ import annotations

import secrets
import threading


class Answers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._chats: dict[str, int] = {}  # answer id -> the chat it is saved in

    def open(self, chat_id: int | None = None) -> tuple[str, threading.Event]:
        """A new answer's id and cancel event; `chat_id`: the chat it goes on, if it is known yet."""
        answer_id, cancel = secrets.token_hex(6), threading.Event()
        with self._lock:
            self._running[answer_id] = cancel
            if chat_id is not None:
                self._chats[answer_id] = chat_id
        return answer_id, cancel

    def saved_in(self, answer_id: str, chat_id: int) -> None:
        """The chat the answer is saved in, once known (a new chat is made when the answer starts)."""
        with self._lock:
            if answer_id in self._running:
                self._chats[answer_id] = chat_id

    def close(self, answer_id: str) -> None:
        """The answer ended (its stream finished, however it finished)."""
        with self._lock:
            self._running.pop(answer_id, None)
            self._chats.pop(answer_id, None)

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

    def in_chat(self, chat_id: int) -> bool:
        """Whether an answer in progress is to be saved in the chat."""
        with self._lock:
            return chat_id in self._chats.values()
