"""The service's chats, what answers read, folder counts, failed files tried again and passages in their
context, as clients meet them: a real `python -m engine.service` with the tiny random-weight model (its
answers are gibberish; what it read, what was saved and what the endpoints say are the real ones), and the
typed client of engine/service/client.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_rig import Running, corpus, serving, wait_for

from bench.tiny_gguf import write_tiny_gguf
from engine.service import client as typed

QUESTION = "What is the code for door 7?"
SOURCE_KEYS = {"hash", "path", "page", "line_start", "line_end", "score"}
RETRIED = "The lantern for the retried note hangs in the boat shed.\n"


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """A corpus, a long note of many chunks, and a file that cannot be parsed (NUL bytes)."""
    folder = corpus(tmp_path_factory.mktemp("docs") / "notes", files=6)
    sections = [
        f"# Section {i}\n\nRoom {i} holds crate {100 + i}; its key is under tile {i * 3}.\n" for i in range(9)
    ]
    (folder / "long.md").write_text("\n".join(sections))
    (folder / "broken.txt").write_bytes(b"\x00" * len(RETRIED.encode()))
    return folder


@pytest.fixture(scope="module")
def service(roots, tmp_path_factory, docs) -> Iterator[Running]:
    tiny = write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "gemma3")
    with serving(roots(), tiny, docs) as running:
        yield running


@pytest.fixture(scope="module")
def client(service) -> Iterator[typed.Client]:
    with typed.Client(service.home) as c:
        yield c


def catalog(service: Running) -> sqlite3.Connection:
    """The catalog, read only, beside the running service."""
    db = sqlite3.connect(f"file:{service.home.catalog}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


# --- what the model read ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["memory", "rag", "none"])
def test_an_answer_says_what_it_read_and_saves_it(service, mode):
    events = list(service.events("/v1/answers", {"question": QUESTION, "mode": mode}))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-3:] == ["reads", "citations", "done"]
    # the tiny model's memory answer is withdrawn and read again as text (tests/test_service.py)
    assert set(kinds[1:-3]) == ({"text", "withdrawn"} if mode == "memory" else {"text"})
    reads, citations = events[-3]["reads"], events[-2]["citations"]
    if mode == "none":
        assert reads == [] and citations == []
    elif mode == "rag":
        assert [(r["step"], r["query"]) for r in reads] == [(0, QUESTION)]
    else:  # the question while the prompt is read, then the reply's last 64 tokens, every 64 tokens
        memory, reread = reads[:-1], reads[-1]  # then the re-read as text: the question's
        steps = [r["step"] for r in memory]
        assert steps[0] == 0 and all(b - a == 64 for a, b in zip(steps, steps[1:], strict=False))
        assert memory[0]["query"] == QUESTION and (reread["step"], reread["query"]) == (0, QUESTION)
    for read in reads:
        assert read["sources"], read
        for source in read["sources"]:
            assert set(source) == SOURCE_KEYS and 0 < source["score"] <= 2 / 61
            assert Path(source["path"]).is_absolute()
        scores = [s["score"] for s in read["sources"]]
        assert scores == sorted(scores, reverse=True)  # best first
    read_hashes = {s["hash"] for r in reads for s in r["sources"]}
    for c in citations:  # a citation names its chunk, one of those read
        assert c["hash"] == hashlib.sha256(c["text"].encode()).hexdigest() and c["hash"] in read_hashes
    chat = service.http.get(f"/v1/chats/{events[0]['chat_id']}").json()
    answer = chat["messages"][-1]
    assert answer["role"] == "assistant" and answer["mode"] == mode and answer["stopped"] is False
    assert answer["reads"] == reads and answer["citations"] == citations
    told = [{"text": e["text"], "names": e["names"]} for e in events if e["type"] == "withdrawn"]
    assert answer["withdrawn"] == (told[0] if told else None) and chat["messages"][0]["withdrawn"] is None
    assert chat["messages"][0]["reads"] == [] and chat["messages"][0]["text"] == QUESTION


def test_the_client_decodes_every_event_of_an_answer(client):
    with client.ask(QUESTION, "rag") as stream:
        events = list(stream)
    start, reads, cited, done = events[0], events[-3], events[-2], events[-1]
    assert isinstance(start, typed.Start) and stream.id == start.id == done.id
    assert all(isinstance(e, typed.Text) for e in events[1:-3])
    assert isinstance(reads, typed.Reads) and isinstance(cited, typed.Citations)
    assert isinstance(done, typed.Done) and done.chat_id == start.chat_id
    [read] = reads.reads
    assert isinstance(read, typed.Read) and read.step == 0 and read.query == QUESTION
    assert all(isinstance(s, typed.Source) for s in read.sources)
    assert {c.hash for c in cited.citations} <= {s.hash for s in read.sources}
    keys = {"n", "path", "page", "line_start", "line_end", "text", "share", "hash", "front_matter", "missing"}
    assert set(cited.citations[0].as_dict()) == keys
    with client.generate("Once upon", 4, 0.0, 1.0, None) as generation:
        kinds = [type(e) for e in generation]
    assert kinds[0] is typed.Start and kinds[-1] is typed.Done and typed.Reads not in kinds


# --- chats ------------------------------------------------------------------------------------------------


def ask(service: Running, question: str, chat_id: int | None = None) -> int:
    body = {"question": question, "mode": "none", "chat_id": chat_id}
    return list(service.events("/v1/answers", body))[-1]["chat_id"]


def test_chats_are_listed_newest_first_and_searched_literally_ignoring_case(service):
    wild = ask(service, "What does 50%_OFF mean on the Émile sign?")
    tame = ask(service, "What does 50 off mean?")  # what an unescaped LIKE '%50%_off%' would match too
    other = ask(service, "Where is the boat?")
    listed = service.http.get("/v1/chats").json()["chats"]
    assert [c["id"] for c in listed[:3]] == [other, tame, wild]
    first = listed[0]
    assert set(first) == {"id", "title", "created_at", "updated_at", "messages", "match"}
    assert first["messages"] == 2 and first["match"] is None and first["title"] == "Where is the boat?"
    with catalog(service) as db:
        last = db.execute("SELECT MAX(created_at) FROM messages WHERE chat_id = ?", (other,)).fetchone()[0]
    assert first["updated_at"] == last >= first["created_at"]

    def found(q: str) -> list[dict]:
        response = service.http.get("/v1/chats", params={"q": q})
        assert response.status_code == 200, response.text
        return response.json()["chats"]

    assert [c["id"] for c in found("50%_off")] == [wild]
    assert [c["id"] for c in found("émile")] == [wild]
    assert "50%_OFF" in found("50%_off")[0]["match"] and len(found("50%_off")[0]["match"]) <= 82
    assert found("no such words anywhere") == []
    assert {wild, tame} <= {c["id"] for c in found("50")}

    ask(service, "And the other boat?", chat_id=wild)  # going on with a chat makes it the newest
    assert service.http.get("/v1/chats", params={"limit": 1}).json()["chats"][0]["id"] == wild
    renamed = service.http.patch(f"/v1/chats/{tame}", json={"title": "Sale signs"})
    assert renamed.json() == {"id": tame, "title": "Sale signs"}
    [by_title] = found("SALE SIGN")
    assert by_title["id"] == tame and by_title["match"] is None  # the title matched, no message did
    for limit, code in ((0, 400), (1001, 400), ("many", 400), (1000, 200)):
        response = service.http.get("/v1/chats", params={"limit": limit})
        assert response.status_code == code, response.text


def test_a_chat_is_read_renamed_and_deleted(service):
    chat_id = ask(service, QUESTION)
    chat = service.http.get(f"/v1/chats/{chat_id}").json()
    assert set(chat) == {"id", "title", "created_at", "messages"} and chat["title"] == QUESTION
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    for message in chat["messages"]:
        keys = {"id", "role", "text", "mode", "citations", "reads", "stopped", "created_at", "withdrawn"}
        assert set(message) == keys
        assert isinstance(message["citations"], list) and isinstance(message["reads"], list)

    renamed = service.http.patch(f"/v1/chats/{chat_id}", json={"title": "  Door codes \n"})
    assert renamed.status_code == 200 and renamed.json() == {"id": chat_id, "title": "Door codes"}
    assert service.http.get(f"/v1/chats/{chat_id}").json()["title"] == "Door codes"
    refused = [
        (service.http.patch(f"/v1/chats/{chat_id}", json={"title": "  "}), 400, "empty"),
        (service.http.patch(f"/v1/chats/{chat_id}", json={"title": "x" * 201}), 400, "$.title"),
        (service.http.patch(f"/v1/chats/{chat_id}", json={"name": "x"}), 400, "name"),
        (service.http.patch("/v1/chats/99999", json={"title": "x"}), 404, "no chat 99999"),
        (service.http.get("/v1/chats/99999"), 404, "no chat 99999"),
        (service.http.delete("/v1/chats/99999"), 404, "no chat 99999"),
    ]
    for response, code, fragment in refused:
        assert response.status_code == code, response.text
        assert fragment in response.json()["error"], response.json()

    assert service.http.delete(f"/v1/chats/{chat_id}").status_code == 204
    assert service.http.get(f"/v1/chats/{chat_id}").status_code == 404
    with catalog(service) as db:
        assert db.execute("SELECT COUNT(*) FROM messages WHERE chat_id = ?", (chat_id,)).fetchone()[0] == 0
    assert service.http.delete(f"/v1/chats/{chat_id}").status_code == 404


DAMAGED = [
    ("citations", "{"),
    ("citations", '{"n": 1}'),
    ("citations", '[{"n": 1}]'),
    ("citations", "[null]"),
    ("citations", "[" * 100_000 + "]" * 100_000),
    ("reads", '[{"step": "x"}]'),
    ("reads", '[{"step": 0, "query": "\\ud800", "sources": []}]'),
    ("withdrawn", ""),
    ("withdrawn", "[]"),
    ("withdrawn", '{"text": "Tokyo"}'),
    ("withdrawn", '{"text": "Tokyo", "names": []}'),
    ("withdrawn", '{"text": "\\ud800", "names": ["Tokyo"]}'),
]


def test_a_damaged_part_of_a_saved_message_is_left_out_and_the_chat_read(service):
    """A hand-edited or damaged catalog: a part no client could read (not JSON, another shape, nested past
    any use, lone surrogates) is left out with a line in the log; the message and its chat are read."""
    chat_id = ask(service, QUESTION)
    empty = {"citations": [], "reads": [], "withdrawn": None}
    for column, saved in DAMAGED:
        with contextlib.closing(sqlite3.connect(service.home.catalog, timeout=30)) as db, db:
            db.execute(f"UPDATE messages SET {column} = ? WHERE chat_id = ?", (saved, chat_id))
        response = service.http.get(f"/v1/chats/{chat_id}")
        assert response.status_code == 200, (column, saved[:40], response.text)
        question, answer = response.json()["messages"]
        assert (question["text"], answer[column]) == (QUESTION, empty[column])
        with contextlib.closing(sqlite3.connect(service.home.catalog, timeout=30)) as db, db:
            db.execute(
                f"UPDATE messages SET {column} = ? WHERE chat_id = ?", (json.dumps(empty[column]), chat_id)
            )
    logged = service.home.log_file.read_text()
    assert logged.count("cannot be read") >= len(DAMAGED) * 2  # two messages each time
    assert service.http.delete(f"/v1/chats/{chat_id}").status_code == 204


def test_a_fault_inside_answers_500_in_one_sentence_and_the_connection_answers_on(service):
    """A message whose text is bytes (a hand-edited catalog) fails reading its chat: one sentence, the
    traceback in the log, and the next request on the same connection is answered."""
    chat_id = ask(service, QUESTION)
    with contextlib.closing(sqlite3.connect(service.home.catalog, timeout=30)) as db, db:
        db.execute("UPDATE messages SET text = X'ff' WHERE chat_id = ?", (chat_id,))
    broken = service.http.get(f"/v1/chats/{chat_id}")
    assert broken.status_code == 500 and broken.json() == {
        "error": f"Something went wrong inside memory3; the details are in {service.home.log_file}."
    }
    assert service.http.get("/v1/health").status_code == 200
    logged = service.home.log_file.read_text()
    assert f"GET /v1/chats/{chat_id} failed" in logged and "Traceback" in logged
    assert service.http.delete(f"/v1/chats/{chat_id}").status_code == 204


def test_the_client_lists_reads_renames_and_deletes_chats(service, client):
    chat_id = ask(service, "Which hook holds the key of door 3?")
    [summary] = [c for c in client.chats(q="HOOK HOLDS") if c.id == chat_id]
    assert isinstance(summary, typed.ChatSummary) and summary.messages == 2 and "hook holds" in summary.match
    chat = client.chat(chat_id)
    assert isinstance(chat.messages[1], typed.Message) and chat.messages[1].reads == []  # mode none
    assert client.rename_chat(chat_id, "Hooks") == typed.ChatTitle(chat_id, "Hooks")
    client.delete_chat(chat_id)
    with pytest.raises(typed.ServiceError) as refused:
        client.chat(chat_id)
    assert refused.value.status == 404 and str(refused.value) == f"There is no chat {chat_id}."


@pytest.fixture(scope="module")
def endless(roots, tmp_path_factory) -> Iterator[Running]:
    """A service whose answers run until they are stopped (greedy decoding with this tiny model repeats a
    whitespace control character, which neither ends an answer nor counts as a loop)."""
    folder = tmp_path_factory.mktemp("endless")
    model = write_tiny_gguf(folder / "endless.gguf", "gemma3", seed=3, out_gain=1.0, context_length=1 << 17)
    running = Running(
        roots("[engine]\nmax_answer_tokens = 100000\n"), "--model", str(model), "--device", "cpu"
    )
    try:
        yield running.wait_ready()
    finally:
        running.stop()


@pytest.mark.parametrize("new_chat", [True, False])
def test_a_chat_with_an_answer_running_is_not_deleted(endless, new_chat):
    chat_id = None if new_chat else ask_stopped(endless)
    events = endless.events(
        "/v1/answers", {"question": "Tell me everything.", "mode": "none", "chat_id": chat_id}
    )
    start = next(events)
    assert next(events)["type"] == "text"  # it runs
    refused = endless.http.delete(f"/v1/chats/{start['chat_id']}")
    assert refused.status_code == 409
    assert refused.json() == {"error": "An answer in this chat is still running; stop it first."}
    assert endless.http.delete(f"/v1/answers/{start['id']}").status_code == 204
    assert list(events)[-1]["stopped"] is True
    assert endless.http.delete(f"/v1/chats/{start['chat_id']}").status_code == 204


def ask_stopped(service: Running) -> int:
    """A chat holding one answer, stopped after its first piece."""
    events = service.events("/v1/answers", {"question": "Begin.", "mode": "none"})
    start = next(events)
    assert service.http.delete(f"/v1/answers/{start['id']}").status_code == 204
    list(events)
    return start["chat_id"]


# --- folders, failed files, passages ----------------------------------------------------------------------


def test_folders_come_with_their_counts(service, docs, tmp_path, client):
    shared = corpus(tmp_path / "shared", files=1)
    shutil.copy(docs / "note-00.md", shared / "copy.md")  # one text in two folders: one memory, counted twice
    added = service.http.post("/v1/folders", json={"path": str(shared)})
    assert set(added.json()) == {"id", "path"}
    wait_for(lambda: {f.path: f.documents for f in client.folders()}[str(shared)] == 2)
    wait_for(lambda: service.status()["background"] == "idle")
    folders = service.http.get("/v1/folders").json()["folders"]
    assert [f["path"] for f in folders] == sorted([str(docs), str(shared)])
    with catalog(service) as db:
        for folder in folders:
            assert set(folder) == {
                "id",
                "path",
                "documents",
                "chunks",
                "memories",
                "memories_pending",
                "failed",
                "kind",
            }
            assert folder["kind"] == "watched"
            docs_of = db.execute(
                "SELECT id, status FROM documents WHERE folder_id = ?", (folder["id"],)
            ).fetchall()
            hashes: list[str] = []
            for doc in docs_of:
                hashes += [
                    r[0] for r in db.execute("SELECT hash FROM chunks WHERE document_id = ?", (doc["id"],))
                ]
            written = {
                h
                for h in set(hashes)
                if db.execute("SELECT written FROM memory_work WHERE hash = ?", (h,)).fetchone()[0]
            }
            assert folder["documents"] == len(docs_of) > 0
            assert folder["failed"] == sum(d["status"] == "failed" for d in docs_of)
            assert folder["chunks"] == len(hashes) > 0
            assert folder["memories"] == len(written) and folder["memories_pending"] == len(
                set(hashes) - written
            )
    by_path = {f.path: f for f in client.folders()}
    assert by_path[str(docs)].failed == 1 and by_path[str(shared)].failed == 0
    assert by_path[str(shared)].memories_pending == by_path[str(docs)].memories_pending == 0  # idle
    # one text in two folders is one memory, counted in each: the copy's and the notes' common lines
    assert sum(f.memories for f in by_path.values()) > client.bank_stats()["memories"]
    assert client.remove_folder(shared) == typed.Folder(added.json()["id"], str(shared))


def test_a_failed_file_is_parsed_again_when_asked(service, docs, client):
    broken = docs / "broken.txt"
    [failure] = [f for f in service.status()["failures"] if f["path"] == str(broken)]
    assert failure["reason"] == "binary content" and Path(failure["path"]).is_absolute()
    # Fixed in place, and unchanged to a scan (same size and mtime): only a retry reads it again.
    stat = broken.stat()
    broken.write_text(RETRIED)
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert broken.stat().st_size == stat.st_size
    service.scan()
    assert str(broken) in {f["path"] for f in service.status()["failures"]}

    retried = service.http.post("/v1/documents/retry", json={"path": str(broken)})
    assert retried.status_code == 202 and retried.json() == {"path": str(broken)}
    assert not service.status()["failures"]  # pending now
    wait_for(lambda: len(chunks_of(service, broken)) > 0)
    assert [c["text"] for c in chunks_of(service, broken)] == [RETRIED] and not service.status()["failures"]
    refused = [
        (service.http.post("/v1/documents/retry", json={"path": str(broken)}), 404, "failed"),  # parsed now
        (service.http.post("/v1/documents/retry", json={"path": str(docs / "nope.txt")}), 404, "nope.txt"),
        (service.http.post("/v1/documents/retry", json={"path": "broken.txt"}), 400, "$.path"),
    ]
    for response, code, fragment in refused:
        assert response.status_code == code, response.text
        assert fragment in response.json()["error"], response.json()
    with pytest.raises(typed.ServiceError) as missing:
        client.retry(broken)
    assert missing.value.status == 404


def chunks_of(service: Running, path: Path) -> list[sqlite3.Row]:
    with catalog(service) as db:
        return db.execute(
            "SELECT c.* FROM chunks c JOIN documents d ON d.id = c.document_id JOIN folders f"
            " ON f.id = d.folder_id WHERE f.path || '/' || d.rel_path = ? ORDER BY c.ord",
            (str(path),),
        ).fetchall()


def test_a_passage_comes_with_its_neighbours_in_order(service, docs, client):
    long = docs / "long.md"
    chunks = chunks_of(service, long)
    assert len(chunks) >= 7
    middle = chunks[3]
    got = service.http.get(f"/v1/passages/{middle['hash']}").json()
    assert set(got) == {"hash", "path", "page", "line_start", "line_end", "text", "before", "after"}
    assert got["hash"] == middle["hash"] and got["path"] == str(long) and got["text"] == middle["text"]
    assert (got["line_start"], got["line_end"], got["page"]) == (
        middle["line_start"],
        middle["line_end"],
        None,
    )
    assert [p["text"] for p in got["before"]] == [c["text"] for c in chunks[1:3]]
    assert [p["text"] for p in got["after"]] == [c["text"] for c in chunks[4:6]]
    assert [p["line_start"] for p in got["before"] + got["after"]] == [
        c["line_start"] for c in chunks[1:3] + chunks[4:6]
    ]
    joined = (
        "".join(p["text"] for p in got["before"]) + got["text"] + "".join(p["text"] for p in got["after"])
    )
    assert joined in long.read_text()  # continuous text: neighbours do not overlap

    first = client.passage(chunks[0]["hash"], context=10)
    assert first.before == [] and [p.text for p in first.after] == [c["text"] for c in chunks[1:11]]
    assert service.http.get(f"/v1/passages/{middle['hash']}", params={"context": 0}).json()["after"] == []
    refused = [
        (service.http.get("/v1/passages/" + "0" * 64), 404, "no longer in your documents"),
        (service.http.get(f"/v1/passages/{middle['hash']}", params={"context": 11}), 400, "$.context"),
        (
            service.http.get(f"/v1/passages/{middle['hash']}", params={"path": str(docs / "x.md")}),
            404,
            "x.md",
        ),
    ]
    for response, code, fragment in refused:
        assert response.status_code == code, response.text
        assert fragment in response.json()["error"], response.json()


def test_a_passage_several_documents_hold_is_taken_from_the_path_asked(service, docs, tmp_path):
    twin = docs / "zz-twin.md"
    shutil.copy(docs / "note-01.md", twin)
    wait_for(lambda: len(chunks_of(service, twin)) > 0)
    chunk = chunks_of(service, twin)[1]
    default = service.http.get(f"/v1/passages/{chunk['hash']}").json()
    assert default["path"] == str(docs / "note-01.md")  # the first source, as citations name it
    chosen = service.http.get(f"/v1/passages/{chunk['hash']}", params={"path": str(twin)}).json()
    assert chosen["path"] == str(twin) and chosen["text"] == default["text"]
    twin.unlink()
    wait_for(lambda: not chunks_of(service, twin))
