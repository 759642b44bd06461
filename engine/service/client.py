"""A client of the engine service (docs/api.md): typed calls over HTTP on its Unix socket, streams as
typed events, and `connect_or_start`, which starts the service when none answers.

It imports no model runtime (no torch, no numpy): the `m3` command and the app start in a blink and
leave the model to the one process that keeps it loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import httpx

from engine.service.protocol import PROCESS_FILE, SOCKET
from ingest.errors import M3Error
from ingest.paths import HOME_ENV, Home
from ingest.process import alive

QUICK_S = 60.0  # a plain request (folders, status); doctor and streams may take as long as they need
HEALTH_S = 5.0  # health always answers at once, unless the machine is very busy
START_S = 600.0  # a cold model load on a busy machine takes a minute; a hang should not wait forever
STREAM = httpx.Timeout(None, connect=HEALTH_S)  # an answer may pause (a cold memory, a busy machine)
STOP_S = 60.0  # the service saves its indexes before it exits
POLL_S = 0.1
RACE_GRACE_S = 5.0  # a service that lost the lock race: time for the winner to answer
BUSY_S = 30.0  # a service whose health has not answered for this long is stuck (stopped, deadlocked)


class ServiceError(M3Error):
    """The engine service refused or failed a request; the message is its one sentence."""

    def __init__(self, sentence: str, status: int | None = None):
        super().__init__(sentence)
        self.status = status  # the HTTP status, when the service answered


class ServiceUnreachable(ServiceError):
    """No engine service listens on the socket."""


class ServiceBusy(ServiceError):
    """The engine service listens but did not answer in time."""


# --- what the service says ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    pid: int
    version: str
    state: str  # loading, ready or failed
    error: str | None
    data: str
    model: str | None
    device: str | None
    started_at: float


@dataclass(frozen=True)
class Folder:
    id: int
    path: str


@dataclass(frozen=True)
class Documents:
    seen: int
    parsed: int
    pending: int
    failed: int


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass(frozen=True)
class Status:
    folders: list[str]
    documents: Documents
    chunks: int
    chunks_pending: int
    memories_to_drop: int
    failures: list[Failure]
    answers: list[str]
    background: str  # idle, working or paused


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Citation:
    n: int
    path: str
    page: int | None
    line_start: int
    line_end: int
    text: str
    share: float

    def as_dict(self) -> dict:
        return asdict(self)


# Stream events, one per NDJSON line.


@dataclass(frozen=True)
class Start:
    id: str
    chat_id: int | None = None  # generation has no chat


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Citations:
    citations: list[Citation]


@dataclass(frozen=True)
class Done:
    """The end of an answer or a generation: its whole text, and whether it was stopped early."""

    id: str
    text: str
    stopped: bool
    tokens: int
    chat_id: int | None = None


@dataclass(frozen=True)
class ScanProgress:
    files_seen: int
    files_parsed: int
    files_failed: int
    files_pending: int
    chunks: int
    chunks_pending: int


@dataclass(frozen=True)
class MemoryProgress:
    done: int
    total: int


@dataclass(frozen=True)
class ScanDone:
    new: int
    changed: int
    moved: int
    deleted: int
    failed: int
    missing: list[str]
    unreadable: list[tuple[str, str]]


Event = Start | Text | Citations | Done | ScanProgress | MemoryProgress | ScanDone

T = TypeVar("T")


def _build(cls: type[T], obj: dict) -> T:
    """A dataclass from a JSON object, ignoring keys a newer service may add."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in obj.items() if k in names})


def _event(obj: dict) -> Event:
    kind = obj.get("type")
    if kind == "error":
        raise ServiceError(obj.get("error") or "The engine service ended the stream with an error.")
    if kind == "citations":
        return Citations([_build(Citation, c) for c in obj["citations"]])
    if kind == "done" and "new" in obj:  # a scan's end carries its report
        return _build(ScanDone, obj)
    cls = {"start": Start, "text": Text, "done": Done, "progress": ScanProgress, "memories": MemoryProgress}
    if kind not in cls:
        raise ServiceError(f"The engine service sent an event this client does not know ({kind!r}).")
    return _build(cls[kind], obj)


