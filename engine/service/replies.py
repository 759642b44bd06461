"""The JSON bodies the service answers with (docs/api.md), each defined once as a msgspec Struct: the
service encodes them, the client decodes them. A client ignores fields it does not know, so a newer
service may add some.

Kept free of the model runtime, so that a client may import it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from engine.service.events import Citation, Read, Scanning


class Health(msgspec.Struct, frozen=True):
    pid: int
    version: str
    state: str  # loading, ready or failed
    error: str | None
    data: str
    model: str | None
    device: str | None
    started_at: float


class Folder(msgspec.Struct, frozen=True):
    """A watched folder; the counts come with `GET /v1/folders` (adding or removing one answers without)."""

    id: int
    path: str
    documents: int = 0  # files known
    chunks: int = 0
    memories: int = 0  # written for its chunks
    memories_pending: int = 0  # still to write
    failed: int = 0  # files that could not be read
    kind: str = "watched"  # or "imported": a collection from a bank file, its label as `path`


class Folders(msgspec.Struct, frozen=True):
    folders: list[Folder]


class Documents(msgspec.Struct, frozen=True):
    seen: int
    parsed: int
    pending: int
    failed: int


class Failure(msgspec.Struct, frozen=True):
    path: str  # absolute
    reason: str  # why it could not be read; in `warnings`, the doubt about a document read all the same


class SkippedType(msgspec.Struct, frozen=True):
    suffix: str  # lower case with its dot; "" for files without one (not text)
    files: int


class Skipped(msgspec.Struct, frozen=True):
    """The files of watched folders a search will not find, and why: counts, the first files over the size
    limit by name, the types not read by suffix (the reply stays small however many there are)."""

    too_large: int = 0
    too_large_files: list[Failure] = []  # the first 20, by path, with the reason
    unsupported: int = 0
    unsupported_types: list[SkippedType] = []  # most files first, the first 20
    ignored: int = 0  # files and folders an .m3ignore leaves out: the user's choice, counted only


class Status(msgspec.Struct, frozen=True):
    folders: list[str]
    documents: Documents
    chunks: int
    chunks_pending: int
    memories_to_drop: int
    failures: list[Failure]
    answers: list[str]
    background: str  # idle, working or paused
    collections: list[str] = []  # labels of the collections imported from bank files
    imports_pending: int = 0  # bank files imported whose memories and vectors are still being applied
    warnings: list[Failure] = []  # documents read with a doubt (a guessed encoding), with the doubt
    missing_folders: list[str] = []  # watched folders not on the disk (renamed? unplugged?): documents kept
    skipped: Skipped = msgspec.field(default_factory=Skipped)
    scanning: Scanning | None = None  # while a scan walks the folders: how far it is


class Check(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str


class Checks(msgspec.Struct, frozen=True):
    checks: list[Check]


class ChatSummary(msgspec.Struct, frozen=True):
    id: int
    title: str
    created_at: float
    updated_at: float  # the time of its last message, else its creation
    messages: int
    match: str | None  # a search's match in a message, with some text around it


class Chats(msgspec.Struct, frozen=True):
    chats: list[ChatSummary]


class WithdrawnAnswer(msgspec.Struct, frozen=True):
    """A memory answer taken back and read again as text: what it said, the names no source says."""

    text: str
    names: Annotated[list[str], msgspec.Meta(min_length=1)]


class Message(msgspec.Struct, frozen=True):
    id: int
    role: str  # user or assistant
    text: str
    mode: str | None
    citations: list[Citation]
    reads: list[Read]
    stopped: bool
    created_at: float
    withdrawn: WithdrawnAnswer | None = None  # a service from before 2026-12-02 does not send it

    @property
    def reread_stopped(self) -> bool:
        """A withdrawn memory answer whose re-read as text was stopped before its first word: the memory
        answer stands (docs/api.md)."""
        withdrawn = self.withdrawn
        return self.stopped and withdrawn is not None and withdrawn.text.strip() == self.text.strip()


class Chat(msgspec.Struct, frozen=True):
    id: int
    title: str
    created_at: float
    messages: list[Message]


class ChatTitle(msgspec.Struct, frozen=True):
    id: int
    title: str


class Piece(msgspec.Struct, frozen=True):
    """A chunk beside a passage."""

    text: str
    page: int | None
    line_start: int
    line_end: int


class Passage(msgspec.Struct, frozen=True):
    """A chunk and its neighbours in its document: joined, before + text + after read as its text does."""

    hash: str
    path: str
    page: int | None
    line_start: int
    line_end: int
    text: str
    before: list[Piece]  # nearest last
    after: list[Piece]  # nearest first


class Retrying(msgspec.Struct, frozen=True):
    path: str
