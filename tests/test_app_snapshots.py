"""Snapshots of every screen of the app at 80×24 and 120×40 (pytest-textual-snapshot; `--snapshot-update`
writes them to tests/__snapshots__/, to be looked at before they are committed).

The real app runs against a real service with the tiny random-weight model. Nothing generated is shown:
the chats are written into the catalog before the service starts (the answers' citations name real
chunks, so the passage modal reads them from the service), their times are fixed and shown in UTC, and
every path on screen lies under one fixed folder, /tmp/m3-snapshots, made and removed here (two test runs
on one machine take turns with it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_pilot import text, until
from filelock import FileLock
from textual.widgets import Markdown

from assistant.app import M3App
from assistant.screens.chats import ChatsScreen
from assistant.screens.help import HelpScreen
from assistant.screens.passage import PassageScreen
from assistant.screens.problem import ProblemScreen
from assistant.screens.reads import ReadsScreen
from assistant.widgets.answer import AnswerView
from assistant.widgets.sources import SourcesPanel
from bench.tiny_gguf import write_tiny_gguf
from engine.service import client as service
from ingest.catalog import Catalog
from ingest.chats import Chats
from ingest.paths import Home

ROOT = Path("/tmp/m3-snapshots")
SIZES = [(80, 24), (120, 40)]
WHEN = 1767261600.0  # 2026-01-01 10:00 UTC: every chat and message is dated from it
NOTES = {
    "lighthouse.md": "# The lighthouse\n\n"
    "The Varnholm lighthouse stands on the northern cape of the island, above the old harbour.\n\n"
    "It was built in 1871 by the engineer Ida Kessler, who also drew the keeper's cottage.\n\n"
    "Its lamp burned whale oil until 1903, then paraffin until the light was electrified in 1952.\n\n"
    "The last keeper, Anders Holm, left in 1987; the light has been automatic since.\n",
    "garden.md": "# Garden log\n\nThe quince tree was planted on 4 May.\nThe pond holds eleven goldfish.\n",
}
Q1 = "Who built the Varnholm lighthouse?"
Q2 = "What did its lamp burn?"


@pytest.fixture(scope="module")
def utc() -> Iterator[None]:
    """The chats list shows local times: in UTC they read the same on every machine."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    os.environ.pop("TZ") if before is None else os.environ.update(TZ=before)
    time.tzset()


