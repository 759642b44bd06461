"""Typed errors of the engine service. Each message is one sentence a user can act on; the server turns
them into an HTTP status and `{"error": sentence}` (docs/api.md)."""

from ingest.errors import M3Error, NotFoundError

__all__ = [
    "M3Error",
    "ServiceRunningError",
    "ListenError",
    "NotReadyError",
    "BadRequestError",
    "NotFoundError",
    "ConflictError",
]


class ServiceRunningError(M3Error):
    """Another service already holds the data folder's lock (one engine per data folder)."""


class ListenError(M3Error):
    """The Unix socket or the TCP port cannot be opened, or the socket would not be private."""


class NotReadyError(M3Error):
    """The engine is still loading, or failed to load (HTTP 503)."""


class BadRequestError(M3Error):
    """The request is malformed: not JSON, a field missing or of the wrong type (HTTP 400)."""


class ConflictError(M3Error):
    """The request conflicts with the state: the folder is already watched, an answer still runs in the
    chat (HTTP 409)."""
