"""The engine service as clients meet it: a real `python -m engine.service` process on its Unix socket.

A tiny random-weight model stands in wherever the answer's content does not matter (it loads in a blink;
its answers are gibberish, but streams, handles, cancels, crashes and locks are the real ones). The
bundled model serves one module-scoped service, where the answer must be right. Every home lives under
/tmp with a short path (a Unix socket path has at most 107 bytes) and shares the session's cache, so the
embedder is exported once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from filelock import FileLock
from service_rig import START_S, Running, corpus, serving, wait_for

from bench.tiny_gguf import write_tiny_gguf

NOBODY = 65534
QUESTION = "What is the code for door 7?"
VAULT = (
    "# Security notes\n\nThe kitchen door sticks in winter.\n\n"
    "The access code for the blue vault is 7391-QX.\n"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "gemma3")


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    return corpus(tmp_path_factory.mktemp("docs") / "notes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(roots, tiny, docs) -> Iterator[Running]:
    """The tiny model's service, with TCP on, after a full scan of `docs` (the clean run)."""
    port = free_port()
    with serving(roots(f"[service]\ntcp_port = {port}\n"), tiny, docs) as running:
        running.port = port
        yield running


@pytest.fixture(scope="module")
def clean(service) -> dict:
    """What the clean run holds: counts and a RAG answer, for the crash tests to compare with."""
    status = service.status()
    answer = service.ask(QUESTION, "rag")
    return {
        "documents": status["documents"],
        "chunks": status["chunks"],
        "answer": answer[-1]["text"],
        "cited": [c["path"] for c in answer[-2]["citations"]],
    }


# --- starting, and what a client sees --------------------------------------------------------------------


def test_health_says_loading_then_ready_and_other_endpoints_wait(service):
    assert service.states == ["loading", "ready"]
    assert service.early is not None and service.early.status_code == 503
    assert "loading" in service.early.json()["error"]
    health = service.http.get("/v1/health").json()
    assert health["pid"] == service.process.pid and health["data"] == str(service.home.data)
    assert health["device"] == "cpu" and health["model"].endswith("tiny.gguf") and health["error"] is None
    info = json.loads((service.home.data / "service.json").read_text())
    assert info["pid"] == service.process.pid and info["socket"] == str(service.socket)


def test_an_answer_streams_its_events_in_order_and_is_saved(service, docs):
    """The tiny random-weight model's memory answer names what no source says (random letters): it is
    withdrawn and read again as text, and the stream says where (`withdrawn`, between the two texts)."""
    events = service.ask(QUESTION)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-3:] == ["reads", "citations", "done"]
    assert kinds.count("withdrawn") == 1 and set(kinds[1:-3]) == {"text", "withdrawn"}
    cut = kinds.index("withdrawn")
    first = "".join(e["text"] for e in events[1:cut]).strip()
    withdrawn = events[cut]
    assert withdrawn["text"] == first and withdrawn["names"]
    assert all(name in first for name in withdrawn["names"])
    start, done = events[0], events[-1]
    assert done["id"] == start["id"] and done["chat_id"] == start["chat_id"]
    assert done["text"] == "".join(e["text"] for e in events[cut:] if e["type"] == "text").strip()
    assert [r["step"] for r in events[-3]["reads"]][-1] == 0  # the re-read's: the question's, at the start
    assert done["stopped"] is False and done["tokens"] > 0
    assert all(Path(c["path"]).parent == docs for c in events[-2]["citations"])
    messages = saved(service, start["chat_id"])
    assert [(m["role"], m["stopped"]) for m in messages] == [("user", 0), ("assistant", 0)]
    assert messages[1]["text"] == done["text"]
    # the same chat goes on
    more = service.ask(QUESTION)
    assert len(saved(service, start["chat_id"])) == 2  # a new chat when none is given
    again = list(service.events("/v1/answers", {"question": "And door 8?", "chat_id": start["chat_id"]}))
    assert again[0]["chat_id"] == start["chat_id"] != more[0]["chat_id"]
    assert len(saved(service, start["chat_id"])) == 4


def saved(service: Running, chat_id: int) -> list[dict]:
    with sqlite3.connect(service.home.catalog) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT role, text, stopped FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
        )
        return [dict(r) for r in rows]


def long_generation(service: Running) -> tuple[httpx.Response, Iterator[dict], str]:
    """A generation that runs for many seconds unless stopped: its response, events and id."""
    body = {"prompt": "Once upon a time", "max_tokens": 20000, "temperature": 0.0, "top_p": 1.0, "seed": None}
    request = service.http.build_request(
        "POST", "/v1/generate", json=body, timeout=httpx.Timeout(120, connect=5)
    )
    response = service.http.send(request, stream=True)
    assert response.status_code == 200
    events = (json.loads(line) for line in response.iter_lines())
    start = next(events)
    assert start["type"] == "start"
    assert next(events)["type"] == "text"  # it is generating
    return response, events, start["id"]


