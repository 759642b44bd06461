"""The chats endpoints of docs/api.md: list (and search), read one, rename, delete."""

from __future__ import annotations

import logging

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.service import protocol, replies
from engine.service.errors import BadRequestError, ConflictError
from engine.service.web import read_body, read_query, reply, service_of
from ingest import chats
from ingest.printable import one_line

log = logging.getLogger(__name__)


async def list_chats(request: Request) -> Response:
    engine = service_of(request).ready()
    query = read_query(request, protocol.ChatsQuery)
    found = await to_thread.run_sync(engine.chats.search, query.q, query.limit)
    return reply(
        replies.Chats([msgspec.convert(c, replies.ChatSummary, from_attributes=True) for c in found])
    )


async def get_chat(request: Request) -> Response:
    engine = service_of(request).ready()
    chat = await to_thread.run_sync(engine.chats.get, request.path_params["chat_id"])
    messages = [_message(m) for m in chat.messages]
    return reply(replies.Chat(chat.id, chat.title, chat.created_at, messages))


# a message's parts saved as JSON, their types, and what stands for one no client could read
_SAVED: dict[str, tuple[type, object]] = {
    "citations": (list[replies.Citation], []),
    "reads": (list[replies.Read], []),
    "withdrawn": (replies.WithdrawnAnswer | None, None),
}


def _message(saved: chats.Message) -> replies.Message:
    """A saved message as the API gives it. A part whose saved JSON is damaged (not JSON, of another
    shape, nested past any use, lone surrogates: a hand-edited or damaged catalog) is left out with a
    line in the log, so the rest of the chat is read."""
    parts = {}
    for name, (kind, missing) in _SAVED.items():
        raw = getattr(saved, name)
        try:
            parts[name] = missing if raw is None else msgspec.json.decode(raw, type=kind)
        except (msgspec.DecodeError, RecursionError, TypeError) as exc:
            log.warning("message %s: its %s cannot be read (%s); left out", saved.id, name, exc)
            parts[name] = missing
    plain = {f: getattr(saved, f) for f in ("id", "role", "text", "mode", "stopped", "created_at")}
    return msgspec.convert(plain | parts, replies.Message)


async def rename_chat(request: Request) -> Response:
    engine = service_of(request).ready()
    chat_id = request.path_params["chat_id"]
    title = one_line((await read_body(request, protocol.RenameRequest)).title)
    if not title:
        raise BadRequestError("A chat's title cannot be empty.")
    await to_thread.run_sync(engine.chats.rename, chat_id, title)
    return reply(replies.ChatTitle(chat_id, title))


async def delete_chat(request: Request) -> Response:
    """Refused while an answer runs in the chat: the answer is saved there when it ends."""
    service = service_of(request)
    engine = service.ready()
    chat_id = request.path_params["chat_id"]
    if service.answers.in_chat(chat_id):
        raise ConflictError("An answer in this chat is still running; stop it first.")
    await to_thread.run_sync(engine.chats.delete, chat_id)
    return Response(status_code=204)


ROUTES = [
    Route("/v1/chats", list_chats, methods=["GET"]),
    Route("/v1/chats/{chat_id:int}", get_chat, methods=["GET"]),
    Route("/v1/chats/{chat_id:int}", rename_chat, methods=["PATCH"]),
    Route("/v1/chats/{chat_id:int}", delete_chat, methods=["DELETE"]),
]
