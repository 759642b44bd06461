"""The chats kept in the catalog: each question and answer (with its citations and what it read), listed
most recently updated first, searched, renamed and deleted.

A search is a case-insensitive substring match (Python's Unicode case folding: "émile" finds "Émile"), run
by a function registered on the catalog's connection, so the text is taken literally: `%` and `_` are
characters like any other, not wildcards.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass

from ingest.catalog import Catalog
from ingest.errors import NotFoundError
from ingest.printable import one_line

SNIPPET = 80  # characters of a matching message shown around the match


@dataclass(frozen=True)
class ChatSummary:
    id: int
    title: str
    created_at: float
    updated_at: float  # the time of its last message, else its creation
    messages: int
    match: str | None  # a search's match in a message and around it; None without a search or for a title


@dataclass(frozen=True)
class Message:
    id: int
    role: str  # user or assistant
    text: str
    mode: str | None
    citations: str  # JSON, as saved (add_message): the service reads it (routes_chats.py)
    reads: str  # JSON: what the answer read, one entry per retrieval
    stopped: bool
    created_at: float
    withdrawn: str | None  # JSON: a memory answer taken back and read again as text: {"text", "names"}


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    created_at: float
    messages: list[Message]


class Chats:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        catalog.db.conn.create_function("m3_contains", 2, _contains, deterministic=True)

    def new(self, title: str) -> int:
        title = one_line(title)
        with self.catalog.atomic():
            return self.catalog.db.execute(
                "INSERT INTO chats (title, created_at) VALUES (?, ?)", (title, time.time())
            ).lastrowid

    def add_message(
        self,
        chat_id: int,
        role: str,
        text: str,
        mode: str | None = None,
        citations: str = "[]",
        reads: str = "[]",
        stopped: bool = False,
        withdrawn: str | None = None,
    ) -> int:
        """Append a message; `citations` and `reads` are the answer's as JSON; `stopped`: the user stopped
        the answer, and `text` is what was streamed until then; `withdrawn`: the memory answer taken back
        before `text` was read again as text, as JSON. NotFoundError if the chat is gone (deleted while the
        answer ran)."""
        try:
            with self.catalog.atomic():
                return self.catalog.db.execute(
                    "INSERT INTO messages"
                    " (chat_id, role, text, mode, citations, reads, stopped, created_at, withdrawn)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (chat_id, role, text, mode, citations, reads, int(stopped), time.time(), withdrawn),
                ).lastrowid
        except sqlite3.IntegrityError:  # the chat's foreign key, when the chat is gone; else another fault
            if self.catalog.rows("SELECT 1 FROM chats WHERE id = ?", (chat_id,)):
                raise
            raise _missing(chat_id) from None

    def search(self, q: str | None = None, limit: int = 200) -> list[ChatSummary]:
        """The chats, most recently updated first; with `q`, those whose title or a message holds it."""
        hit = (
            "(SELECT text FROM messages m WHERE m.chat_id = c.id AND m3_contains(m.text, :q)"
            " ORDER BY m.id LIMIT 1)"
            if q
            else "NULL"
        )
        rows = self.catalog.rows(
            "SELECT c.id, c.title, c.created_at,"
            " COALESCE((SELECT MAX(created_at) FROM messages m WHERE m.chat_id = c.id), c.created_at)"
            " AS updated_at, (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id) AS messages,"
            f" {hit} AS hit FROM chats c"
            + (" WHERE m3_contains(c.title, :q) OR hit IS NOT NULL" if q else "")
            + " ORDER BY updated_at DESC, c.id DESC LIMIT :limit",
            {"q": q, "limit": limit},
        )
        return [
            ChatSummary(
                r["id"],
                r["title"],
                r["created_at"],
                r["updated_at"],
                r["messages"],
                None if r["hit"] is None or not q else snippet(r["hit"], q),
            )
            for r in rows
        ]

    def get(self, chat_id: int) -> Chat:
        rows = self.catalog.rows("SELECT id, title, created_at FROM chats WHERE id = ?", (chat_id,))
        if not rows:
            raise _missing(chat_id)
        return Chat(rows[0]["id"], rows[0]["title"], rows[0]["created_at"], self.messages(chat_id))

    def messages(self, chat_id: int) -> list[Message]:
        rows = self.catalog.rows(
            "SELECT id, role, text, mode, citations, reads, stopped, created_at, withdrawn FROM messages"
            " WHERE chat_id = ? ORDER BY id",
            (chat_id,),
        )
        return [
            Message(
                r["id"],
                r["role"],
                r["text"],
                r["mode"],
                r["citations"],
                r["reads"],
                bool(r["stopped"]),
                r["created_at"],
                r["withdrawn"],
            )
            for r in rows
        ]

    def rename(self, chat_id: int, title: str) -> None:
        with self.catalog.atomic():
            renamed = self.catalog.db.execute("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id))
        if not renamed.rowcount:
            raise _missing(chat_id)

    def delete(self, chat_id: int) -> None:
        """Forget the chat and its messages."""
        with self.catalog.atomic():
            deleted = self.catalog.db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))
        if not deleted.rowcount:
            raise _missing(chat_id)


def _missing(chat_id: int) -> NotFoundError:
    return NotFoundError(f"There is no chat {chat_id}.")


def _find(text: str, q: str) -> re.Match[str] | None:
    return re.search(re.escape(q), text, re.IGNORECASE)


def _contains(text: str | None, q: str | None) -> bool:
    return text is not None and bool(q) and _find(text, q) is not None


def snippet(text: str, q: str, width: int = SNIPPET) -> str:
    """About `width` characters of `text` around the first match of `q`, on one line, with "…" where
    the text was cut."""
    found = _find(text, q)
    at, end = (found.start(), found.end()) if found else (0, 0)
    start = max(0, at - max(width - (end - at), 0) // 2)
    stop = min(len(text), max(end, start + width))
    start = max(0, min(start, stop - width))
    piece = " ".join(text[start:stop].split())
    return ("…" if start else "") + piece + ("…" if stop < len(text) else "")