# --- the client ------------------------------------------------------------------------------------------


class Stream:
    """A streamed answer or generation: iterate its events; `cancel()` stops it on the service, which keeps
    and saves what was streamed. Closing the stream (or leaving its `with`) stops it too."""

    def __init__(self, client: Client, response: httpx.Response):
        self._client = client
        self._response = response
        self.id: str | None = None

    def __iter__(self) -> Iterator[Event]:
        with _transport_errors(self._client.home):
            for line in self._response.iter_lines():
                if not line.strip():
                    continue
                event = _event(json.loads(line))
                if isinstance(event, Start):
                    self.id = event.id
                yield event

    def cancel(self) -> None:
        """Tell the service to stop this answer, then hang up (a stream not yet started is just closed)."""
        try:
            if self.id is not None:
                self._client.cancel(self.id)
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """The engine service of one home, one method per endpoint of docs/api.md."""

    def __init__(self, home: Home):
        self.home = home
        self.socket = home.data / SOCKET
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://m3",
            timeout=httpx.Timeout(QUICK_S, connect=HEALTH_S),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # endpoints

    def health(self) -> Health:
        return _build(Health, self._call("GET", "/v1/health", timeout=HEALTH_S))

    def status(self) -> Status:
        s = self._call("GET", "/v1/status")
        return _build(
            Status,
            {
                **s,
                "documents": _build(Documents, s["documents"]),
                "failures": [_build(Failure, f) for f in s["failures"]],
            },
        )

    def folders(self) -> list[Folder]:
        return [_build(Folder, f) for f in self._call("GET", "/v1/folders")["folders"]]

    def add_folder(self, path: str | Path) -> Folder:
        return _build(Folder, self._call("POST", "/v1/folders", json={"path": _absolute(path)}))

    def remove_folder(self, path: str | Path) -> Folder:
        return _build(Folder, self._call("POST", "/v1/folders/remove", json={"path": _absolute(path)}))

    def scan(self, path: str | Path | None = None) -> Stream:
        """Reconcile the watched folders (or the one at `path`) with the disk, write their memories."""
        return self._stream("/v1/scan", {"path": None if path is None else _absolute(path)})

    def ask(self, question: str, mode: str = "memory", chat_id: int | None = None) -> Stream:
        return self._stream("/v1/answers", {"question": question, "mode": mode, "chat_id": chat_id})

    def generate(
        self, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int | None
    ) -> Stream:
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        return self._stream("/v1/generate", {**body, "seed": seed})

    def cancel(self, answer_id: str) -> bool:
        """Stop one answer; False if it was no longer running."""
        try:
            self._call("DELETE", f"/v1/answers/{answer_id}")
        except ServiceError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def bank_stats(self) -> dict[str, Any]:
        return self._call("GET", "/v1/bank/stats")

    def doctor(self) -> list[Check]:
        checks = self._call("POST", "/v1/doctor", timeout=None)["checks"]
        return [_build(Check, c) for c in checks]

    def shutdown(self) -> None:
        self._call("POST", "/v1/shutdown", timeout=HEALTH_S)  # it answers 202 at once, then exits

    # transport

    def _call(
        self, method: str, url: str, json: object = None, timeout: object = httpx.USE_CLIENT_DEFAULT
    ) -> Any:
        with _transport_errors(self.home):
            response = self._http.request(method, url, json=json, timeout=timeout)  # type: ignore[arg-type]
        _raise_for(response, self.home)
        return response.json() if response.content else None

    def _stream(self, url: str, body: dict) -> Stream:
        with _transport_errors(self.home):
            request = self._http.build_request("POST", url, json=body, timeout=STREAM)
            response = self._http.send(request, stream=True)
            if response.is_error:
                response.read()
                response.close()
        _raise_for(response, self.home)
        return Stream(self, response)


