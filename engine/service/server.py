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
from typing import Any, TypeVar

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
from engine.service import protocol
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
from ingest.catalog import Folder
from ingest.errors import FolderError
from ingest.folders import candidates
from ingest.paths import Home

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

Body = TypeVar("Body", bound=msgspec.Struct)


async def _body(request: Request, schema: type[Body]) -> Body:
    """The request's JSON body as `schema`; a 400 naming what is wrong (msgspec's reason) otherwise."""
    try:
        return msgspec.json.decode(await request.body(), type=schema)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"The request is not valid: {exc}.") from None
    except msgspec.DecodeError:
        raise BadRequestError("The request body is not JSON.") from None


def _service(request: Request) -> Service:
    return request.app.state.service


def _watched(folders: list[Folder], path: str) -> Folder | None:
    names = candidates(path)
    return next((f for f in folders if f.path in names), None)


def _folder(folder: Folder) -> dict[str, Any]:
    return {"id": folder.id, "path": str(folder.path)}


# --- endpoints ---------------------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return JSONResponse(_service(request).health())


async def status(request: Request) -> Response:
    service = _service(request)
    engine = service.ready()
    s = await to_thread.run_sync(engine.status)
    p = s.progress
    pending = bool(p.files_pending or p.chunks_pending or s.memories_to_drop)
    return JSONResponse(
        {
            "folders": [str(f.path) for f in s.folders],
            "documents": {
                "seen": p.files_seen,
                "parsed": p.files_parsed,
                "pending": p.files_pending,
                "failed": p.files_failed,
            },
            "chunks": p.chunks,
            "chunks_pending": p.chunks_pending,
            "memories_to_drop": s.memories_to_drop,
            "failures": [{"path": str(path), "reason": reason} for path, reason in s.failures],
            "answers": service.answers.ids(),
            "background": service.background_state(pending),
        }
    )


async def list_folders(request: Request) -> Response:
    engine = _service(request).ready()
    folders = await to_thread.run_sync(engine.folders)
    return JSONResponse({"folders": [_folder(f) for f in folders]})


async def add_folder(request: Request) -> Response:
    service = _service(request)
    engine = service.ready()
    path = (await _body(request, protocol.FolderRequest)).path
    if _watched(await to_thread.run_sync(engine.folders), path) is not None:
        raise ConflictError(f"{Path(path).expanduser().resolve()} is already watched.")
    folder = await to_thread.run_sync(engine.add_folder, path)
    service.background.restart()  # scanned and followed at once
    return JSONResponse(_folder(folder), status_code=201)


async def remove_folder(request: Request) -> Response:
    service = _service(request)
    engine = service.ready()
    path = (await _body(request, protocol.FolderRequest)).path
    if _watched(await to_thread.run_sync(engine.folders), path) is None:
        raise NotFoundError(f"{Path(path).expanduser()} is not a watched folder.")
    folder = await to_thread.run_sync(engine.remove_folder, path)
    service.background.restart()
    return JSONResponse(_folder(folder))


async def scan(request: Request) -> Response:
    """Does in front, with progress, what the background work would do; the background waits meanwhile."""
    service = _service(request)
    engine = service.ready()
    path = (await _body(request, protocol.ScanRequest)).path
    if path is not None and _watched(await to_thread.run_sync(engine.folders), path) is None:
        raise NotFoundError(f"{Path(path).expanduser()} is not a watched folder.")
    cancel = threading.Event()  # set when the client hangs up: memory writing stops after its batch

    def produce(emit: Callable[[protocol.Event], None]) -> None:
        with service.background.paused():
            report = engine.scan(path, on_progress=lambda p: emit(protocol.progress(p)))
            engine.sync_memories(
                on_progress=lambda done, total: emit(protocol.memories(done, total)), stop=cancel
            )
        emit(protocol.scan_done(report))

    return service.streams.response(produce, cancel)


async def ask(request: Request) -> Response:
    service = _service(request)
    engine = service.ready()
    body = await _body(request, protocol.AskRequest)
    question, mode, chat_id = body.question, body.mode, body.chat_id
    if chat_id is not None:
        chats = await to_thread.run_sync(engine.catalog.chats)
        if all(c["id"] != chat_id for c in chats):
            raise NotFoundError(f"There is no chat {chat_id}.")
    answer_id, cancel = service.answers.open()
    try:
        answer = await to_thread.run_sync(engine.ask, question, mode, chat_id, cancel)
    except BaseException:
        service.answers.close(answer_id)
        raise

    def produce(emit: Callable[[protocol.Event], None]) -> None:
        emit(protocol.start(answer_id, answer.chat_id))
        for piece in answer:
            emit(protocol.text(piece))
        emit(protocol.citations(c.as_dict() for c in answer.citations))
        emit(protocol.done(answer_id, answer.text, answer.stopped, answer.tokens, answer.chat_id))

    return service.streams.response(produce, cancel, on_end=lambda: service.answers.close(answer_id))


async def generate(request: Request) -> Response:
    service = _service(request)
    engine = service.ready()
    body = await _body(request, protocol.GenerateRequest)
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

    def produce(emit: Callable[[protocol.Event], None]) -> None:
        emit(protocol.start(answer_id))
        text = ""
        for piece in continuation:
            text += piece
            emit(protocol.text(piece))
        emit(protocol.done(answer_id, text, cancel.is_set(), continuation.tokens))

    return service.streams.response(produce, cancel, on_end=lambda: service.answers.close(answer_id))


async def cancel_answer(request: Request) -> Response:
    answer_id = request.path_params["answer_id"]
    if not _service(request).answers.cancel(answer_id):
        raise NotFoundError(f"No answer {answer_id} is running.")
    return Response(status_code=204)


async def bank_stats(request: Request) -> Response:
    engine = _service(request).ready()
    return JSONResponse(await to_thread.run_sync(engine.bank_stats))


async def doctor(request: Request) -> Response:
    """Repairs touch the bank and the index: the background work waits meanwhile."""
    service = _service(request)
    engine = service.ready()

    def run() -> list:
        with service.background.paused():
            return run_doctor(engine)

    checks = await to_thread.run_sync(run)
    return JSONResponse({"checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]})


async def shutdown(request: Request) -> Response:
    return Response(status_code=202, background=BackgroundTask(_service(request).exit))


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
    Route("/v1/bank/stats", bank_stats, methods=["GET"]),
    Route("/v1/doctor", doctor, methods=["POST"]),
    Route("/v1/shutdown", shutdown, methods=["POST"]),
]


# --- errors, activity, authentication ------------------------------------------------------------------


def _error_handlers(log_file: Path) -> dict:
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

    async def bug(request: Request, exc: Exception) -> Response:  # Starlette then logs the traceback
        log.error("%s %s failed: %r", request.method, request.url.path, exc)
        sentence = f"Something went wrong inside memory3; the details are in {log_file}."
        return JSONResponse({"error": sentence}, status_code=500)

    return {M3Error: refused, HTTPException: http_error, Exception: bug}


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

    app = Starlette(
        routes=ROUTES, exception_handlers=_error_handlers(service.home.log_file), lifespan=lifespan
    )
    app.state.service = service
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
