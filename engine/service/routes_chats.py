"""The chats endpoints of docs/api.md: list (and search), read one, rename, delete."""

from __future__ import annotations

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.service import protocol, replies
from engine.service.errors import BadRequestError, ConflictError
from engine.service.web import read_body, read_query, reply, service_of


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
    return reply(msgspec.convert(chat, replies.Chat, from_attributes=True))


async def rename_chat(request: Request) -> Response:
    engine = service_of(request).ready()
    chat_id = request.path_params["chat_id"]
    title = (await read_body(request, protocol.RenameRequest)).title.strip()
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
