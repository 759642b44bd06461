"""Bank files in the app: export from the bank screen, inspect and import into a second home, a damaged
file, and a cancelled import; driven by keys against real engine services and the bundled model.

Two homes: `source` serves a corpus of notes (service_rig.corpus) and exports it; `target` starts empty
and imports. Each import test leaves `target` as it found it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_pilot import notices, service_home, text, until
from service_rig import corpus
from textual.widgets import Checkbox, Input, Static

from assistant.app import M3App
from assistant.screens.bank import CANCELLED, BankScreen
from assistant.screens.bank_dialogs import BankPathScreen, BankPlanScreen, default_export_path
from assistant.screens.dialogs import ConfirmScreen
from assistant.screens.folders import FoldersScreen
from engine.service import client as service
from engine.service.client import BankReport, Client, Exported, ScanDone, ServiceError, Stream
from ingest.paths import Home

FILES = 24
SIZE = (120, 40)


@pytest.fixture(scope="module")
def source(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, Client]]:
    """A service with the bundled model over a corpus of notes, scanned."""
    notes = corpus(tmp_path_factory.mktemp("bank") / "bank-notes", FILES)
    with service_home(home.cache) as m3:
        client = service.connect_or_start(m3)
        client.add_folder(notes)
        with client.scan(notes) as stream:
            assert isinstance(list(stream)[-1], ScanDone)
        yield m3, client
        client.close()


@pytest.fixture(scope="module")
def target(home: Home) -> Iterator[tuple[Home, Client]]:
    """A second home, empty, that imports."""
    with service_home(home.cache) as m3:
        client = service.connect_or_start(m3)
        yield m3, client
        client.close()


@pytest.fixture(scope="module")
def bank_file(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source's bank, exported by the client (the app's export has its own test)."""
    path = tmp_path_factory.mktemp("banks") / "notes.m3bank"
    with source[1].export_bank(path) as stream:
        assert isinstance(list(stream)[-1], Exported)
    return path


def run(m3: Home, scenario, *args) -> None:
    """The app on `m3` at the bank screen, its engine ready, driven by `scenario(app, pilot, *args)`."""

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.ready)
            await pilot.press("f4")
            await until(pilot, lambda: isinstance(app.screen, BankScreen))
            await scenario(app, pilot, *args)

    app = M3App(m3)
    try:
        asyncio.run(drive())
    finally:
        if app.client is not None:
            app.client.close()


def report(stream) -> BankReport:
    with stream:
        last = list(stream)[-1]
    assert isinstance(last, BankReport)
    return last


async def type_path(app: M3App, pilot, key: str, path: Path) -> None:
    """Press `key` (e or i) and give `path` in the dialog."""
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, BankPathScreen))
    field = app.screen.query_one(Input)
    field.value = str(path)
    await pilot.press("enter")


def catalog_of(client: Client) -> tuple[list, int]:
    """The folders and collections, and the chunks (a removed collection's memories are dropped later)."""
    return client.folders(), client.bank_stats()["chunks"]


# --- export ----------------------------------------------------------------------------------------------


def test_export_from_the_bank_screen_writes_a_file_that_inspect_reads(source, tmp_path):
    m3, client = source
    path = tmp_path / "mine.m3bank"
    run(m3, export_scenario, path)
    found = report(client.inspect_bank(path))
    assert found.manifest["counts"]["documents"] == FILES and found.file_bytes == path.stat().st_size
    assert not found.verdict.reasons  # the same engine: taken as it is


async def export_scenario(app: M3App, pilot, path: Path) -> None:
    await pilot.press("e")
    await until(pilot, lambda: isinstance(app.screen, BankPathScreen))
    assert app.screen.query_one(Input).value == default_export_path()
    await pilot.press("escape")
    await type_path(app, pilot, "e", path)
    await until(pilot, lambda: any(n.startswith("Wrote") for n in notices(app)))
    assert path.is_file() and f"{FILES} documents" in text(app)
    size = path.stat().st_size

    await type_path(app, pilot, "e", path)  # again: replacing the file is asked first
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await pilot.press("n")
    await pilot.pause()
    assert isinstance(app.screen, BankScreen) and app.screen.job is None
    await type_path(app, pilot, "e", path)
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await pilot.press("y")
    await until(pilot, lambda: sum(n.startswith("Wrote") for n in notices(app)) == 2)
    assert path.stat().st_size == size


def test_export_of_only_a_glob_without_vectors(source, tmp_path):
    m3, client = source
    path = tmp_path / "some.m3bank"
    run(m3, scoped_export_scenario, path, "*/note-1?.md")
    found = report(client.inspect_bank(path))
    assert found.manifest["counts"]["documents"] == 10 and found.manifest["counts"]["vectors"] == 0