@pytest.fixture(scope="module")
def root(home: Home, utc) -> Iterator[Path]:
    """/tmp/m3-snapshots with the notes (and a PDF that is none) and the tiny model; removed after. A
    second test run on this machine waits for the first to be done with it (a lock beside it)."""
    lock = FileLock(f"{ROOT}.lock")
    lock.acquire()
    shutil.rmtree(ROOT, ignore_errors=True)
    notes = ROOT / "notes"
    notes.mkdir(parents=True)
    for name, body in NOTES.items():
        (notes / name).write_text(body)
    (notes / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is no PDF at all\n")
    write_tiny_gguf(ROOT / "tiny.gguf", "gemma3")
    home.cache.mkdir(parents=True, exist_ok=True)  # shared: the embedder is exported once a run
    try:
        yield ROOT
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
        lock.release()


def home_at(root: Path, home: Home) -> Home:
    root.mkdir()
    (root / "cache").symlink_to(home.cache)
    return Home.at(root)


@pytest.fixture(scope="module")
def snap(root: Path, home: Home) -> Iterator[Home]:
    """A home whose service has read the notes and whose catalog holds two chats, written while it was
    stopped; the service runs until the module ends."""
    m3, tiny = home_at(root / "home", home), root / "tiny.gguf"
    try:
        with service.connect_or_start(m3, tiny, "cpu") as client:
            client.add_folder(root / "notes")
            with client.scan(root / "notes") as stream:
                list(stream)
            settle(client)
        service.stop(m3)
        write_chats(m3)
        with service.connect_or_start(m3, tiny, "cpu") as client:
            settle(client)
        yield m3
    finally:
        service.stop(m3)


def settle(client: service.Client) -> None:
    """Wait until every file is read and every memory written."""
    deadline = time.monotonic() + 120
    while (s := client.status()).documents.pending or s.chunks_pending or s.background != "idle":
        assert time.monotonic() < deadline, "the notes were not ingested in time"
        time.sleep(0.2)


def write_chats(m3: Home) -> None:
    """Two chats, as the service saves them (engine/facade.py), at fixed times: a garden question, then
    the lighthouse: a memory answer with two citations, and a question compared in rag and none."""
    catalog = Catalog(m3.catalog)
    try:
        chunks = catalog.rows(
            "SELECT c.hash, c.text, c.line_start, c.line_end, c.page, f.path || '/' || d.rel_path AS path"
            " FROM chunks c JOIN documents d ON d.id = c.document_id JOIN folders f ON f.id = d.folder_id"
        )
        built, oil, quince = (
            next(c for c in chunks if word in c["text"]) for word in ("1871", "oil", "quince")
        )

        def cite(n: int, c: dict, share: float) -> dict:
            keys = ("path", "page", "line_start", "line_end", "text", "hash")
            return {"n": n, **{k: c[k] for k in keys}, "share": share}

        def read(step: int, query: str, *found: tuple[dict, float]) -> dict:
            keys = ("hash", "path", "page", "line_start", "line_end")
            return {
                "step": step,
                "query": query,
                "sources": [{**{k: c[k] for k in keys}, "score": s} for c, s in found],
            }

        chats = Chats(catalog)
        garden = chats.new("When was the quince planted?")
        chats.add_message(garden, "user", "When was the quince planted?", "memory")
        chats.add_message(garden, "assistant", "On 4 May [1].", "memory", json.dumps([cite(1, quince, 1.0)]))
        chat = chats.new(Q1)
        chats.add_message(chat, "user", Q1, "memory")
        answer = "The Varnholm lighthouse was built in **1871** by the engineer Ida Kessler [1]."
        cited = [cite(1, built, 0.8123), cite(2, quince, 0.1877)]
        reads = [
            read(0, Q1, (built, 0.0328), (oil, 0.0323), (quince, 0.0161)),
            read(64, "by the engineer Ida Kessler [1].", (built, 0.0325), (oil, 0.0320)),
        ]
        chats.add_message(chat, "assistant", answer, "memory", json.dumps(cited), json.dumps(reads))
        chats.add_message(chat, "user", Q2, "rag")
        rag = "Whale oil until 1903, then paraffin until the light was electrified in 1952 [1]."
        cited = [cite(1, oil, 1.0)]
        chats.add_message(
            chat, "assistant", rag, "rag", json.dumps(cited), json.dumps([read(0, Q2, (oil, 0.0328))])
        )
        chats.add_message(chat, "user", Q2, "none")
        chats.add_message(chat, "assistant", "I do not know which lamp you mean.", "none")
        with catalog.atomic():  # the times the chats list shows
            catalog.db.execute("UPDATE chats SET created_at = ? + 3600 * (id - 1)", (WHEN,))
            catalog.db.execute("UPDATE messages SET created_at = ? + 3600 * (chat_id - 1) + 60 * id", (WHEN,))
    finally:
        catalog.close()


# --- the scenes: each leaves the app where its snapshot is taken -----------------------------------------


async def ready(pilot) -> None:
    """The engine ready, its status read, and nothing left to ingest."""
    app = pilot.app
    await until(pilot, lambda: app.ready and app.latest is not None and "ingest idle" in text(app), 120)


async def still(pilot) -> None:
    """No blinking cursor (a modal's background too), and a few frames for what was mounted to lay
    itself out."""
    for screen in pilot.app.screen_stack:
        for widget in screen.query("Input, TextArea"):
            widget.cursor_blink = False
    for _ in range(3):
        await pilot.pause(0.05)
    await pilot.wait_for_scheduled_animations()


async def saved_chat(pilot) -> None:
    app = pilot.app
    await ready(pilot)
    chat = app.screen
    await pilot.press("ctrl+l")
    await until(pilot, lambda: isinstance(app.screen, ChatsScreen) and Q1 in text(app), 30)
    await pilot.press("enter")
    await until(pilot, lambda: app.screen is chat and len(chat.query(AnswerView)) == 3, 30)
    await until(pilot, lambda: all(v.query_one(Markdown).children for v in chat.query(AnswerView)), 30)
    await still(pilot)


async def first_answer(pilot) -> None:
    """The saved chat, its first answer (in memory mode) selected."""
    await saved_chat(pilot)
    pilot.app.screen.query(AnswerView).first().focus()
    await pilot.pause()


async def sources(pilot) -> None:
    await first_answer(pilot)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: pilot.app.screen.query_one(SourcesPanel).has_focus)
    await still(pilot)


async def passage(pilot) -> None:
    await sources(pilot)
    await pilot.press("enter")
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, PassageScreen) and app.screen.passage is not None, 30)
    await still(pilot)


async def reads(pilot) -> None:
    await first_answer(pilot)
    await pilot.press("ctrl+g")
    await until(pilot, lambda: isinstance(pilot.app.screen, ReadsScreen))
    await still(pilot)


async def chats(pilot) -> None:
    await ready(pilot)
    await pilot.press("ctrl+l")
    await until(pilot, lambda: isinstance(pilot.app.screen, ChatsScreen) and "quince" in text(pilot.app), 30)
    await still(pilot)


async def folders(pilot) -> None:
    app = pilot.app
    await ready(pilot)
    await pilot.press("f3")
    shown = ("Up to date", "m3-snapshots/notes", "broken.pdf")
    await until(pilot, lambda: bool(app.screen.folders) and all(s in text(app) for s in shown), 30)
    await still(pilot)


async def bank(pilot) -> None:
    await ready(pilot)
    await pilot.press("f4")
    await until(pilot, lambda: "Memories" in text(pilot.app) and "Budget" in text(pilot.app), 30)
    await still(pilot)


async def help_keys(pilot) -> None:
    await ready(pilot)
    await pilot.press("f1")
    await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
    await still(pilot)


SCENES = [saved_chat, sources, passage, reads, chats, folders, bank, help_keys]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("scene", SCENES, ids=lambda f: f.__name__)
def test_screen(snap, snap_compare, scene, size):
    app = M3App(snap, str(ROOT / "tiny.gguf"), "cpu")
    try:
        assert snap_compare(app, terminal_size=size, run_before=scene)
    finally:
        if app.client is not None:
            app.client.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_engine_down(root, home, snap_compare, size):
    """A model file that is not there: the problem screen (no service is left running after)."""
    down = home_at(root / "down", home)

    async def problem(pilot) -> None:
        app = pilot.app
        await until(pilot, lambda: isinstance(app.screen, ProblemScreen) and "gone.gguf" in text(app), 60)
        await still(pilot)

    app = M3App(down, str(root / "gone.gguf"), "cpu")
    try:
        assert snap_compare(app, terminal_size=size, run_before=problem)
    finally:
        service.stop(down)
        shutil.rmtree(root / "down")
