"""The app's flows, driven by keys against a real engine service and the bundled model (Textual's pilot).

One service (the default model) serves a folder of notes for the module; the flows a user goes through —
ask, read the sources, open a passage, stop an answer, switch modes and compare, manage and export chats —
run on it at 80×24 and 120×40. A second home with the tiny model covers the engine starting, failing and
going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_pilot import notices, service_home, text, until

from assistant import actions
from assistant.app import M3App
from assistant.messages import AnswerPiece
from assistant.screens.chat import ChatScreen
from assistant.screens.chats import ChatsScreen
from assistant.screens.dialogs import ConfirmScreen, PromptScreen
from assistant.screens.help import HelpScreen
from assistant.screens.passage import PassageScreen
from assistant.screens.problem import ProblemScreen
from assistant.screens.reads import ReadsScreen
from assistant.settings import Settings
from assistant.widgets.answer import AnswerView, Turn
from assistant.widgets.sources import SourcesPanel
from bench.tiny_gguf import write_tiny_gguf
from engine.service import client as service
from engine.service.client import Client, ScanDone
from ingest.errors import ConfigError
from ingest.paths import Home

NOTES = {
    "lighthouse.md": "# The lighthouse\n\nThe Varnholm lighthouse was built in 1871 by Ida Kessler.\n"
    "Its lamp burned whale oil until 1903.\n",
    "garden.md": "# Garden log\n\nThe quince tree was planted on 4 May.\nThe pond holds eleven goldfish.\n",
}
QUESTION = "Who built the Varnholm lighthouse?"


@pytest.fixture(scope="module")
def served(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, Client, Path]]:
    """A service with the bundled model, its memories of NOTES written."""
    notes = tmp_path_factory.mktemp("notes")
    for name, body in NOTES.items():
        (notes / name).write_text(body)
    with service_home(home.cache) as m3:
        client = service.connect_or_start(m3)
        client.add_folder(notes)
        with client.scan(notes) as stream:
            assert isinstance(list(stream)[-1], ScanDone)
        yield m3, client, notes
        client.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "gemma3")


def run(scenario, *args) -> None:
    asyncio.run(scenario(*args))


async def ask(pilot, app: M3App, question: str) -> AnswerView:
    """Type a question as a user does and wait for its answer to end."""
    await pilot.press(*question, "enter")
    await until(pilot, lambda: any(v.question == question for v in app.screen.query(AnswerView)))
    view = [v for v in app.screen.query(AnswerView) if v.question == question][-1]
    await until(pilot, lambda: not view.running)
    return view


# --- with the bundled model ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_ask_see_citations_and_open_the_passage(served, size):
    run(citation_scenario, served, size)


async def citation_scenario(served, size) -> None:
    m3, client, notes = served
    app = M3App(m3)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        assert "offline: nothing leaves this machine" in text(app)  # the first frame, before the engine
        await until(pilot, lambda: app.ready and app.latest is not None)
        assert "● ready" in text(app) and "memories" in text(app)
        view = await ask(pilot, app, QUESTION)
        assert view.error is None and view.text and not view.stopped
        assert view.citations and {Path(c.path).name for c in view.citations} <= set(NOTES)
        assert "[1]" in text(app)
        panel = app.screen.query_one(SourcesPanel)
        assert panel.citations == view.citations
        await pilot.press("ctrl+s", "enter")
        assert isinstance(app.screen, PassageScreen)
        cited = view.citations[0]
        await until(pilot, lambda: app.screen.passage is not None, 30)
        assert app.screen.passage.text == cited.text and app.screen.passage.path == cited.path
        assert " ".join(cited.text.split()[:3]) in text(app)  # shown
        await pilot.press("escape")
        await pilot.press("ctrl+g")
        assert isinstance(app.screen, ReadsScreen)
        assert "What the model read" in text(app) and "0" in text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)


def test_escape_stops_the_answer_and_it_is_saved_stopped(served):
    run(stop_scenario, served)


async def stop_scenario(served) -> None:
    m3, client, notes = served
    app = M3App(m3)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        question = "Count from one to three hundred: 1, 2, 3, 4, 5,"
        await pilot.press(*question, "enter")
        await until(
            pilot, lambda: bool(app.screen.query(AnswerView)) and bool(app.screen.query_one(AnswerView).text)
        )
        view = app.screen.query_one(AnswerView)
        await pilot.press("escape")
        await until(pilot, lambda: not view.running, 60)
        assert view.stopped and "stopped" in text(app)
        saved = client.chat(app.screen.chat_id).messages
        assert saved[-1].role == "assistant" and saved[-1].stopped and saved[-1].text == view.text


def test_a_withdrawn_memory_answer_is_replaced_by_its_reading_as_text(served):
    run(withdrawn_scenario, served)


async def withdrawn_scenario(served) -> None:
    """Japan's capital is in neither note: the memory answer names it from the model's prior, is taken
    back, and the answer read from text takes its place; the header says why."""
    m3, client, notes = served
    app = M3App(m3)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        view = await ask(pilot, app, "What is the capital of Japan?")
        assert view.error is None and "Tokyo" in view.withdrawn, view.withdrawn
        assert "read again as text" in text(app) and "in none of its sources" in text(app)
        chat = app.screen
        saved = client.chat(chat.chat_id).messages
        assert saved[-1].role == "assistant" and saved[-1].text == view.text
        assert saved[-1].withdrawn is not None and saved[-1].withdrawn.names == view.withdrawn
        await pilot.press("ctrl+n")  # opened again later, the answer says so as it did live
        assert "read again as text" not in text(app)
        await pilot.press("ctrl+l")
        await until(pilot, lambda: "capital of Japan" in text(app), 30)
        await pilot.press("enter")
        await until(pilot, lambda: len(chat.query(AnswerView)) == 1, 30)
        assert chat.query_one(AnswerView).withdrawn == view.withdrawn and "read again as text" in text(app)
        with contextlib.closing(sqlite3.connect(m3.catalog, timeout=30)) as db, db:  # as if its re-read
            stopped = (saved[-1].withdrawn.text, saved[-1].id)  # had been stopped before its first word
            db.execute("UPDATE messages SET text = ?, stopped = 1 WHERE id = ?", stopped)
        await pilot.press("ctrl+n", "ctrl+l")
        await until(pilot, lambda: "capital of Japan" in text(app), 30)
        await pilot.press("enter")
        await until(pilot, lambda: "stopped before its re-read as text" in text(app), 30)
        reopened = chat.query_one(AnswerView)
        assert reopened.reread_stopped and reopened.text == saved[-1].withdrawn.text
        assert "withdrawn: it named" in text(app) and "read again as text" not in text(app)


def test_switch_mode_compare_reopen_and_export(served, tmp_path):
    run(compare_scenario, served, tmp_path)


async def compare_scenario(served, tmp_path: Path) -> None:
    m3, client, notes = served
    app = M3App(m3)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        chat = app.screen
        await pilot.press("ctrl+t")
        assert chat.mode == "rag" and "rag" in text(app)
        first = await ask(pilot, app, QUESTION)
        assert first.mode == "rag" and first.citations
        await pilot.press("ctrl+b")  # the same question in the next mode, beside the first answer
        turn = chat.query_one(Turn)
        await until(pilot, lambda: len(turn.answers) == 2 and not turn.answers[1].running)
        assert [v.mode for v in turn.answers] == ["rag", "none"] and turn.answers[1].citations == []
        chat_id = chat.chat_id

        await pilot.press("ctrl+n")
        assert chat.chat_id is None and not chat.query(Turn)
        await pilot.press("ctrl+l")
        assert isinstance(app.screen, ChatsScreen)
        await pilot.press(*"varnholm")  # searched case-insensitively in the messages
        await until(pilot, lambda: "Varnholm" in text(app) and "No chat" not in text(app), 30)
        await pilot.press("enter")
        await until(pilot, lambda: chat.chat_id == chat_id and len(chat.query(AnswerView)) == 2, 30)
        assert len(chat.query(Turn)) == 1  # the comparison is shown as one turn again

        await pilot.press("ctrl+r")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = "Lighthouse questions"
        await pilot.press("enter")
        await until(pilot, lambda: chat.title_text == "Lighthouse questions", 30)
        assert client.chat(chat_id).title == "Lighthouse questions"

        target = tmp_path / "chat.md"
        await pilot.press("ctrl+o")
        app.screen.query_one("Input").value = str(target)
        await pilot.press("enter")
        await until(pilot, target.exists, 30)
        markdown = target.read_text()
        assert markdown.startswith("# Lighthouse questions") and f"**You:** {QUESTION}" in markdown
        cited = first.citations[0]
        assert f"[^1]: {cited.path}:{cited.line_start}" in markdown and "(none)" in markdown

        await pilot.press("f8")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: chat.chat_id is None, 30)
        assert chat_id not in [c.id for c in client.chats()]


def test_help_and_palette_offer_every_action(served):
    run(help_scenario, served)


async def help_scenario(served) -> None:
    m3, _, _ = served
    app = M3App(m3, keymap={"reads": "f9"})
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen._table()
        keys, ids = list(table.columns[0].cells), list(table.columns[1].cells)
        assert sorted(i for i in ids if i) == sorted(a.id for a in actions.ACTIONS)
        assert keys[ids.index("reads")] == "f9"  # as the keymap has it
        await pilot.press("escape")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        chat_scopes = {actions.APP, actions.CHAT, actions.SOURCES}
        assert {a.title for a in actions.ACTIONS if a.scope in chat_scopes} <= titles
        await until(pilot, lambda: app.ready)
        await ask(pilot, app, QUESTION)
        await pilot.press("f9")  # rebound in the keymap
        assert isinstance(app.screen, ReadsScreen)


# --- keymap -------------------------------------------------------------------------------------------


def test_keymap_in_config_is_checked_with_one_sentence(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[keys]\nnew_chat = "ctrl+x"\nhelp = "f9"\n')
    with pytest.raises(ConfigError, match="text box's key for cut"):
        actions.load_keymap(config)
    for table, words in [
        ('nope = "a"', "has no action 'nope'"),
        ('help = "ctrl+"', "is not a key"),
        ("help = 3", "must be a key"),
        ('new_chat = "ctrl+l"', "new_chat and chats would both be 'ctrl+l'"),
        ('help = "ctrl+q"', "help and quit would both be 'ctrl+q'"),
        ('bank = "b"', "'b' would type into the question box"),
        ('passage = "ctrl+n"', "new_chat and passage would both be 'ctrl+n'"),
        ('help = "space"', "'space' would type into the question box"),
    ]:
        config.write_text(f"[keys]\n{table}\n")
        with pytest.raises(ConfigError, match=re.escape(words)):
            actions.load_keymap(config)
    config.write_text('[keys]\nhelp = "f9"\nnew_chat = "ctrl+f"\n')
    assert actions.load_keymap(config) == {"help": "f9", "new_chat": "ctrl+f"}
    assert actions.load_keymap(tmp_path / "none.toml") == {}


# --- the engine starting, failing, going away (tiny model) ----------------------------------------------


def test_a_question_typed_while_the_engine_loads_is_answered(home, tiny):
    with service_home(home.cache) as m3:
        run(queued_scenario, M3App(m3, str(tiny), "cpu"))


async def queued_scenario(app: M3App) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*"hello there", "enter")
        view = app.screen.query_one(AnswerView)
        assert not app.ready and "waiting for the engine" in text(app)
        await until(pilot, lambda: not view.running)
        assert app.ready and view.error is None and view.answer_id is not None


def test_a_missing_model_is_a_screen_with_a_retry(home, tmp_path):
    with service_home(home.cache) as m3:
        run(missing_scenario, M3App(m3, str(tmp_path / "gone.gguf"), "cpu"))


async def missing_scenario(app: M3App) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ProblemScreen), 60)
        assert "Model file not found" in app.screen.sentence and "gone.gguf" in app.screen.sentence
        assert "Model file not found" in text(app) and "r tries again" in text(app)
        assert "Traceback" not in text(app)
        first = app.screen
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ProblemScreen) and app.screen is not first, 60)
        assert "gone.gguf" in app.screen.sentence


def test_an_engine_that_goes_away_is_a_screen_and_comes_back(home, tiny):
    with service_home(home.cache) as m3:
        run(gone_scenario, M3App(m3, str(tiny), "cpu"), m3)


async def gone_scenario(app: M3App, m3: Home) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.ready)
        await asyncio.to_thread(service.stop, m3)
        await until(pilot, lambda: isinstance(app.screen, ProblemScreen), 30)
        assert "Traceback" not in text(app)
        await pilot.press("r")
        await until(pilot, lambda: app.ready and not isinstance(app.screen, ProblemScreen), 120)
        assert not [n for n in notices(app) if "error" in n.lower()]


def test_the_theme_in_config_is_checked_and_used(tmp_path, served):
    config = tmp_path / "config.toml"
    config.write_text('[app]\ntheme = "no-such-theme"\n')
    with pytest.raises(ConfigError, match=r"\[app\] theme 'no-such-theme' is not a Textual theme"):
        Settings.load(config)
    config.write_text('[app]\ntheme = "ansi-dark"\n[keys]\nhelp = "f9"\n')
    settings = Settings.load(config)
    assert settings == Settings("ansi-dark", {"help": "f9"})
    run(theme_scenario, M3App(served[0], keymap=settings.keymap, theme=settings.theme))


async def theme_scenario(app: M3App) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "ansi-dark"
        await pilot.press("f9")
        assert isinstance(app.screen, HelpScreen)


def test_the_transcript_follows_a_stream_only_while_at_the_bottom(served):
    run(follow_scenario, M3App(served[0]))


async def follow_scenario(app: M3App) -> None:
    """Pieces of a long answer go to its view as the engine's stream would send them."""
    async with app.run_test(size=(80, 24)) as pilot:
        chat = app.screen
        transcript = chat.query_one("#transcript")
        view = AnswerView("a long one", "memory", pending=True)
        await transcript.mount(Turn("a long one", [view]))

        async def stream(lines: range) -> None:
            for i in lines:
                view.post_message(AnswerPiece(f"line {i}\n\n"))
                await pilot.pause()

        await stream(range(40))
        await until(
            pilot, lambda: transcript.max_scroll_y > 10 and transcript.scroll_y == transcript.max_scroll_y
        )
        transcript.scroll_home(animate=False)  # the user scrolls up to read
        await pilot.pause()
        await stream(range(40, 80))
        await pilot.pause(0.3)
        assert transcript.scroll_y == 0 and transcript.max_scroll_y > 40
        transcript.scroll_end(animate=False)  # back at the bottom: following again
        await pilot.pause()
        await stream(range(80, 100))
        await until(pilot, lambda: transcript.scroll_y == transcript.max_scroll_y, 10)
        assert "line 99" in view.text


