"""The wire format of docs/api.md: the service's files in the data folder and the requests it takes (msgspec
schemas: a body or a query of the wrong shape is refused with msgspec's one-line reason). The replies are
in `replies.py`, the stream events in `events.py`.

Kept free of the model runtime, so that a client may import it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

SOCKET = "m3.sock"  # HTTP on a Unix socket, mode 0600
LOCK = "service.lock"  # flock: one service per data folder
PROCESS_FILE = "service.json"  # pid, socket, started_at of the service holding the lock
TOKEN = "service.token"  # the bearer token TCP requests must carry (only when TCP is on)

NDJSON = "application/x-ndjson"

MAX_TEXT = 65_536  # characters in a question or prompt: far more than a model's context holds
MAX_TITLE = 200  # characters in a chat's title
MAX_CHATS = 1000  # chats in one listing


# The service runs in its own working folder: a path travels absolute.
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


class ChatsQuery(msgspec.Struct, forbid_unknown_fields=True):
    q: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHATS)] = 200


class RenameRequest(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(max_length=MAX_TITLE)]  # made one line (one_line); empty is refused


class RetryRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: AbsolutePath


class PassageQuery(msgspec.Struct, forbid_unknown_fields=True):
    path: Annotated[str, msgspec.Meta(max_length=4096)] | None = None  # as citations name it
    context: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2


class ExportRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: AbsolutePath  # the bank file to write
    folder: AbsolutePath | None = None  # a watched folder
    collection: Annotated[str, msgspec.Meta(max_length=1024)] | None = None  # an imported collection's label
    documents: Annotated[str, msgspec.Meta(max_length=4096)] | None = None  # a glob
    vectors: bool = True
    replace: bool = False  # replace an existing file at `path`


class BankFileRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: AbsolutePath  # the bank file to read
    dry_run: bool = False  # import only: check and plan, change nothing