def test_status_answers_while_a_generation_streams_and_a_cancel_stops_it_at_once(service):
    response, events, gen_id = long_generation(service)
    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(service.socket)), base_url="http://m3"
        ) as other:
            started = time.monotonic()
            status = other.get("/v1/status")
            health = other.get("/v1/health")
            waited = time.monotonic() - started
        assert status.status_code == 200 and health.status_code == 200
        assert status.json()["answers"] == [gen_id]
        assert waited < 5, f"status and health took {waited:.2f} s during a stream"
        started = time.monotonic()
        assert service.http.delete(f"/v1/answers/{gen_id}").status_code == 204
        rest = list(events)
        latency = time.monotonic() - started
    finally:
        response.close()
    print(f"status+health during a stream: {waited * 1000:.0f} ms; cancel to done: {latency * 1000:.0f} ms")
    assert rest[-1]["type"] == "done" and rest[-1]["stopped"] is True and rest[-1]["id"] == gen_id
    assert latency < 2, f"the generation took {latency:.2f} s to stop"
    assert service.http.delete(f"/v1/answers/{gen_id}").status_code == 404
    assert service.status()["answers"] == []


def test_closing_the_stream_stops_the_generation(service):
    response, _, gen_id = long_generation(service)
    response.close()
    deadline = time.monotonic() + 10
    while gen_id in service.status()["answers"]:
        assert time.monotonic() < deadline, "the generation went on after its client hung up"
        time.sleep(0.05)


def test_background_work_waits_while_an_answer_streams(service, tmp_path):
    """Files added during a generation are parsed, but their memories wait until it ends."""
    folder = corpus(tmp_path / "during", files=2)
    response, _, gen_id = long_generation(service)
    try:
        assert service.http.post("/v1/folders", json={"path": str(folder)}).status_code == 201
        wait_for(lambda: service.status()["chunks_pending"] > 0)
        waiting = service.status()
        time.sleep(1.0)
        still = service.status()
        assert still["answers"] == [gen_id] and still["background"] == "paused"
        assert still["chunks_pending"] >= waiting["chunks_pending"] > 0  # no memory written meanwhile
    finally:
        service.http.delete(f"/v1/answers/{gen_id}")
        response.close()
    wait_for(lambda: service.status()["chunks_pending"] == 0)  # the answer over, the work goes on
    assert service.http.post("/v1/folders/remove", json={"path": str(folder)}).status_code == 200
    wait_for(lambda: service.status()["background"] == "idle")


def test_cancel_one_answer_while_another_runs(service):
    b = service.events("/v1/answers", {"question": "Which hook holds the key of door 3?", "mode": "memory"})
    b_start = next(b)
    a = service.events("/v1/answers", {"question": QUESTION, "mode": "memory"})
    a_start = next(a)
    assert sorted(service.status()["answers"]) <= sorted([a_start["id"], b_start["id"]])
    assert service.http.delete(f"/v1/answers/{a_start['id']}").status_code == 204
    a_rest, b_rest = list(a), list(b)
    a_done, b_done = a_rest[-1], b_rest[-1]
    assert a_done["type"] == b_done["type"] == "done"
    assert a_done["stopped"] is True and b_done["stopped"] is False
    assert a_done["text"] == "".join(e["text"] for e in a_rest if e["type"] == "text").strip()
    stopped = saved(service, a_start["chat_id"])
    assert [(m["role"], m["stopped"]) for m in stopped] == [("user", 0), ("assistant", 1)]
    assert stopped[1]["text"] == a_done["text"]
    assert [m["stopped"] for m in saved(service, b_start["chat_id"])] == [0, 0]