def test_what_broke_it_once(served, tmp_path, monkeypatch):
    """Found by trying the app as a hostile user: each of these crashed, froze or misled it."""
    monkeypatch.setenv("EDITOR", "/nonexistent/editor")
    run(hostile_scenario, served, tmp_path)


async def hostile_scenario(served, tmp_path: Path) -> None:
    m3, client, _ = served
    app = M3App(m3)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        chat = app.screen
        # a new chat right after a question: the answer goes on in its own chat, off screen
        await pilot.press(*"[link=file:///etc/passwd]a[/link] who built it?", "enter", "ctrl+n")
        await until(pilot, lambda: not app.answering and not chat.query(AnswerView), 120)
        await pilot.pause(1.0)
        saved = [c for c in client.chats() if c.title.startswith("[link=")]
        assert saved and client.chat(saved[0].id).messages[-1].role == "assistant"

        view = await ask(pilot, app, QUESTION)
        # an editor that is no program: one notice, and the app keeps the terminal
        await pilot.press("ctrl+s", "o")
        await until(pilot, lambda: any("is no program here" in n for n in notices(app)), 10)
        assert app.is_running and isinstance(app.screen, ChatScreen)
        # the palette's sources actions reach the panel
        passage = next(c for c in app.get_system_commands(app.screen) if c.title == "Passage")
        await passage.callback()
        await until(pilot, lambda: isinstance(app.screen, PassageScreen), 10)
        await pilot.press("escape")
        # a title with markup is shown as it is, in the question that deletes it
        await asyncio.to_thread(client.rename_chat, chat.chat_id, "[bold]x[/] [@click=app.quit]q[/]")
        chat.title_text = "[bold]x[/] [@click=app.quit]q[/]"
        await pilot.press("f8")
        assert isinstance(app.screen, ConfirmScreen)
        assert "[@click=app.quit]q[/]" in text(app)
        await pilot.press("n")
        # export to a file that exists asks first
        target = tmp_path / "kept.md"
        target.write_text("precious")
        await pilot.press("ctrl+o")
        app.screen.query_one("Input").value = str(target)
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen) and target.read_text() == "precious"
        await pilot.press("n")
        assert target.read_text() == "precious" and view.citations
