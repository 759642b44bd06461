"""The folders and bank screens of the app, on a real engine service (the tiny random-weight model).

The real app (assistant/app.py) is driven by keys at 80×24 and 120×40, as a user would: F3 opens the
folders screen, F4 the bank.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_pilot import notices, service_home, text, until, visible
from rich.text import Text
from textual.widgets import DataTable, Input, OptionList

from assistant.app import M3App
from assistant.screens.add_folder import AddFolderScreen
from assistant.screens.bank import BankScreen
from assistant.screens.dialogs import ConfirmScreen
from assistant.screens.folders import FoldersScreen
from assistant.screens.path_entry import complete_path
from assistant.units import human_bytes, short_path
from assistant.widgets.ingest_progress import IngestProgress, Reading, Tracker, duration_words
from bench.tiny_gguf import write_tiny_gguf
from engine.service import client as service
from ingest.paths import Home

SIZES = [(80, 24), (120, 40)]


@pytest.fixture(scope="module")
def served(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, Path]]:
    """A home of its own with its service started on the tiny model (the apps then connect to it)."""
    tiny = write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "gemma3")
    with service_home(home.cache) as m3:
        service.connect_or_start(m3, tiny, "cpu").close()
        yield m3, tiny


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """Six notes, a PDF that is none, which fails with a reason, and a photo no search will find."""
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(6):
        (folder / f"note-{i}.md").write_text(f"# Note {i}\n\nLocker {i} opens with code {4000 + i}.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is no PDF at all\n")
    (folder / "locker.png").write_bytes(b"\x89PNG\r\n")
    return folder


def run(served: tuple[Home, Path], scenario, *args) -> None:
    """The app on the served home, driven by `scenario(app, *args)`; its client closed after."""
    m3, tiny = served
    app = M3App(m3, str(tiny), "cpu")
    try:
        asyncio.run(scenario(app, *args))
    finally:
        if app.client is not None:
            app.client.close()


async def open_screen(pilot, app: M3App, key: str, screen: type) -> None:
    """Wait for the engine, then press the screen's key."""
    await until(pilot, lambda: app.ready)
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, screen))


# --- without the engine ----------------------------------------------------------------------------------


