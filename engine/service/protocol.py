"""The wire format of docs/api.md: the service's files in the data folder, the request bodies (msgspec
schemas: a body of the wrong shape is refused with msgspec's one-line reason) and the NDJSON stream events.

Kept free of the model runtime, so that a client may import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

if TYPE_CHECKING:
    from ingest.ingester import Progress
    from ingest.scan import ScanReport

SOCKET = "m3.sock"  # HTTP on a Unix socket, mode 0600
LOCK = "service.lock"  # flock: one service per data folder
PROCESS_FILE = "service.json"  # pid, socket, started_at of the service holding the lock
TOKEN = "service.token"  # the bearer token TCP requests must carry (only when TCP is on)

NDJSON = "application/x-ndjson"

MAX_TEXT = 65_536  # characters in a question or prompt: far more than a model's context holds


# The service runs in its own working folder: a folder travels as an absolute path.
AbsolutePath = Annotated[str, msgspec.Meta(pattern="^/", max_length=4096)]


class FolderRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: AbsolutePath


class ScanRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: AbsolutePath | None = None


class AskRequest(msgspec.Struct, forbid_unknown_fields=True):
    question: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    mode: Literal["memory", "rag", "none"] = "memory"
    chat_id: int | None = None


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True):
    prompt: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32_768)] = 64  # a model context at most
    temperature: Annotated[float, msgspec.Meta(ge=0, le=5)] = 0.0
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None


Event = dict[str, object]


def line(event: Event) -> bytes:
    """One NDJSON line."""
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()


def start(answer_id: str, chat_id: int | None = None) -> Event:
    event: Event = {"type": "start", "id": answer_id}
    if chat_id is not None:
        event["chat_id"] = chat_id
    return event


def text(piece: str) -> Event:
    return {"type": "text", "text": piece}


def citations(cited: Iterable[dict]) -> Event:
    return {"type": "citations", "citations": list(cited)}


def done(answer_id: str, text: str, stopped: bool, tokens: int, chat_id: int | None = None) -> Event:
    """The end of an answer (with its chat) or a generation (without): its whole text."""
    event: Event = {"type": "done", "id": answer_id, "text": text, "stopped": stopped, "tokens": tokens}
    if chat_id is not None:
        event["chat_id"] = chat_id
    return event


def error(sentence: str) -> Event:
    return {"type": "error", "error": sentence}


def progress(p: Progress) -> Event:
    return {
        "type": "progress",
        "files_seen": p.files_seen,
        "files_parsed": p.files_parsed,
        "files_failed": p.files_failed,
        "files_pending": p.files_pending,
        "chunks": p.chunks,
        "chunks_pending": p.chunks_pending,
    }


def memories(written: int, total: int) -> Event:
    return {"type": "memories", "done": written, "total": total}


def scan_done(r: ScanReport) -> Event:
    return {
        "type": "done",
        "new": r.new,
        "changed": r.changed,
        "moved": r.moved,
        "deleted": r.deleted,
        "failed": r.failed,
        "missing": [str(path) for path in r.missing],
        "unreadable": [[str(path), reason] for path, reason in r.unreadable],
    }
