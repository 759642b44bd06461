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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from engine.service.events import (
    AnswerEvent,
    BankProgress,
    BankReport,
    Citation,
    Citations,
    Done,
    Exported,
    ExportEvent,
    Failed,
    GenerateEvent,
    ImportEvent,
    MemoryProgress,
    Read,
    Reads,
    ScanDone,
    ScanEvent,
    Scanning,
    ScanProgress,
    Source,
    Start,
    Text,
    Withdrawn,
)
from engine.service.protocol import PROCESS_FILE, SOCKET
from engine.service.replies import (
    Chat,
    Chats,
    ChatSummary,
    ChatTitle,
    Check,
    Checks,
    Documents,
    Failure,
    Folder,
    Folders,
    Health,
    Message,
    Passage,
    Piece,
    Retrying,
    Skipped,
    SkippedType,
    Status,
)
from ingest.errors import M3Error
from ingest.paths import HOME_ENV, Home
from ingest.process import alive

__all__ = [
    "BankProgress",
    "BankReport",
    "Exported",
    "Chat",
    "ChatSummary",
    "ChatTitle",
    "Check",
    "Citation",
    "Citations",
    "Client",
    "Documents",
    "Done",
    "Event",
    "Failure",
    "Folder",
    "Health",
    "MemoryProgress",
    "Message",
    "Passage",
    "Piece",
    "Read",
    "Reads",
    "ScanDone",
    "ScanProgress",
    "Scanning",
    "ServiceBusy",
    "ServiceError",
    "ServiceUnreachable",
    "Skipped",
    "SkippedType",
    "Source",
    "Start",
    "Status",
    "Stream",
    "Text",
    "Withdrawn",
    "connect_or_start",
    "holder",
    "running",
    "service_flags",
    "stop",
]

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


# --- what the service says: replies and stream events, defined once in replies.py and events.py -----------

# what a stream yields (`Failed` is raised, not yielded)
Event = AnswerEvent | GenerateEvent | ScanEvent | ExportEvent | ImportEvent

_ANSWER = msgspec.json.Decoder(AnswerEvent)
_GENERATE = msgspec.json.Decoder(GenerateEvent)
_SCAN = msgspec.json.Decoder(ScanEvent)
_EXPORT = msgspec.json.Decoder(ExportEvent)
_IMPORT = msgspec.json.Decoder(ImportEvent)

# --- the client ------------------------------------------------------------------------------------------


