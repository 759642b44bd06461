"""The NDJSON stream events of docs/api.md, each defined once as a msgspec Struct tagged by its `type`. The
service encodes them; the client decodes each line as one of its stream's union (`AnswerEvent`,
`GenerateEvent`, `ScanEvent`, `ExportEvent`, `ImportEvent`), so a field added here reaches both sides at once.

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
    front_matter: dict = {}  # its note's title, date and tags, where its front matter has them
    missing: bool = False  # its file was not on the disk when the answer was given

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


class Withdrawn(Event, tag="withdrawn"):
    """The memory answer streamed so far named `names`, which neither the question nor any source it
    read says: it is taken back, and the sources are read again as text. The text that follows is the
    answer (`done` holds it alone); `text` is the one withdrawn."""

    text: str
    names: list[str]


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


class Scanning(msgspec.Struct, frozen=True):
    """How far a scan's walk of the folders is: the folder it lists now, the files found so far (documents
    or not), and the documents among them that are new or changed since the catalog saw them (to read)."""

    folder: str
    files_found: int
    files_changed: int


class ScanProgress(Event, tag="progress"):
    files_seen: int
    files_parsed: int
    files_failed: int
    files_pending: int
    chunks: int
    chunks_pending: int
    scanning: Scanning | None = None  # while the folders are walked; null once the catalog has changed


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


class BankProgress(Event, tag="progress"):
    """A bank export, inspection or import at work: `stage` (copying, checking documents, memories...),
    and how far it is, in that stage's unit (bytes or records)."""

    stage: str
    done: int
    total: int


class Exported(Event, tag="exported"):
    """An export finished: the file written, what it holds, and the documents left out (one sentence each)."""

    path: str
    documents: int
    chunks: int
    memories: int
    vectors: int
    bytes: int
    skipped: list[str]


class Verdict(msgspec.Struct, frozen=True):
    """memories: import (the file's are used) or write (written here from the text); vectors: import or
    embed; reasons: a sentence for each thing not taken as it is."""

    memories: str
    vectors: str
    reasons: list[str]


class Plan(msgspec.Struct, frozen=True):
    """What an import changes. Chunks, memories and vectors are counted by distinct text."""

    collections: list[str]
    new_collections: list[str]
    documents_new: int
    documents_replaced: int
    documents_unchanged: int
    chunks: int
    memories_import: int
    memories_present: int
    memories_write: int
    vectors_import: int
    vectors_present: int
    vectors_embed: int


class BankReport(Event, tag="report"):
    """A bank file checked (inspect, a dry run) or imported: its manifest (docs/bank-format.md), the
    verdict and the plan; `imported`: committed; `pending`: its memories are still being applied."""

    manifest: dict
    verdict: Verdict
    plan: Plan
    file_bytes: int
    imported: bool
    pending: bool


class Failed(Event, tag="error"):
    """Something failed after the stream began: the stream ends here."""

    error: str


AnswerEvent = Start | Text | Withdrawn | Reads | Citations | Done | Failed
GenerateEvent = Start | Text | Done | Failed
ScanEvent = ScanProgress | MemoryProgress | ScanDone | Failed
ExportEvent = BankProgress | Exported | Failed
ImportEvent = BankProgress | BankReport | Failed

_encoder = msgspec.json.Encoder()


def line(event: Event) -> bytes:
    """One NDJSON line."""
    return _encoder.encode(event) + b"\n"