def test_directory_completion_expands_home_and_keeps_what_was_typed(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("Documents", "Downloads", ".dotfiles"):
        (tmp_path / name).mkdir()
    (tmp_path / "Dull.txt").write_text("")
    assert complete_path("~") == "~/"
    assert complete_path("~/Do") == "~/Documents/"
    assert complete_path("~/Dow") == "~/Downloads/"
    assert complete_path("~/Du") is None  # a file is no folder
    assert complete_path("~/.d") == "~/.dotfiles/"
    assert complete_path(f"{tmp_path}/Doc") == f"{tmp_path}/Documents/"
    assert complete_path("/no/such/place/x") is None


def test_time_left_is_estimating_until_there_is_a_rate():
    now = [0.0]
    tracker = Tracker(clock=lambda: now[0])
    tracker.add(Reading(0, 10, 0, 0, 0, 0))
    assert tracker.eta_s() is None
    now[0] = 10.0
    tracker.add(Reading(5, 5, 0, 50, 0, 50))  # 5 files in 10 s, 10 chunks a file
    assert tracker.eta_s() is None  # no memory written yet: its rate is unknown
    now[0] = 20.0
    tracker.add(Reading(10, 0, 0, 100, 20, 80))  # 20 memories in 10 s (from the last still reading)
    assert tracker.eta_s() == pytest.approx(80 / 2)
    done, total = tracker.steps()
    assert (done, total) == (30, 110)
    tracker.add(Reading(10, 0, 0, 100, 100, 0))
    assert tracker.steps() == (1.0, 1.0) and tracker.eta_s() == 0
    assert duration_words(42) == "about 40 s" and duration_words(3 * 3600 + 20 * 60) == "about 3 h 20 min"


def test_sizes_and_paths_read_short():
    assert human_bytes(512) == "512 B" and human_bytes(3 * 2**29) == "1.5 GiB"
    assert short_path(str(Path.home() / "notes"), 40) == "~/notes"
    assert short_path("/very/long/path/to/a/folder", 12) == "…/a/folder"


# --- on the engine ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_bank_screen_shows_the_figures_and_refreshes(served, size):
    run(served, bank_scenario, size)


async def bank_scenario(app: M3App, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, app, "f4", BankScreen)
        await until(pilot, lambda: app.latest is not None and "Memories" in text(app))
        shown = text(app)
        assert "Profile" in shown and "Budget used" in shown
        assert Path(app.health.model).name in shown and "CPU" in shown
        await pilot.press("r")
        await until(pilot, lambda: "Bank statistics read again." in notices(app))
        assert visible(app, "#bank-budget")


@pytest.mark.parametrize("size", SIZES)
def test_with_no_folder_the_screen_says_how_to_add_one(served, size):
    run(served, empty_scenario, size)


async def empty_scenario(app: M3App, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, app, "f3", FoldersScreen)
        await until(pilot, lambda: app.screen.folders is not None)
        assert "No folder is watched yet. Press a to add one" in text(app)
        assert not app.screen.query_one(DataTable).display


@pytest.mark.parametrize("size", SIZES)
def test_add_scan_retry_and_remove_a_folder(served, notes, size):
    run(served, folder_scenario, notes, size)


async def folder_scenario(app: M3App, notes: Path, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, app, "f3", FoldersScreen)
        screen = app.screen
        await until(pilot, lambda: screen.folders is not None)
        await pilot.press("a")
        assert isinstance(app.screen, AddFolderScreen)
        field = app.screen.query_one(Input)
        await pilot.press(*str(notes)[:-2])  # typed in part, then completed with Tab as in a shell
        await until(pilot, lambda: field._suggestion == str(notes) + "/", 10)
        await pilot.press("tab")
        assert field.value == str(notes) + "/" and field.has_focus
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen)
        await until(pilot, lambda: screen.scanning is None)  # over in a blink: its report says so
        # (its files may be new to it, or found by the background scan that adding a folder starts)
        assert any(n.startswith(f"Scanned {short_path(str(notes), 60)}: ") for n in notices(app))
        await until(pilot, lambda: "Up to date" in text(app) and bool(screen.folders[0].memories))
        files, chunks, memories, to_write, failed = (
            int(str(cell)) for cell in screen.query_one(DataTable).get_row(str(notes))[1:]
        )
        assert (files, to_write, failed) == (7, 0, 1) and memories == chunks >= 6
        failures = screen.query_one(OptionList)
        await until(pilot, lambda: failures.option_count == 1)
        assert "broken.pdf" in text(app)
        assert visible(app, "#folders-failures") and visible(app, "#folders-ingest")
        await until(pilot, lambda: "Not searchable · 1 of types not read (.png 1)" in text(app))
        assert visible(app, "#folders-skipped")

        # the engine's sentence when it refuses; the modal stays for the path to be fixed
        await pilot.press("a")
        app.screen.query_one(Input).value = str(notes)
        await pilot.press("enter")
        await until(pilot, lambda: any("already watched" in n for n in notices(app)))
        assert isinstance(app.screen, AddFolderScreen)
        await pilot.press("escape")

        await pilot.press("r")  # the PDF is still no PDF
        await until(pilot, lambda: any(n.startswith("broken.pdf still fails") for n in notices(app)))
        await pilot.press("s")
        await until(pilot, lambda: any("nothing changed" in n for n in notices(app)))

        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: screen.folders == [])
        assert "No folder is watched yet" in text(app)


def test_a_long_scan_shows_where_its_walk_is(served, tmp_path):
    """Progress during the scan, not at its end: the screen says which folder the walk lists and what it
    found so far, before any file is read. 10,000 photos in 200 folders may be listed within a frame on a
    fast disk, so the lines the progress widget drew are collected rather than caught on the screen."""
    photos = tmp_path / "photos"
    for d in range(200):
        (photos / f"{d:03}").mkdir(parents=True)
        for i in range(50):
            (photos / f"{d:03}" / f"{i}.jpg").write_bytes(b"\xff\xd8")
    run(served, walk_scenario, photos)


async def walk_scenario(app: M3App, photos: Path) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(pilot, app, "f3", FoldersScreen)
        screen = app.screen
        await until(pilot, lambda: screen.folders is not None)
        progress, drawn = screen.query_one(IngestProgress), []
        line = progress.line

        def drawing(reading: Reading) -> Text:
            drawn.append(line(reading))
            return drawn[-1]

        progress.line = drawing
        app.engine_client().add_folder(photos)
        try:
            await until(pilot, lambda: bool(screen.folders))  # the status poll tells the screen of it
            await pilot.press("s")
            where = r"…/\S*photos"
            walked = rf"Scanning {where} · listing {where}(/\d{{3}})? · [\d,]+ files found, 0 new or changed"
            await until(pilot, lambda: any(re.fullmatch(walked, t.plain) for t in drawn), 60)
            await until(pilot, lambda: screen.scanning is None, 60)
            await until(pilot, lambda: "files found" not in text(app), 60)  # the background's walk too
            await until(pilot, lambda: "Not searchable · 10,000 of types not read (.jpg 10,000)" in text(app))
        finally:
            app.engine_client().remove_folder(photos)