@contextlib.contextmanager
def _transport_errors(home: Home) -> Iterator[None]:
    """httpx's transport errors as one sentence: none runs, it does not answer, or it went away."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise ServiceUnreachable(f"No engine service is running for {home.data}.") from exc
    except httpx.TimeoutException as exc:
        raise ServiceBusy(f"The engine service for {home.data} does not answer.") from exc
    except httpx.TransportError as exc:
        raise ServiceError(
            f"The engine service stopped answering; the details are in {home.log_file}."
        ) from exc


def _raise_for(response: httpx.Response, home: Home) -> None:
    if not response.is_error:
        return
    try:
        sentence = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        sentence = f"The engine service answered {response.status_code}; the details are in {home.log_file}."
    raise ServiceError(sentence, response.status_code)


def _absolute(path: str | Path) -> str:
    """The service runs elsewhere (its own working folder): paths travel absolute."""
    return str(Path(path).expanduser().absolute())


# --- the service's lifetime -----------------------------------------------------------------------------


def running(home: Home) -> Health | None:
    """The health of the service of `home`, or None when none answers."""
    with Client(home) as client:
        try:
            return client.health()
        except ServiceUnreachable:
            return None


def connect_or_start(
    home: Home,
    model: str | Path | None = None,
    device: str | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Client:
    """A client of the ready service of `home`, started in the background first if none answers.

    model, device: what the service must run (None: whatever runs, or the defaults for a new one); a
    running service with another model or device is an error, not a silent switch. on_wait: called with
    what is happening ("starting the engine…", "loading the model…") every poll while waiting."""
    client = Client(home)
    try:
        try:
            health = client.health()
            if health.state == "failed":  # of no use; a fresh one may succeed (a fixed file, another model)
                _stop(client, health.pid)
        except (ServiceUnreachable, ServiceBusy):
            pass  # started, or waited for, below
        _wait_ready(client, model, device, on_wait)
    except BaseException:
        client.close()
        raise
    return client


def stop(home: Home) -> int | None:
    """Stop the service of `home` and wait until its process is gone; its pid, or None if none ran.
    One that does not answer on its socket (the socket file was deleted, the process is stopped) is
    found through service.json and signalled."""
    with Client(home) as client:
        try:
            pid = client.health().pid
        except (ServiceUnreachable, ServiceBusy):
            pid = holder(home)
            if pid is None:
                return None
        _stop(client, pid)
        return pid


def _stop(client: Client, pid: int) -> None:
    """Ask it to shut down (SIGTERM if it cannot be asked), wait, and kill it if it does not end: a
    kill -9 loses nothing (the next start repairs), while a stuck service blocks its data folder."""
    try:
        client.shutdown()
    except ServiceError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped (frozen) process acts on the SIGTERM only once it runs
    deadline = time.monotonic() + STOP_S
    while alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a stopped process cannot die until it runs again
                os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(POLL_S)


def _start(home: Home, model: str | Path | None, device: str | None) -> tuple[int, subprocess.Popen]:
    """The service in a session of its own (a Ctrl-C in this terminal is not for it), and where its
    output starts in the log file: what it prints before its logging is set up (its refusal to start, a
    broken install's traceback) goes there too."""
    try:
        home.make_private()
        fd = os.open(home.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ServiceError(f"The data folder {home.data} cannot be created ({exc.strerror}).") from exc
    with open(fd, "ab") as log:
        return log.tell(), subprocess.Popen(
            [sys.executable, "-m", "engine.service", *service_flags(model, device)],
            env=_environment(home),
            cwd=home.data,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def service_flags(model: str | Path | None, device: str | None) -> list[str]:
    """The command-line flags of `python -m engine.service` (and `m3 serve --foreground`)."""
    return [*(["--model", _absolute(model)] if model else []), *(["--device", device] if device else [])]


def _environment(home: Home) -> dict[str, str]:
    """This environment, with M3_HOME naming `home` (the service reads its home there)."""
    env = dict(os.environ)
    root = home.data.parent
    if Home.at(root) == home:
        env[HOME_ENV] = str(root)
    else:
        env.pop(HOME_ENV, None)
        if Home.from_env(env) != home:
            raise ServiceError(f"No service can be started for {home.data}: its folders share no root.")
    return env


def _wait_ready(
    client: Client, model: str | Path | None, device: str | None, on_wait: Callable[[str], None] | None
) -> Health:
    """Poll health until ready, starting a service whenever none answers and none of ours is starting."""
    home = client.home
    deadline = time.monotonic() + START_S
    process: subprocess.Popen | None = None
    log_start = 0
    exited_at: float | None = None
    busy_since: float | None = None
    while True:
        health: Health | None = None
        try:
            health = client.health()
            busy_since = None
        except ServiceBusy:
            busy_since = busy_since or time.monotonic()  # it runs, slowly: wait, but not for ever
            if time.monotonic() - busy_since > BUSY_S:
                raise ServiceError(
                    f"The engine service (pid {holder(home)}) for {home.data} does not answer; "
                    "`m3 stop` ends it."
                ) from None
        except ServiceUnreachable:
            if process is None:
                log_start, process = _start(home, model, device)
            elif process.poll() is not None:
                # Lost the race for the lock to another client's service? Then wait for that one instead.
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > RACE_GRACE_S:
                    raise ServiceError(_why_not_started(home, process, log_start)) from None
        if health is not None:
            _check_same(health, model, device)
            if health.state == "ready":
                return health
            if health.state == "failed":
                raise ServiceError(_with_log(health.error or "The engine failed to start.", home))
        if time.monotonic() > deadline:
            raise ServiceError(
                f"The engine service was not ready after {START_S:.0f} s; the details are in {home.log_file}."
            )
        if on_wait is not None:
            on_wait("loading the model…" if health else "starting the engine…")
        time.sleep(POLL_S)


def _with_log(sentence: str, home: Home) -> str:
    """The service's sentence, pointing to the log file unless it does already."""
    log = str(home.log_file)
    return sentence if log in sentence else f"{sentence} The details are in {log}."


def _check_same(health: Health, model: str | Path | None, device: str | None) -> None:
    """A client asking for a model or device other than the running one's is told so, in one sentence."""
    other_model = (
        model and health.model and Path(model).expanduser().resolve() != Path(health.model).resolve()
    )
    other_device = device and health.device and not _same_device(device, health.device)
    if other_model or other_device:
        raise ServiceError(
            f"The engine service for {health.data} runs {health.model} on {health.device}, not "
            f"{model or health.model} on {device or health.device}; `m3 stop` it first to switch."
        )


def _same_device(asked: str, running: str) -> bool:
    """ "cuda" is any CUDA device; "cuda:1" only that one."""
    return asked == running or (":" not in asked and running.split(":")[0] == asked)


def holder(home: Home) -> int | None:
    """The pid service.json names, if that process is alive (it holds the data folder's lock)."""
    try:
        pid = json.loads((home.data / PROCESS_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and alive(pid) else None


def _why_not_started(home: Home, process: subprocess.Popen, log_start: int) -> str:
    """One sentence on why our service exited before it answered: another one holds the folder but does
    not answer on its socket, or the service's own refusal (the last `Error:` line it wrote to the log)."""
    other = holder(home)
    if other is not None and other != process.pid:
        return (
            f"The engine service (pid {other}) holds {home.data} but does not answer on its socket; "
            "`m3 stop` ends it."
        )
    try:
        with open(home.log_file, "rb") as log:
            log.seek(log_start)
            output = log.read().decode(errors="replace").splitlines()
    except OSError:
        output = []
    refusals = [line.removeprefix("Error: ") for line in output if line.startswith("Error: ")]
    if refusals:
        return _with_log(refusals[-1], home)
    return (
        f"The engine service stopped before it was ready (exit status {process.returncode}); "
        f"the details are in {home.log_file}."
    )