def test_requests_the_engine_refuses_get_one_sentence_and_a_status(service, docs, tmp_path):
    http = service.http
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cases = [
        (http.post("/v1/answers", json={"question": "  "}), 400, "empty"),
        (http.post("/v1/answers", json={"question": "Hi?", "mode": "loud"}), 400, "mode"),
        (http.post("/v1/answers", json={"question": "Hi?", "chat_id": 99999}), 404, "chat"),
        (http.post("/v1/answers", content=b"{not json"), 400, "JSON"),
        (http.post("/v1/answers", json={"question": 3}), 400, "$.question"),
        (http.post("/v1/answers", json={"question": "Hi?", "modes": "rag"}), 400, "unknown field `modes`"),
        (http.post("/v1/answers", json={"question": "x" * 70_000}), 400, "$.question"),
        (http.post("/v1/answers", json=["Hi?"]), 400, "object"),
        (http.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 0}), 400, "max_tokens"),
        (http.delete("/v1/answers/nope"), 404, "nope"),
        (http.post("/v1/folders", json={"path": str(docs)}), 409, "already watched"),
        (http.post("/v1/folders", json={"path": str(tmp_path / "missing")}), 400, "does not exist"),
        (http.post("/v1/folders/remove", json={"path": str(tmp_path)}), 404, "not a watched folder"),
        (http.get("/v1/nothing"), 404, "endpoint"),
        (http.post("/v1/folders", json={"path": str(loop)}), 400, "cannot be followed"),
        (http.post("/v1/folders", json={"path": "/tmp/a\u0000b"}), 400, "NUL"),
        (http.post("/v1/generate", json={"prompt": "Hi", "seed": 2**64}), 400, "$.seed"),
    ]
    for response, code, fragment in cases:
        assert response.status_code == code, response.text
        assert fragment in response.json()["error"], response.json()


def test_folders_bank_and_doctor(service, docs):
    stats = service.http.get("/v1/bank/stats").json()
    status = service.status()
    assert stats["memories"] == stats["chunks"] == status["chunks"] > 0
    assert service.http.get("/v1/folders").json() == {
        "folders": [
            {
                "id": 1,
                "path": str(docs),
                "documents": status["documents"]["seen"],
                "chunks": status["chunks"],
                "memories": stats["memories"],
                "memories_pending": 0,
                "failed": 0,
                "kind": "watched",
            }
        ]
    }
    checks = service.http.post("/v1/doctor").json()["checks"]
    assert [c["name"] for c in checks] == ["model", "reader", "embedder", "catalog", "index", "bank"]
    assert all(c["ok"] for c in checks), checks
    assert checks[1]["detail"] == "base: the bundled reader was trained for another model"  # the tiny one


def test_a_folder_added_is_scanned_and_followed_at_once(service, tmp_path):
    folder = corpus(tmp_path / "more", files=2)
    before = service.status()["documents"]["seen"]
    assert service.http.post("/v1/folders", json={"path": str(folder)}).status_code == 201
    wait_for(lambda: service.status()["documents"]["parsed"] == before + 2)
    (folder / "late.md").write_text("A note written while the service follows the folder.\n")
    wait_for(lambda: service.status()["documents"]["parsed"] == before + 3)
    wait_for(lambda: service.status()["background"] == "idle")
    removed = service.http.post("/v1/folders/remove", json={"path": str(folder)})
    assert removed.status_code == 200 and removed.json()["path"] == str(folder)
    wait_for(lambda: service.status()["documents"]["seen"] == before)


def test_a_scan_tells_its_progress_while_it_walks_the_folders(roots, tiny, tmp_path):
    """Progress during the scan, not at its end: a folder of 20,000 files in 400 folders (photos, which
    are counted and not parsed, and 40 notes) streams where its walk is before the catalog changes, and
    /v1/status says so meanwhile. The background's own scan of the folder just added gives way to it."""
    big = tmp_path / "big"
    for d in range(400):
        (big / f"{d:03}").mkdir(parents=True)
        for i in range(50):
            (big / f"{d:03}" / f"{i}.jpg").write_bytes(b"\xff\xd8")
        if d % 10 == 0:
            (big / f"{d:03}" / "note.md").write_text(f"Note {d}.\n")
    running = Running(roots(), "--model", str(tiny), "--device", "cpu").wait_ready()
    seen: list[dict | None] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.append(running.status()["scanning"])
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    try:
        assert running.http.post("/v1/folders", json={"path": str(big)}).status_code == 201
        poller.start()
        events = list(running.events("/v1/scan", {"path": None}))
    finally:
        done.set()
        if poller.is_alive():
            poller.join()
        running.stop()
    kinds = [e["type"] for e in events]
    walked = [i for i, e in enumerate(events) if e["type"] == "progress" and e["scanning"] is not None]
    after = next(i for i, e in enumerate(events) if e["type"] == "progress" and e["scanning"] is None)
    assert walked and walked[-1] < after < kinds.index("done")
    first, last = events[walked[0]], events[walked[-1]]
    assert first["scanning"]["folder"] == str(big) and first["scanning"]["files_found"] == 0
    assert any(0 < events[i]["scanning"]["files_found"] < 20_040 for i in walked)  # told mid-walk
    assert last["scanning"]["files_found"] <= 20_040 and last["scanning"]["files_changed"] <= 40
    assert all(events[i]["files_seen"] <= 40 for i in walked)  # before the catalog changed, or as before
    assert events[after]["files_seen"] == 40
    assert any(s is not None and s["folder"].startswith(str(big)) for s in seen)  # /v1/status meanwhile