class Stream:
    """A streamed answer, generation or scan: iterate its events; `cancel()` stops it on the service, which
    keeps and saves what was streamed. Closing the stream (or leaving its `with`) stops it too. An `error`
    event is raised as ServiceError."""

    def __init__(self, client: Client, response: httpx.Response, decoder: msgspec.json.Decoder):
        self._client = client
        self._response = response
        self._decoder = decoder
        self.id: str | None = None

    def __iter__(self) -> Iterator[Event]:
        with _transport_errors(self._client.home):
            for line in self._response.iter_lines():
                if not line.strip():
                    continue
                event = self._event(line)
                if isinstance(event, Start):
                    self.id = event.id
                yield event

    def _event(self, line: str) -> Event:
        try:
            event = self._decoder.decode(line)
        except msgspec.DecodeError as exc:  # ValidationError too: an unknown type, a missing field
            raise ServiceError(
                f"The engine service sent an event this client does not know ({exc})."
            ) from None
        if isinstance(event, Failed):
            raise ServiceError(event.error or "The engine service ended the stream with an error.")
        return event

    def cancel(self) -> None:
        """Tell the service to stop this answer, then hang up (a stream not yet started is just closed).
        A service too busy to answer within HEALTH_S is not waited for: hanging up stops the answer too.
        Raises ServiceError when the stop request fails."""
        try:
            if self.id is not None:
                self._client.cancel(self.id, timeout=HEALTH_S)
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
        return self._call("GET", "/v1/health", Health, timeout=HEALTH_S)

    def status(self) -> Status:
        return self._call("GET", "/v1/status", Status)

    def folders(self) -> list[Folder]:
        """The watched folders with their counts (documents, chunks, memories, failures)."""
        return self._call("GET", "/v1/folders", Folders).folders

    def add_folder(self, path: str | Path) -> Folder:
        return self._call("POST", "/v1/folders", Folder, json={"path": _absolute(path)})

    def remove_folder(self, path: str | Path) -> Folder:
        return self._call("POST", "/v1/folders/remove", Folder, json={"path": _absolute(path)})

    def scan(self, path: str | Path | None = None) -> Stream:
        """Reconcile the watched folders (or the one at `path`) with the disk, write their memories."""
        return self._stream("/v1/scan", {"path": None if path is None else _absolute(path)}, _SCAN)

    def ask(self, question: str, mode: str = "memory", chat_id: int | None = None) -> Stream:
        body = {"question": question, "mode": mode, "chat_id": chat_id}
        return self._stream("/v1/answers", body, _ANSWER)

    def generate(
        self, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int | None
    ) -> Stream:
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        return self._stream("/v1/generate", {**body, "seed": seed}, _GENERATE)

    def cancel(self, answer_id: str, timeout: float = QUICK_S) -> bool:
        """Stop one answer; False if it was no longer running."""
        try:
            self._call("DELETE", f"/v1/answers/{answer_id}", timeout=timeout)
        except ServiceError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def chats(self, q: str | None = None, limit: int = 200) -> list[ChatSummary]:
        """The chats, most recently updated first; with `q`, those whose title or a message holds it
        (ignoring case), each with the matching text around its first match."""
        params: dict[str, Any] = {"limit": limit} | ({"q": q} if q else {})
        return self._call("GET", "/v1/chats", Chats, params=params).chats

    def chat(self, chat_id: int) -> Chat:
        """A chat with its messages (their citations and what each answer read)."""
        return self._call("GET", f"/v1/chats/{chat_id}", Chat)

    def rename_chat(self, chat_id: int, title: str) -> ChatTitle:
        return self._call("PATCH", f"/v1/chats/{chat_id}", ChatTitle, json={"title": title})

    def delete_chat(self, chat_id: int) -> None:
        """Refused (409) while an answer runs in the chat."""
        self._call("DELETE", f"/v1/chats/{chat_id}")

    def retry(self, path: str | Path) -> str:
        """Parse a file whose document failed again, in the background; the path the service took."""
        return self._call("POST", "/v1/documents/retry", Retrying, json={"path": _absolute(path)}).path

    def passage(self, hash: str, path: str | Path | None = None, context: int = 2) -> Passage:
        """The chunk `hash` (of the document at `path`, for a text several hold) with up to `context`
        chunks before and after it."""
        # as citations name it: an absolute path, or label/path in an imported collection
        params: dict[str, Any] = {"context": context} | ({} if path is None else {"path": str(path)})
        return self._call("GET", f"/v1/passages/{hash}", Passage, params=params)

    def bank_stats(self) -> dict[str, Any]:
        return self._call("GET", "/v1/bank/stats", dict[str, Any])

    def export_bank(
        self,
        path: str | Path,
        folder: str | Path | None = None,
        documents: str | None = None,
        vectors: bool = True,
        replace: bool = False,
    ) -> Stream:
        """Write a bank file (`BankProgress` events, then `Exported`); `folder`: an imported collection's
        label, or else a watched folder's path (a label wins wherever the command runs; `./name` is a
        path); `documents`: a glob. Closing the stream cancels it."""
        body: dict[str, Any] = {"path": _absolute(path), "documents": documents, "vectors": vectors}
        if folder is not None:
            labels = {f.path for f in self.folders() if f.kind == "imported"}
            body |= {"collection": str(folder)} if str(folder) in labels else {"folder": _absolute(folder)}
        body["replace"] = replace
        return self._stream("/v1/bank/export", body, _EXPORT)

    def inspect_bank(self, path: str | Path) -> Stream:
        """Check a bank file and plan its import (`BankProgress`, then `BankReport`); writes nothing."""
        return self._stream("/v1/bank/inspect", {"path": _absolute(path)}, _IMPORT)

    def import_bank(self, path: str | Path, dry_run: bool = False) -> Stream:
        """Import a bank file (`BankProgress`, then `BankReport`). Closing the stream before the commit
        changes nothing; after it, the engine finishes applying in the background."""
        return self._stream("/v1/bank/import", {"path": _absolute(path), "dry_run": dry_run}, _IMPORT)

    def remove_collection(self, label: str) -> Folder:
        """Forget an imported collection with its documents."""
        return self._call("DELETE", f"/v1/collections/{quote(label, safe='')}", Folder)

    def doctor(self) -> list[Check]:
        return self._call("POST", "/v1/doctor", Checks, timeout=None).checks

    def shutdown(self) -> None:
        self._call("POST", "/v1/shutdown", timeout=HEALTH_S)  # it answers 202 at once, then exits

    # transport

    def _call(self, method: str, url: str, reply: Any = None, **request: Any) -> Any:
        """Send one request (httpx's `json`, `params`, `timeout`); its reply decoded as `reply`, the type
        it should have (None: no reply is read)."""
        with _transport_errors(self.home):
            response = self._http.request(method, url, **request)
        _raise_for(response, self.home)
        if reply is None:
            return None
        try:
            return msgspec.json.decode(response.content, type=reply)
        except msgspec.DecodeError as exc:
            raise ServiceError(
                f"The engine service answered in a form this client does not know ({exc})."
            ) from None

    def _stream(self, url: str, body: dict, decoder: msgspec.json.Decoder) -> Stream:
        with _transport_errors(self.home):
            request = self._http.build_request("POST", url, json=body, timeout=STREAM)
            response = self._http.send(request, stream=True)
            if response.is_error:
                response.read()
                response.close()
        _raise_for(response, self.home)
        return Stream(self, response, decoder)


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
    return str(Path(os.path.expanduser(path)).absolute())  # `~nobody` stays as typed, refused by the service


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
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.service", *service_flags(model, device)],
            env=_environment(home),
            cwd=home.data,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        # Reaped when it exits, so that a long-lived client (the app) keeps no zombie of it.
        threading.Thread(target=process.wait, name="m3-service-reaper", daemon=True).start()
        return log.tell(), process


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
