"""What every route needs: its request's body or query as a protocol schema (a 400 that names what is wrong
otherwise), the service it serves, and a reply encoded by msgspec."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from engine.service.errors import BadRequestError
from engine.service.service import Service

Schema = TypeVar("Schema", bound=msgspec.Struct)


async def read_body(request: Request, schema: type[Schema]) -> Schema:
    """The request's JSON body as `schema`."""
    try:
        return msgspec.json.decode(await request.body(), type=schema)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"The request is not valid: {exc}.") from None
    except msgspec.DecodeError:
        raise BadRequestError("The request body is not JSON.") from None


def read_query(request: Request, schema: type[Schema]) -> Schema:
    """The request's query parameters as `schema` (numbers given as text are taken as numbers)."""
    try:
        return msgspec.convert(dict(request.query_params), schema, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"The request is not valid: {exc}.") from None


def service_of(request: Request) -> Service:
    return request.app.state.service


def reply(content: object, status_code: int = 200) -> Response:
    """`content` (Structs, lists, dicts) as a JSON response."""
    return Response(msgspec.json.encode(content), status_code, media_type="application/json")