def test_a_file_moved_into_a_new_folder_keeps_its_document_and_memories(roots, tiny, tmp_path):
    """The watcher live, in the service: a note moved into a folder created a moment before, then out of
    the watched folder and, a debounce window later, into another new one. The document keeps its id, is
    not parsed again, and its memories are not written again (nor dropped): the bank does not grow."""
    notes, outside = corpus(tmp_path / "notes", files=1), tmp_path / "outside"
    outside.mkdir()
    running = Running(roots("[ingest]\nquiet_s = 0.3\nmax_latency_s = 5.0\n"), "--model", str(tiny))
    try:
        running.wait_ready()
        assert running.http.post("/v1/folders", json={"path": str(notes)}).status_code == 201
        wait_for(lambda: running.status()["chunks"] > 0 and running.status()["background"] == "idle", 120)

        def kept() -> tuple[list, list, int]:
            with sqlite3.connect(running.home.catalog) as db:
                docs = db.execute("SELECT id, rel_path, parsed_at FROM documents").fetchall()
                work = db.execute("SELECT hash, written, updated_at FROM memory_work ORDER BY hash")
                return docs, work.fetchall(), running.http.get("/v1/bank/stats").json()["bytes_on_disk"]

        docs, work, bank_bytes = kept()
        [(doc_id, _, parsed_at)] = docs
        (notes / "new").mkdir()
        (notes / "note-00.md").rename(notes / "new" / "note-00.md")
        wait_for(lambda: kept()[0][0][1] == "new/note-00.md")
        log = running.home.log_file
        held = log.read_text().count("held 5.0 s")
        (notes / "new" / "note-00.md").rename(outside / "note-00.md")
        wait_for(lambda: log.read_text().count("held 5.0 s") > held)  # the delete's batch is in
        (notes / "later").mkdir()
        (outside / "note-00.md").rename(notes / "later" / "note-00.md")
        wait_for(lambda: kept()[0][0][1] == "later/note-00.md")
        time.sleep(1.0)  # a memory written again would be by now (the tiny model writes in a blink)
        assert kept() == ([(doc_id, "later/note-00.md", parsed_at)], work, bank_bytes)
    finally:
        running.stop()


# --- who may connect --------------------------------------------------------------------------------------


def test_the_socket_is_private_to_its_owner(service):
    assert service.socket.stat().st_mode & 0o777 == 0o600
    if os.getuid() != 0:
        pytest.skip("only root can act as another user here (the mode 0600 check above still ran)")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, then try the socket
        os.close(read)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.stat(service.socket)  # the folders are open to others: only the socket's mode may refuse
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(service.socket))
            outcome = b"connected"
        except PermissionError:
            outcome = b"refused"
        except BaseException as exc:  # noqa: BLE001 - anything else is reported to the parent
            outcome = repr(exc).encode()
        os.write(write, outcome)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome = pipe.read()
    os.waitpid(pid, 0)
    assert outcome == b"refused"


def test_tcp_wants_the_token(service):
    token_file = service.home.data / "service.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    url = f"http://127.0.0.1:{service.port}/v1/health"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["state"] == "ready"
    assert service.http.get("/v1/health").status_code == 200  # the socket needs none


def test_a_second_service_on_the_same_folder_is_refused(service, tiny):
    second = subprocess.run(
        [sys.executable, "-m", "engine.service", "--model", str(tiny)],
        env={**os.environ, "M3_HOME": str(service.root)},
        capture_output=True,
        text=True,
        timeout=START_S,
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"Error: Another memory3 engine service (pid {service.process.pid}) already serves "
        f"{service.home.data}; `m3 stop` ends it."
    ]
    assert service.http.get("/v1/health").json()["state"] == "ready"  # untouched


# --- lifetime ----------------------------------------------------------------------------------------------


def test_idle_exit_cleans_up(roots, tiny):
    running = Running(roots("[service]\nidle_minutes = 0.02\n"), "--model", str(tiny)).wait_ready()
    assert running.wait_exit(60) == 0
    assert not running.socket.exists() and not (running.home.data / "service.json").exists()
    assert "idle for" in running.home.log_file.read_text()


@pytest.fixture(scope="module")
def crashed(roots) -> Path:
    """The home the crash tests kill their services in, one after the other."""
    return roots()


