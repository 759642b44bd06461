"""The NDJSON stream events of docs/api.md, each defined once as a msgspec Struct tagged by its `type`. The
service encodes them; the client decodes each line as one of its stream's union (`AnswerEvent`,
`GenerateEvent`, `ScanEvent`), so a field added here reaches both sides at once.

Kept free of the model runtime, so that a client may import it.
"""

from __future__ import annotations

import msgspec


class Citation(msgspec.Struct, frozen=True):
    """A source the answer attended to; `share` of the attention per key token it paid to its sources."""

    n: int  # 1-based rank
    path: str
    page: int | None
    line_start: int
    line_end: int
    text: str
    share: float
    hash: str  # the chunk's (GET /v1/passages/{hash} shows it in its context)

    def as_dict(self) -> dict:
        return msgspec.structs.asdict(self)


class Source(msgspec.Struct, frozen=True):
    """A chunk one retrieval brought, and its fused score for that query (reciprocal rank fusion of the
    vector and keyword rankings: the sum of 1/(60 + rank) over the two, at most 2/61)."""

    hash: str
    path: str
    page: int | None
    line_start: int
    line_end: int
    score: float


class Read(msgspec.Struct, frozen=True):
    """One retrieval: `step` body and reply tokens had been read when it happened (0: before the prompt);
    its sources best first."""

    step: int
    query: str
    sources: list[Source]


class Event(msgspec.Struct, frozen=True, tag_field="type"):
    """One line of a stream; its class's tag is its `type`."""


class Start(Event, tag="start", omit_defaults=True):
    id: str
    chat_id: int | None = None  # a generation has no chat


class Text(Event, tag="text"):
    text: str


class Reads(Event, tag="reads"):
    """What the model read, after the last text: one entry per retrieval, in order."""

    reads: list[Read]


class Citations(Event, tag="citations"):
    citations: list[Citation]  # best source first


class Done(Event, tag="done", omit_defaults=True):
    """The end of an answer or a generation: its whole text, and whether it was stopped early."""

    id: str
    text: str
    stopped: bool
    tokens: int
    chat_id: int | None = None  # a generation has no chat


class ScanProgress(Event, tag="progress"):
    files_seen: int
    files_parsed: int
    files_failed: int
    files_pending: int
    chunks: int
    chunks_pending: int


class MemoryProgress(Event, tag="memories"):
    done: int  # memories written by this scan
    total: int  # of those waiting


class ScanDone(Event, tag="done"):
    new: int
    changed: int
    moved: int
    deleted: int
    failed: int
    missing: list[str]
    unreadable: list[tuple[str, str]]


class Failed(Event, tag="error"):
    """Something failed after the stream began: the stream ends here."""

    error: str


AnswerEvent = Start | Text | Reads | Citations | Done | Failed
GenerateEvent = Start | Text | Done | Failed
ScanEvent = ScanProgress | MemoryProgress | ScanDone | Failed

_encoder = msgspec.json.Encoder()


def line(event: Event) -> bytes:
    """One NDJSON line."""
    return _encoder.encode(event) + b"\n"