async def scoped_export_scenario(app: M3App, pilot, path: Path, glob: str) -> None:
    await pilot.press("e")
    await until(pilot, lambda: isinstance(app.screen, BankPathScreen))
    app.screen.query_one(Input).value = str(path)
    app.screen.query_one("#only", Input).value = glob
    app.screen.query_one(Checkbox).value = True
    await pilot.press("enter")
    await until(pilot, lambda: any(n.startswith("Wrote") for n in notices(app)))
    assert "10 documents" in text(app) and ", 0 vectors" in text(app)


# --- import ----------------------------------------------------------------------------------------------


def test_import_shows_the_plan_then_the_collection(target, bank_file):
    m3, client = target
    before = catalog_of(client)
    plan = report(client.inspect_bank(bank_file)).plan
    run(m3, import_scenario, bank_file, plan.collections[0])
    assert catalog_of(client) == before  # removed again in the folders screen


async def import_scenario(app: M3App, pilot, path: Path, label: str) -> None:
    await type_path(app, pilot, "i", path)
    await until(pilot, lambda: isinstance(app.screen, BankPlanScreen))
    shown = text(app)
    assert "Compatible" in shown and f"Documents: {FILES} new, 0 replaced" in shown
    assert f"Collections: {label} (new: {label})" in shown
    await pilot.press("y")
    await until(pilot, lambda: any(n.startswith("Imported") for n in notices(app)))
    shown = text(app)
    assert str(app.screen.query_one("#bank-last", Static).content).startswith(str(path))  # the report stays
    assert f"Collections: {label}" in shown
    await until(pilot, lambda: app.screen.stats is not None and app.screen.stats["chunks"] > 0)

    await pilot.press("f3")
    await until(pilot, lambda: isinstance(app.screen, FoldersScreen) and bool(app.screen.folders))
    assert [f.kind for f in app.screen.folders] == ["imported"]
    shown = text(app)
    assert f"{label} (imported)" in shown and "1 imported collection" in shown
    await pilot.press("s")
    await until(pilot, lambda: any("has no folder to scan" in n for n in notices(app)))
    await pilot.press("x")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    assert "Remove the imported collection" in text(app)
    await pilot.press("y")
    await until(pilot, lambda: app.screen.folders == [])


def test_a_truncated_file_is_its_sentence(target, bank_file, tmp_path):
    m3, client = target
    cut = tmp_path / "cut.m3bank"
    cut.write_bytes(bank_file.read_bytes()[: bank_file.stat().st_size // 2])
    with pytest.raises(ServiceError) as refused:
        report(client.inspect_bank(cut))
    run(m3, truncated_scenario, cut, str(refused.value))


async def truncated_scenario(app: M3App, pilot, path: Path, sentence: str) -> None:
    await type_path(app, pilot, "i", path)
    await until(pilot, lambda: sentence in notices(app))
    assert isinstance(app.screen, BankScreen) and app.screen.job is None
    assert str(app.screen.query_one("#bank-last", Static).content) == sentence


class CancelledAtFirstStep:
    """An import stream that does what Esc does (the screen's `cancelled`) as soon as the first step
    (copying, long before the commit) reaches the worker: on a busy machine the UI thread may take longer
    to act on that step than a small import takes to commit."""

    def __init__(self, stream: Stream, screen: BankScreen):
        self.stream, self.screen = stream, screen

    def __iter__(self) -> Iterator[object]:
        events = iter(self.stream)
        yield next(events)
        self.screen.cancelled = True
        yield from events

    def __enter__(self) -> CancelledAtFirstStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def test_cancel_during_import_leaves_the_catalog_unchanged(target, bank_file, monkeypatch):
    m3, client = target
    before = catalog_of(client)
    screens: list[BankScreen] = []
    starting, importing = BankScreen._start, Client.import_bank

    def start(screen: BankScreen, *args: object, **kwargs: object) -> None:
        screens.append(screen)
        starting(screen, *args, **kwargs)

    monkeypatch.setattr(BankScreen, "_start", start)
    monkeypatch.setattr(
        Client, "import_bank", lambda self, path: CancelledAtFirstStep(importing(self, path), screens[-1])
    )
    run(m3, cancel_scenario, bank_file)
    assert catalog_of(client) == before


async def cancel_scenario(app: M3App, pilot, path: Path) -> None:
    screen = app.screen
    screen.job = "export"  # Esc reaches the cancel action while a job runs (none is started here)
    await pilot.press("escape")
    assert screen.cancelled
    screen.job, screen.cancelled = None, False
    await type_path(app, pilot, "i", path)
    await until(pilot, lambda: isinstance(app.screen, BankPlanScreen))
    await pilot.press("y")
    await until(pilot, lambda: CANCELLED["import"] in notices(app))
    assert app.screen.job is None and not app.screen.query_one("#bank-transfer").display