def test_kill_9_during_ingest_then_restart_repairs_and_loses_nothing(crashed, tiny, docs, clean):
    root = crashed
    running = Running(root, "--model", str(tiny)).wait_ready()
    assert running.http.post("/v1/folders", json={"path": str(docs)}).status_code == 201
    wait_for(lambda: running.status()["documents"]["parsed"] > 0, timeout_s=60)
    caught = running.status()
    running.kill()
    assert caught["documents"]["pending"] or caught["chunks_pending"], "the ingest ended before the kill"
    # what the crash left: a socket file nobody serves, a service.json naming a dead process
    assert running.socket.exists()
    assert json.loads((running.home.data / "service.json").read_text())["pid"] == running.process.pid
    restarted = Running(root, "--model", str(tiny)).wait_ready()
    try:
        events = restarted.scan()
        assert events[-1]["type"] == "done"
        status = restarted.status()
        assert status["documents"] == clean["documents"] and status["chunks"] == clean["chunks"]
        assert status["chunks_pending"] == 0 and status["failures"] == []
        answer = restarted.ask(QUESTION, "rag")
        assert answer[-1]["text"] == clean["answer"]
        assert [c["path"] for c in answer[-2]["citations"]] == clean["cited"]
        stats = restarted.http.get("/v1/bank/stats").json()
        assert stats["memories"] == stats["chunks"] == clean["chunks"]
    finally:
        restarted.stop()
    print(f"killed at {caught['documents']} with {caught['chunks_pending']} memories pending")


def test_kill_9_during_an_answer_then_restart_answers_the_same(crashed, tiny, docs, clean):
    root = crashed
    running = Running(root, "--model", str(tiny)).wait_ready()
    added = running.http.post("/v1/folders", json={"path": str(docs)})  # 409: the test above watched it
    assert added.status_code in (201, 409)
    running.scan()
    events = running.events("/v1/answers", {"question": QUESTION, "mode": "rag"})
    start = next(events)
    assert next(events)["type"] == "text"
    running.kill()
    with pytest.raises(httpx.HTTPError):
        list(events)
    restarted = Running(root, "--model", str(tiny)).wait_ready()
    try:
        assert [m["role"] for m in saved(restarted, start["chat_id"])] == ["user"]  # the answer died with it
        status = restarted.status()
        assert status["documents"] == clean["documents"] and status["chunks"] == clean["chunks"]
        answer = restarted.ask(QUESTION, "rag")
        assert answer[-1]["text"] == clean["answer"]
    finally:
        restarted.process.send_signal(signal.SIGTERM)
        assert restarted.wait_exit() == 0
    # a clean exit: no socket, no service.json, and the lock is free
    assert not restarted.socket.exists() and not (restarted.home.data / "service.json").exists()
    lock = FileLock(restarted.home.data / "service.lock", timeout=0)
    lock.acquire()
    lock.release()


# --- the bundled model: the answer's content ---------------------------------------------------------------


@pytest.fixture(scope="module")
def vault(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vault")
    (folder / "vault.md").write_text(VAULT)
    return folder


@pytest.fixture(scope="module")
def real(roots, model_path, vault) -> Iterator[Running]:
    with serving(roots(), model_path, vault) as running:
        yield running


def test_the_bundled_model_answers_from_the_file_and_the_second_answer_starts_warm(real, vault):
    question = "What is the access code for the blue vault?"
    timings = []
    for _ in range(2):
        started = time.monotonic()
        events = real.events("/v1/answers", {"question": question, "mode": "memory"})
        first = next(e for e in events if e["type"] == "text")
        timings.append(time.monotonic() - started)
        rest = [first, *events]
    done, cited = rest[-1], rest[-2]["citations"]
    assert "7391" in done["text"]
    assert Path(cited[0]["path"]) == vault / "vault.md"
    print(f"first text after {timings[0]:.2f} s, then {timings[1]:.2f} s (warm)")
    assert timings[1] < 5


def test_a_cancel_stops_the_bundled_model_within_a_token(real):
    body = {"prompt": "The history of the city", "max_tokens": 400}
    with real.http.stream("POST", "/v1/generate", json=body, timeout=60) as response:
        events = (json.loads(line) for line in response.iter_lines())
        start = next(events)
        assert next(events)["type"] == "text"
        asked = time.monotonic()
        assert real.http.delete(f"/v1/answers/{start['id']}").status_code == 204
        done = [e for e in events if e["type"] == "done"][0]
        latency = time.monotonic() - asked
    assert done["stopped"] is True and done["tokens"] < 400
    print(f"bundled model: cancel to done in {latency * 1000:.0f} ms")
    assert latency < 1
