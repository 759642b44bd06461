"""The engine service's HTTP API (docs/api.md, version 1) and `serve()`, which runs it.

Starlette routes on uvicorn, over a Unix socket we bind ourselves (mode 0600) and, when configured, a
loopback TCP port that wants a bearer token. Handlers never run the model on the event loop: short calls
go to a worker thread, streams to a thread of their own (`streams.py`), so `/v1/health` and `/v1/status`
answer while answers stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import uvicorn
from anyio import to_thread
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.config import ServiceConfig
from engine.doctor import run as run_doctor
from engine.errors import EmptyPromptError, UnknownModeError
from engine.service import events, protocol, replies, routes_bank, routes_chats, routes_documents
from engine.service.errors import (
    BadRequestError,
    ConflictError,
    M3Error,
    NotFoundError,
    NotReadyError,
)
from engine.service.listen import tcp_socket, unix_socket, write_token
from engine.service.lock import ServiceLock
from engine.service.service import Service
from engine.service.web import read_body, reply, service_of
from ingest.catalog import Folder
from ingest.errors import FolderError
from ingest.folders import candidates
from ingest.ingester import Progress
from ingest.paths import Home
from ingest.scan import Scanning

log = logging.getLogger(__name__)

STATUS: dict[type[M3Error], int] = {
    BadRequestError: 400,
    EmptyPromptError: 400,
    UnknownModeError: 400,
    FolderError: 400,
    NotFoundError: 404,
    ConflictError: 409,
    NotReadyError: 503,
}
GRACEFUL_S = 10  # at exit, streams (told to stop) get this long to close before they are cut
IDLE_CHECK_S = 5.0  # how often the idle timer looks (more often when idle_minutes is tiny)


# --- requests ----------------------------------------------------------------------------------------------


def _watched(folders: list[Folder], path: str) -> Folder | None:
    names = candidates(path)
    return next((f for f in folders if f.path in names), None)


def _folder(folder: Folder) -> dict[str, Any]:
    """A folder added or removed: its id and path (its counts come with the list)."""
    return {"id": folder.id, "path": str(folder.path)}


# --- endpoints ---------------------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return reply(service_of(request).health())


async def status(request: Request) -> Response:
    service = service_of(request)
    engine = service.ready()
    s = await to_thread.run_sync(engine.status)
    p = s.progress
    pending = bool(p.files_pending or p.chunks_pending or s.memories_to_drop or s.imports or p.scanning)
    return reply(
        replies.Status(
            folders=[str(f.path) for f in s.folders],
            documents=replies.Documents(p.files_seen, p.files_parsed, p.files_pending, p.files_failed),
            chunks=p.chunks,
            chunks_pending=p.chunks_pending,
            memories_to_drop=s.memories_to_drop,
            failures=[replies.Failure(str(path), reason) for path, reason in s.failures],
            answers=service.answers.ids(),
            background=service.background_state(pending),
            collections=[str(f.path) for f in s.collections],
            imports_pending=s.imports,
            warnings=[replies.Failure(str(path), doubt) for path, doubt in s.warnings],
            missing_folders=[str(path) for path in s.missing],
            skipped=replies.Skipped(
                s.skipped.too_large,
                [replies.Failure(str(path), reason) for path, reason in s.skipped.too_large_files],
                s.skipped.unsupported,
                [replies.SkippedType(suffix, n) for suffix, n in s.skipped.unsupported_types],
                s.skipped.ignored,
            ),
            scanning=_scanning(p.scanning),
        )
    )


def _scanning(s: Scanning | None) -> events.Scanning | None:
    return None if s is None else events.Scanning(str(s.folder), s.files_found, s.files_changed)


def _scan_progress(p: Progress) -> events.ScanProgress:
    counts = (p.files_seen, p.files_parsed, p.files_failed, p.files_pending, p.chunks, p.chunks_pending)
    return events.ScanProgress(*counts, _scanning(p.scanning))


async def list_folders(request: Request) -> Response:
    engine = service_of(request).ready()
    folders = await to_thread.run_sync(engine.catalog.folder_counts)
    return reply(
        replies.Folders(
            [
                replies.Folder(
                    f.id,
                    str(f.path),
                    f.documents,
                    f.chunks,
                    f.memories,
                    f.memories_pending,
                    f.failed,
                    kind=f.kind,
                )
                for f in folders
            ]
        )
    )


async def add_folder(request: Request) -> Response:
    service = service_of(request)
    engine = service.ready()
    path = (await read_body(request, protocol.FolderRequest)).path
    if _watched(await to_thread.run_sync(engine.folders), path) is not None:
        raise ConflictError(f"{Path(path).expanduser().resolve()} is already watched.")
    folder = await to_thread.run_sync(engine.add_folder, path)
    service.background.restart()  # scanned and followed at once
    return reply(_folder(folder), 201)


async def remove_folder(request: Request) -> Response:
    service = service_of(request)
    engine = service.ready()
    path = (await read_body(request, protocol.FolderRequest)).path
    if _watched(await to_thread.run_sync(engine.folders), path) is None:
        raise NotFoundError(f"{Path(path).expanduser()} is not a watched folder.")
    folder = await to_thread.run_sync(engine.remove_folder, path)
    service.background.restart()
    return reply(_folder(folder))


async def scan(request: Request) -> Response:
    """Does in front, with progress, what the background work would do; the background waits meanwhile."""
    service = service_of(request)
    engine = service.ready()
    path = (await read_body(request, protocol.ScanRequest)).path
    if path is not None and _watched(await to_thread.run_sync(engine.folders), path) is None:
        raise NotFoundError(f"{Path(path).expanduser()} is not a watched folder.")
    cancel = threading.Event()  # set when the client hangs up: memory writing stops after its batch

    def produce(emit: Callable[[events.Event], None]) -> None:
        with service.background.paused():
            report = engine.scan(path, on_progress=lambda p: emit(_scan_progress(p)))
            engine.sync_memories(
                on_progress=lambda done, total: emit(events.MemoryProgress(done, total)), stop=cancel
            )
        missing = [str(folder) for folder in report.missing]
        unreadable = [(str(folder), reason) for folder, reason in report.unreadable]
        counts = (report.new, report.changed, report.moved, report.deleted, report.failed)
        emit(events.ScanDone(*counts, missing, unreadable))

    return service.streams.response(produce, cancel)


async def ask(request: Request) -> Response:
    service = service_of(request)
    engine = service.ready()
    body = await read_body(request, protocol.AskRequest)
    answer_id, cancel = service.answers.open(body.chat_id)
    try:  # NotFoundError (404) when there is no chat `chat_id`
        answer = await to_thread.run_sync(engine.ask, body.question, body.mode, body.chat_id, cancel)
    except BaseException:
        service.answers.close(answer_id)
        raise
    service.answers.saved_in(answer_id, answer.chat_id)

    def produce(emit: Callable[[events.Event], None]) -> None:
        emit(events.Start(answer_id, answer.chat_id))
        withdrawn = None
        for piece in answer:
            if answer.withdrawn is not withdrawn:  # set, then an empty piece, before the re-read
                withdrawn = answer.withdrawn
                emit(events.Withdrawn(withdrawn.text, withdrawn.names))
            if piece:
                emit(events.Text(piece))
        emit(events.Reads([msgspec.convert(r.as_dict(), events.Read) for r in answer.reads]))
        emit(events.Citations([events.Citation(**c.as_dict()) for c in answer.citations]))
        emit(events.Done(answer_id, answer.text, answer.stopped, answer.tokens, answer.chat_id))

    return service.streams.response(produce, cancel, on_end=lambda: service.answers.close(answer_id))


async def generate(request: Request) -> Response:
    service = service_of(request)
    engine = service.ready()
    body = await read_body(request, protocol.GenerateRequest)
    answer_id, cancel = service.answers.open()
    try:
        continuation = await to_thread.run_sync(
            lambda: engine.generate(
                body.prompt, body.max_tokens, body.temperature, body.top_p, body.seed, cancel=cancel
            )
        )
    except BaseException:
        service.answers.close(answer_id)
        raise

    def produce(emit: Callable[[events.Event], None]) -> None:
        emit(events.Start(answer_id))
        text = ""
        for piece in continuation:
            text += piece
            emit(events.Text(piece))
        emit(events.Done(answer_id, text, cancel.is_set(), continuation.tokens))

    return service.streams.response(produce, cancel, on_end=lambda: service.answers.close(answer_id))


async def cancel_answer(request: Request) -> Response:
    answer_id = request.path_params["answer_id"]
    if not service_of(request).answers.cancel(answer_id):
        raise NotFoundError(f"No answer {answer_id} is running.")
    return Response(status_code=204)


async def doctor(request: Request) -> Response:
    """Repairs touch the bank and the index: the background work waits meanwhile."""
    service = service_of(request)
    engine = service.ready()

    def run() -> list:
        with service.background.paused():
            return run_doctor(engine)

    checks = await to_thread.run_sync(run)
    return reply(replies.Checks([replies.Check(c.name, c.ok, c.detail) for c in checks]))


async def shutdown(request: Request) -> Response:
    return Response(status_code=202, background=BackgroundTask(service_of(request).exit))


ROUTES = [
    Route("/v1/health", health, methods=["GET"]),
    Route("/v1/status", status, methods=["GET"]),
    Route("/v1/folders", list_folders, methods=["GET"]),
    Route("/v1/folders", add_folder, methods=["POST"]),
    Route("/v1/folders/remove", remove_folder, methods=["POST"]),
    Route("/v1/scan", scan, methods=["POST"]),
    Route("/v1/answers", ask, methods=["POST"]),
    Route("/v1/answers/{answer_id}", cancel_answer, methods=["DELETE"]),
    Route("/v1/generate", generate, methods=["POST"]),
    Route("/v1/doctor", doctor, methods=["POST"]),
    Route("/v1/shutdown", shutdown, methods=["POST"]),
    *routes_bank.ROUTES,
    *routes_chats.ROUTES,
    *routes_documents.ROUTES,
]


# --- errors, activity, authentication ------------------------------------------------------------------


def _error_handlers() -> dict:
    async def refused(request: Request, exc: Exception) -> Response:
        code = next((c for kind, c in STATUS.items() if isinstance(exc, kind)), 500)
        if code == 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc)}, status_code=code)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        sentence = {404: "There is no such endpoint.", 405: "That method is not allowed here."}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse({"error": sentence}, status_code=exc.status_code)

    return {M3Error: refused, HTTPException: http_error}


class Unexpected:
    """Any other exception, a bug: logged with its traceback and answered `500` with one sentence, the
    connection kept. (Starlette's own handler for `Exception` re-raises after answering, and uvicorn then
    closes the connection, so a client's next request on it failed too.) Once a response has started,
    nothing can be answered: the exception goes on and the connection ends."""

    def __init__(self, app: ASGIApp, log_file: Path) -> None:
        self.app, self.log_file = app, log_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if started or scope["type"] != "http":
                raise
            log.exception("%s %s failed", scope["method"], scope["path"])
            sentence = f"Something went wrong inside memory3; the details are in {self.log_file}."
            await JSONResponse({"error": sentence}, status_code=500)(scope, receive, send)


class Activity:
    """Counts the requests in flight (a stream until it ends) and when the last one ended: the idle timer."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.service.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.service.in_flight -= 1
            self.service.last_request = time.monotonic()


class BearerToken:
    """Requests over TCP must carry `Authorization: Bearer <token>`; over the Unix socket (no server
    address with a port) the socket's mode is the permission."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        over_tcp = scope["type"] == "http" and server is not None and server[1] is not None
        if over_tcp:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"error": "This request needs the token in service.token (Authorization: Bearer)."},
                    status_code=401,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(service: Service, token: str | None) -> Starlette:
    """The API over `service`; with a `token`, TCP requests must carry it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(_exit_when_idle(service))
        try:
            yield
        finally:
            watcher.cancel()

    app = Starlette(routes=ROUTES, exception_handlers=_error_handlers(), lifespan=lifespan)
    app.state.service = service
    app.add_middleware(Unexpected, log_file=service.home.log_file)
    app.add_middleware(Activity, service=service)
    if token is not None:
        app.add_middleware(BearerToken, token=token)
    return app


async def _exit_when_idle(service: Service) -> None:
    every = min(IDLE_CHECK_S, max(service.config.idle_s / 4, 0.05))
    while True:
        await asyncio.sleep(every)
        if await to_thread.run_sync(service.idle):
            log.info("idle for %.1f min: exiting", service.config.idle_minutes)
            service.exit()
            return


# --- the process -------------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn with our exit: SIGTERM or SIGINT stops the answers at once and ends the process normally,
    after `Service.close()` has saved (uvicorn would re-raise the signal after its own shutdown)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Only a flag: a signal handler runs between any two bytecodes of the main thread, which may
        hold the locks `Service.exit()` takes; the exit itself runs in `shutdown`, on the event loop."""
        self.should_exit = True

    async def shutdown(self, sockets: list | None = None) -> None:
        self.service.exit()  # answers and streams are told to stop before uvicorn waits for them
        await super().shutdown(sockets)

    def stop(self) -> None:
        self.should_exit = True


def serve(home: Home, model: str | Path | None = None, device: str | None = None) -> None:
    """Run the engine service of `home` in this process until `POST /v1/shutdown`, SIGTERM or SIGINT, or
    `[service] idle_minutes` of idleness. Raises ServiceRunningError when another service holds the data
    folder, ListenError when a socket cannot be opened, ConfigError for a bad config.toml."""
    config = ServiceConfig.load(home.config_file)
    socket_path, token_path = home.data / protocol.SOCKET, home.data / protocol.TOKEN
    with ServiceLock(home.data, socket_path):
        listeners = [unix_socket(socket_path)]  # before any thread: it sets the umask
        token = None
        try:
            if config.tcp_port:
                listeners.append(tcp_socket(config.tcp_port))
                token = write_token(token_path)
            else:
                token_path.unlink(missing_ok=True)
            service = Service(home, model, device, config)
            server = _Server(_uvicorn_config(build_app(service, token)), service)
            service.start(stop_serving=server.stop)
            log.info("serving %s on %s (pid in %s)", home.data, socket_path, protocol.PROCESS_FILE)
            try:
                server.run(sockets=listeners)
            finally:
                service.close()
        finally:
            for sock in listeners:
                sock.close()
            token_path.unlink(missing_ok=True)


def _uvicorn_config(app: ASGIApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,  # our log file, set up by the caller; never the screen
        access_log=False,
        http="h11",
        loop="asyncio",
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_S,
    )
