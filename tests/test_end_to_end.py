"""The assistant end to end on a real folder: ingest, ask, edit, delete — in memory and RAG modes."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from engine import Engine
from engine.errors import RetrievalError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "sample"
VAULT = (
    "# Security notes\n\nThe kitchen door sticks in winter.\n\n"
    "The access code for the blue vault is {code}.\n"
)
QUESTION = "What is the access code for the blue vault?"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(ASSETS, root / "sample")
    (root / "vault.md").write_text(VAULT.format(code="7391-QX"))
    return root


@pytest.fixture(scope="module")
def engine(rt, folder, tmp_path_factory) -> Engine:
    engine = Engine.open(tmp_path_factory.mktemp("e2e-home"), runtime=rt)
    engine.add_folder(folder)
    engine.scan()
    assert engine.sync_memories() > 0
    return engine


def ask(engine: Engine, mode: str):
    answer = engine.ask(QUESTION, mode)
    streamed = "".join(answer)
    first = answer.withdrawn.text if answer.withdrawn else ""  # a memory answer read again as text
    assert streamed.split() == f"{first} {answer.text}".split()
    return answer


@pytest.mark.parametrize("mode", ["memory", "rag"])
def test_answer_and_top_citation_come_from_the_file(engine, folder, mode):
    answer = ask(engine, mode)
    assert "7391" in answer.text
    top = answer.citations[0]
    assert Path(top.path) == folder / "vault.md"
    assert top.line_start <= 5 <= top.line_end  # the fact is on line 5
    assert "7391-QX" in top.text
    assert sum(c.share for c in answer.citations) == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["memory", "rag"])
def test_the_sources_support_an_answer_only_they_hold(engine, mode):
    """Chat.support: the vault's code is far likelier with the file read than without it; an answer the
    model knows by itself (France's capital) owes the sources nothing."""
    assert engine.chat.support(ask(engine, mode)) > 1.0
    known = engine.chat.ask("What is the capital of France?", mode, 8)
    assert "Paris" in "".join(known)
    assert engine.chat.support(known) < 0.5


def test_a_memory_answer_naming_what_no_source_says_is_answered_again_from_text(engine, monkeypatch):
    """Japan's capital is in none of the files: the memory answer names it from the model's own prior, so
    it is withdrawn and the same sources read as text give the answer (rag mode's own); the pieces stream
    both, the answer's text is the second. With `reread` off the memory answer stays."""
    question = "What is the capital of Japan?"
    answer = engine.ask(question, "memory")
    streamed = "".join(answer).strip()
    withdrawn = answer.withdrawn
    assert withdrawn is not None and "Tokyo" in withdrawn.names, answer.text
    sources = " ".join(c.text for r in answer.reads for c in r.chunks).casefold()
    assert all(name in withdrawn.text and name.casefold() not in sources for name in withdrawn.names)
    assert streamed.startswith(withdrawn.text) and streamed.endswith(answer.text)
    rag = engine.ask(question, "rag")
    assert answer.text == "".join(rag).strip() and answer.citations == rag.citations
    memory_reads, reread = answer.reads[:-1], answer.reads[-1]
    assert memory_reads and reread.step == 0 and reread.query == question
    assert [c.hash for c in reread.chunks] == [c.hash for c in rag.reads[0].chunks]
    assert answer.tokens > rag.tokens and rag.withdrawn is None
    saved = engine.chats.messages(answer.chat_id)[-1]  # kept with the chat, as the stream told it
    assert saved.text == answer.text  # the saved JSON: the service reads it (routes_chats.py)
    assert json.loads(saved.withdrawn) == {"text": withdrawn.text, "names": withdrawn.names}
    assert engine.chats.messages(rag.chat_id)[-1].withdrawn is None

    monkeypatch.setattr(engine.chat, "reread", False)
    kept = engine.ask(question, "memory")
    assert "".join(kept).strip() == kept.text == withdrawn.text and kept.withdrawn is None


def test_a_reread_stopped_before_its_first_word_leaves_the_memory_answer(engine):
    """The withdrawal is told at once (an empty piece); a stop right then ends the re-read before it says
    anything, and the answer given, saved stopped, is the memory's."""
    cancel = threading.Event()
    answer = engine.ask("What is the capital of Japan?", "memory", cancel=cancel)
    pieces = []
    for piece in answer:
        pieces.append(piece)
        if answer.withdrawn is not None:
            cancel.set()
    assert answer.withdrawn is not None and pieces[-1] == "" and answer.stopped
    assert answer.text == answer.withdrawn.text == "".join(pieces).strip() and answer.citations
    saved = engine.chats.messages(answer.chat_id)[-1]
    assert (saved.text, saved.stopped) == (answer.text, True)
    assert json.loads(saved.withdrawn)["text"] == answer.text


def test_a_memory_answer_its_sources_hold_is_kept(engine):
    answer = ask(engine, "memory")
    assert "7391" in answer.text and answer.withdrawn is None


def test_without_documents_the_model_does_not_know(engine):
    answer = ask(engine, "none")
    assert "7391" not in answer.text and answer.citations == []


def test_chat_is_saved_with_its_citations(engine):
    answer = ask(engine, "memory")
    messages = engine.chats.messages(answer.chat_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].text == answer.text
    citations, reads = json.loads(messages[1].citations), json.loads(messages[1].reads)
    assert citations[0]["path"] == answer.citations[0].path
    assert citations[0]["hash"] == answer.citations[0].hash
    assert reads == [r.as_dict() for r in answer.reads] and answer.reads


def test_an_answer_that_fails_while_streaming_is_saved_as_far_as_it_went(engine, monkeypatch):
    """The question is never left without a reply: a retrieval that fails (the index damaged) ends the
    answer with its error, and the chat keeps the reply as far as it went, marked stopped."""

    def damaged(query: str) -> list:
        raise RetrievalError("The retrieval database is damaged.")

    answer = engine.ask(QUESTION, "rag")
    monkeypatch.setattr(engine.chat, "_search", damaged)
    with pytest.raises(RetrievalError, match="damaged"):
        "".join(answer)
    user, reply = engine.chats.messages(answer.chat_id)
    assert (user.role, user.text, reply.role, reply.text) == ("user", QUESTION, "assistant", "")
    assert reply.stopped and json.loads(reply.citations) == [] and answer.stopped
    with pytest.raises(RuntimeError, match="once it has been streamed"):
        engine.chat.ask(QUESTION, "rag").logprob("7391-QX")


def test_an_edit_changes_the_answer_and_a_deletion_removes_the_source(engine, folder):
    (folder / "vault.md").write_text(VAULT.format(code="4420-ZK"))
    engine.scan()
    engine.sync_memories()
    for mode in ("memory", "rag"):
        answer = ask(engine, mode)
        assert "4420" in answer.text and "7391" not in answer.text, mode
        assert folder / "vault.md" in {Path(c.path) for c in answer.citations[:3]}
    (folder / "vault.md").unlink()
    engine.scan()
    engine.sync_memories()
    answer = ask(engine, "memory")
    assert all(Path(c.path) != folder / "vault.md" for c in answer.citations)
    assert "4420" not in answer.text


def test_memory_work_waits_for_the_answer_in_progress_but_no_work_does_not(engine, folder):
    """The watch calls sync_memories between batches: with nothing to write it must come back during an
    answer (so the watcher is read meanwhile); with work, it writes once the answer ends."""
    stop = threading.Event()
    with engine.turns.answer():
        idle = threading.Thread(target=engine.sync_memories, kwargs={"stop": stop})
        idle.start()
        idle.join(timeout=30)
        assert not idle.is_alive(), "with no memory work it waited for the answer to end"
        (folder / "parking.md").write_text("# Parking\n\nThe bicycle shed key hangs by the boiler.\n")
        engine.scan()
        written: list[int] = []
        work = threading.Thread(target=lambda: written.append(engine.sync_memories(stop=stop)))
        work.start()
        work.join(timeout=1)
        assert work.is_alive() and not written, "memory work went ahead during an answer"
    work.join(timeout=60)
    stop.set()
    assert written and written[0] > 0
    (folder / "parking.md").unlink()
    engine.scan()
    engine.sync_memories()


def test_an_answer_retrieves_when_it_streams_not_when_it_is_asked(engine, folder):
    """The service asks, then streams inside the answer's turn: a chunk written in between (the background
    work that held the turn) is read, in rag mode as in memory mode."""
    boat = folder / "boat.md"
    for mode in ("rag", "memory"):
        answer = engine.ask("What is the name of the green rowing boat?", mode)
        boat.write_text("# Boats\n\nThe green rowing boat is named Kestrel.\n")
        engine.scan()
        engine.sync_memories()
        "".join(answer)
        assert boat in {Path(c.path) for c in answer.citations}, mode
        assert any("Kestrel" in c.text for r in answer.reads for c in r.chunks), mode
        boat.unlink()
        engine.scan()
        engine.sync_memories()


def test_an_answer_reads_only_the_passages_naming_what_it_asks_about(engine, folder):
    """Four look-alike notes (a bridge and its year each): the question names one bridge, so the answer
    reads that note alone and gives its year, where with all five chunks in front of it the 270M model
    often gives another bridge's (README "Knowledge editing")."""
    years = {"Griadipou": 1696, "Thehis": 1754, "Quezaim": 1822, "Belothwick": 1903}
    notes = folder / "bridges"
    notes.mkdir()
    for name, year in years.items():
        (notes / f"{name}.md").write_text(f"The {name} Bridge crosses the river Aldwen. It opened in {year}.")
    engine.scan()
    engine.sync_memories()
    for mode in ("rag", "memory"):
        answer = engine.ask("In what year was the Thehis Bridge opened?", mode)
        "".join(answer)
        assert [Path(c.path).name for c in answer.reads[0].chunks] == ["Thehis.md"], mode
        assert "1754" in answer.text, (mode, answer.text)
    shutil.rmtree(notes)
    engine.scan()
    engine.sync_memories()


def test_a_profile_change_writes_the_memories_again_under_the_new_profile(rt, roots, tmp_path):
    """A key stored under another profile counts as missing: reopened with `[engine] profile` changed, the
    engine drops those memories (the bank compacted), queues them, and writes them again under the new one;
    answers still read the vault."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "vault.md").write_text(VAULT.format(code="7391-QX"))
    root = roots("[engine]\nprofile = 'dense'\n")
    config = root / "config" / "config.toml"
    engine = Engine.open(root, runtime=rt)
    engine.add_folder(tmp_path / "docs")
    engine.scan()
    written = engine.sync_memories()
    keys = engine.bank.keys()
    assert written == len(keys) > 0 and engine.bank.keys("dense") == keys
    engine.close()

    config.write_text("[engine]\nprofile = 'dense-int4'\n")
    engine = Engine.open(root, runtime=rt)
    assert engine.bank.keys() == []
    stats = engine.bank.stats()
    assert stats["file_bytes"] == stats["live_bytes"] == 0  # compacted, not left dead on disk
    assert engine.catalog.counts()["memories_to_write"] == len(keys)
    assert engine.sync_memories() == len(keys)
    assert engine.bank.keys("dense-int4") == keys and set(engine.bank.stats()["by_profile"]) == {"dense-int4"}
    assert "7391" in ask(engine, "memory").text
    engine.close()


def test_a_source_whose_file_is_gone_is_cited_missing_unless_a_copy_is_there(rt, roots, tmp_path):
    """A watched folder renamed (or unplugged) keeps its documents; their citations say `missing`, and a
    copy of the same text in another watched folder is cited in their place."""
    docs, copy = tmp_path / "docs", tmp_path / "copy"
    for folder in (docs, copy):
        folder.mkdir()
        (folder / "vault.md").write_text(VAULT.format(code="7391-QX"))
    engine = Engine.open(roots(), runtime=rt)
    engine.add_folder(docs)
    engine.scan()
    engine.sync_memories()
    top = engine.sources.search(QUESTION, 3)[0]
    assert (Path(top.path), top.missing) == (docs / "vault.md", False)
    docs.rename(tmp_path / "renamed")
    top = engine.sources.search(QUESTION, 3)[0]
    assert (Path(top.path), top.missing) == (docs / "vault.md", True)
    engine.add_folder(copy)
    engine.scan()
    top = engine.sources.search(QUESTION, 3)[0]
    assert (Path(top.path), top.missing) == (copy / "vault.md", False)
    engine.close()
