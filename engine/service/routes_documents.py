"""The document endpoints of docs/api.md beyond folders and scans: a passage in its context, and a failed
file parsed again."""

from __future__ import annotations

from pathlib import Path

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.service import protocol, replies
from engine.service.web import read_body, read_query, reply, service_of
from ingest.passages import Piece, passage


def _piece(piece: Piece) -> replies.Piece:
    return replies.Piece(piece.text, piece.page, piece.line_start, piece.line_end)


async def passage_in_context(request: Request) -> Response:
    engine = service_of(request).ready()
    query = read_query(request, protocol.PassageQuery)
    path = None if query.path is None else Path(query.path)
    found = await to_thread.run_sync(
        passage, engine.catalog, request.path_params["chunk_hash"], path, query.context
    )
    at = found.piece
    return reply(
        replies.Passage(
            found.hash,
            str(found.path),
            at.page,
            at.line_start,
            at.line_end,
            at.text,
            [_piece(p) for p in found.before],
            [_piece(p) for p in found.after],
        )
    )


async def retry_document(request: Request) -> Response:
    """The background work parses it again, as soon as it is between two batches."""
    engine = service_of(request).ready()
    path = Path((await read_body(request, protocol.RetryRequest)).path)
    await to_thread.run_sync(lambda: engine.ingester().retry(path))
    return reply(replies.Retrying(str(path)), 202)


ROUTES = [
    Route("/v1/passages/{chunk_hash}", passage_in_context, methods=["GET"]),
    Route("/v1/documents/retry", retry_document, methods=["POST"]),
]
