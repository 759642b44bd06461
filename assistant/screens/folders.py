"""The folders screen: every watched folder with its counts, the files that failed and why, the files a
search will not find (too large, of a type not read, left out), and how far the ingest is.

Every call to the engine runs in a worker thread, so the screen answers keys while folders are read:
the table is re-read on each status reading, and a scan (after adding a folder, or `s`) streams its
progress here. Leaving the screen or the app loses nothing: the engine keeps working in the background,
and the progress then follows from the status readings.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import DataTable, Footer, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from assistant import actions
from assistant.messages import FoldersRead, ScanEnded, ScanStep, StatusChanged
from assistant.screens.add_folder import AddFolderScreen
from assistant.screens.dialogs import ConfirmScreen
from assistant.units import short_path
from assistant.widgets.ingest_progress import IngestProgress, Reading
from assistant.widgets.status_bar import StatusBar
from engine.service.client import (
    Failure,
    Folder,
    MemoryProgress,
    ScanDone,
    ScanProgress,
    ServiceError,
    Skipped,
    Status,
)

ALL = "*"  # the key of the row that sums every folder
COLUMNS = ("Files", "Chunks", "Memories", "To write", "Failed")
NUMBER_WIDTH = 10  # a count's cell with its padding
NOT_READY = "Waiting for the engine…"
RETRY_POLL_S = 0.3
RETRY_WAIT_S = 30.0  # then the file is left to the background work (a long batch runs)


def counts(f: Folder) -> list[int]:
    """A folder's numbers, in the order of COLUMNS."""
    return [f.documents, f.chunks, f.memories, f.memories_pending, f.failed]


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def skipped_line(k: Skipped) -> Text:
    """One line (wrapped as needed) of what a search will not find in every folder: the files over the size
    limit by name, the types not read by suffix, and a count of what .m3ignore leaves out."""
    text = Text.assemble(("Not searchable", "bold"))
    if k.too_large:
        names = ", ".join(Path(f.path).name for f in k.too_large_files[:3])
        more = ", …" if k.too_large > 3 else ""
        text.append(f" · {k.too_large:,} over the size limit ({names}{more})")
    if k.unsupported:
        types = ", ".join(f"{t.suffix or 'no suffix'} {t.files:,}" for t in k.unsupported_types[:5])
        more = ", …" if len(k.unsupported_types) > 5 else ""
        text.append(f" · {k.unsupported:,} of types not read ({types}{more})")
    if k.ignored:
        text.append(f" · {k.ignored:,} left out by .m3ignore")
    return text


class FoldersScreen(Screen):
    SCOPE = actions.FOLDERS
    BINDINGS = actions.bindings(actions.FOLDERS)

    def __init__(self) -> None:
        super().__init__()
        self.folders: list[Folder] | None = None  # None until first read
        self.failures: list[Failure] = []
        self.scanning: str | None = None  # the folder a scan in front streams (ALL: every one)
        self._scan_base: Reading | None = None  # its last file reading, that memory progress adds to
        self._listed: tuple[str | None, list[Failure]] | None = None  # the failures listed, and where

    def compose(self) -> ComposeResult:
        yield Static(NOT_READY, id="folders-head")
        yield DataTable(id="folders-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="folders-empty")
        yield Static(id="folders-failures-head")
        yield OptionList(id="folders-failures")
        yield Static(id="folders-skipped")
        yield IngestProgress(id="folders-ingest")
        yield Footer(compact=True)
        yield StatusBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("Folder", key="path")
        for label in COLUMNS:
            table.add_column(Text(label, justify="right"), key=label)
        self.query_one("#folders-skipped").display = False  # until a status says there are some
        self.query_one("#folders-empty", Static).update(
            f"No folder is watched yet. Press {self.app.keys_of('add_folder')} to add one: its files are "
            "read, turned into memories, and followed as they change."
        )
        self._redraw()

    def on_screen_resume(self) -> None:
        """Back on this screen (the frame sends status readings to the screens in front only)."""
        if self.app.latest is not None:
            self._apply(self.app.latest.status)
        self.load_folders()

    def on_status_changed(self, message: StatusChanged) -> None:
        self._apply(message.status)
        self.load_folders()

    def on_resize(self) -> None:
        self._fill_table()

    # reading

    @work(thread=True, exclusive=True, group="folders")
    def load_folders(self) -> None:
        client = self.app.client
        if client is None or not self.app.ready:
            return
        try:
            folders = client.folders()
        except ServiceError as exc:
            self.app.lost(exc)
            return
        if not get_current_worker().is_cancelled:
            self.post_message(FoldersRead(folders))

    def on_folders_read(self, message: FoldersRead) -> None:
        self.folders = message.folders
        self._redraw()

    def _apply(self, status: Status) -> None:
        if self.scanning is None:  # a scan's own stream is finer and would disagree by a moment
            self.query_one(IngestProgress).show(Reading.of_status(status))
        if status.failures != self.failures:
            self.failures = status.failures
            self._fill_failures()
        k, skipped = status.skipped, self.query_one("#folders-skipped", Static)
        skipped.display = bool(k.too_large or k.unsupported or k.ignored)
        skipped.update(skipped_line(k))

    def _redraw(self) -> None:
        folders = self.folders
        none = folders == []
        self.query_one(DataTable).display = not none
        self.query_one("#folders-empty").display = none
        self.query_one("#folders-failures-head").display = not none
        if folders is not None:
            k = len(self._imported())
            n = len(folders) - k
            collections = f" · {k} imported collection{'s' * (k != 1)}" if k else ""
            self.query_one("#folders-head", Static).update(
                (f"[b]Watched folders[/b] ({n})" if n else "[b]Watched folders[/b]") + collections
            )
        self._fill_table()
        self._fill_failures()

    def _rows(self) -> list[tuple[str, str, list[int]]]:
        """(key, path, counts) of each folder, then of all of them when there are several."""
        folders = self.folders or []
        rows = [(f.path, f.path, counts(f)) for f in folders]  # an imported collection's path: its label
        if len(rows) > 1:
            rows.append((ALL, "All folders", [sum(r[2][i] for r in rows) for i in range(len(COLUMNS))]))
        return rows

    def _fill_table(self) -> None:
        """Cells change in place, so the cursor stays; a folder added or removed rebuilds the rows."""
        table = self.query_one(DataTable)
        rows = self._rows()
        width = max(self.size.width - NUMBER_WIDTH * len(COLUMNS) - 6, 12)
        imported = self._imported()
        cells = [
            [self._folder_cell(key, path, width, key in imported)]
            + [Text(f"{n:,}", justify="right") for n in numbers]
            for key, path, numbers in rows
        ]
        keys = [key for key, _, _ in rows]
        if [k.value for k in table.rows] == keys:
            for key, row in zip(keys, cells, strict=True):
                for column, value in zip(table.columns, row, strict=True):
                    table.update_cell(key, column, value, update_width=True)
            return
        selected = self._selected_key()
        table.clear()
        for key, row in zip(keys, cells, strict=True):
            table.add_row(*row, key=key)
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)

    def _imported(self) -> set[str]:
        """The paths (labels) of the imported collections: read-only, without a folder on the disk."""
        return {f.path for f in self.folders or [] if f.kind == "imported"}

    @staticmethod
    def _folder_cell(key: str, path: str, width: int, imported: bool) -> Text:
        if key == ALL:
            return Text(path, style="bold")
        if imported:
            return Text.assemble(short_path(path, width - 11), (" (imported)", "dim"))
        return Text(short_path(path, width))

    def _selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _selected_folder(self) -> str | None:
        """The folder of the highlighted row; None for the 'All folders' row (or no folder)."""
        key = self._selected_key()
        return None if key in (None, ALL) else key

    def on_data_table_row_highlighted(self) -> None:
        self._fill_failures()

    def _no_failure(self, folder: str | None, where: str) -> str:
        if folder is None:
            return "No file failed."
        elsewhere = len(self.failures)
        others = f"; {elsewhere:,} did in other folders (the All folders row lists them)" if elsewhere else ""
        return f"No file failed in {where}{others}."

    def _fill_failures(self) -> None:
        folder = self._selected_folder()
        shown = [f for f in self.failures if folder is None or inside(f.path, folder)]
        where = "every folder" if folder is None else short_path(folder, 40)
        self.query_one("#folders-failures-head", Static).update(
            Text.assemble(
                ("Failed files", "bold"),
                f" in {where} ({len(shown)}) · {self.app.keys_of('retry')} reads the selected one again",
            )
            if shown
            else Text(self._no_failure(folder, where), "dim")
        )
        options = self.query_one(OptionList)
        options.display = bool(shown)
        if self._listed == (folder, shown):
            return
        self._listed = (folder, shown)
        kept = options.highlighted_option.id if options.highlighted_option else None
        options.set_options(Option(self._failure_line(f, folder), id=f.path) for f in shown)
        ids = [f.path for f in shown]
        if ids:
            options.highlighted = ids.index(kept) if kept in ids else 0

    @staticmethod
    def _failure_line(failure: Failure, folder: str | None) -> Text:
        name = os.path.relpath(failure.path, folder) if folder else short_path(failure.path, 200)
        return Text.assemble((name, "bold"), " · ", (failure.reason, "dim"))

    # actions (see assistant/actions.py)

    def _say(self, sentence: str, severity: SeverityLevel = "information", timeout: float = 5) -> None:
        """A notice; it names paths, which may hold brackets, so it is never read as markup (thread-safe)."""
        self.notify(sentence, severity=severity, timeout=timeout, markup=False)

    def _ready(self) -> bool:
        """Whether the engine can be asked now; else the user is told to wait."""
        if not self.app.ready or self.app.client is None:
            self._say("The engine is not ready yet; try again in a moment.", timeout=3)
            return False
        return True

    def action_add_folder(self) -> None:
        self.app.push_screen(AddFolderScreen(), self._added)

    def _added(self, path: str | None) -> None:
        if path is None:
            return
        self.load_folders()
        if self.scanning is not None:
            self._say(f"Watching {short_path(path, 60)}; it is read once the scan running now ends.")
            return
        self._say(f"Watching {short_path(path, 60)}: reading its files.", timeout=4)
        self._start_scan(path)

    def action_remove_folder(self) -> None:
        folder = self._selected_folder()
        if not self._ready():
            return
        if folder is None:
            self._say("Select a folder to stop watching.", timeout=3)
            return
        shown, imported = short_path(folder, 60), folder in self._imported()
        question = (
            f"Remove the imported collection {shown}? Its documents and memories are dropped."
            if imported
            else f"Stop watching {shown}? Its memories are dropped; its files stay."
        )
        self.app.push_screen(ConfirmScreen(question), lambda sure: self.remove(folder, imported, sure))

    @work(thread=True, group="folders-change")
    def remove(self, folder: str, imported: bool, sure: bool | None) -> None:
        if not sure:
            return
        try:
            client = self.app.engine_client()
            client.remove_collection(folder) if imported else client.remove_folder(folder)
        except ServiceError as exc:
            self.app.lost(exc)
            return
        done = "Removed the imported collection" if imported else "Stopped watching"
        self._say(f"{done} {short_path(folder, 60)}.", timeout=4)
        self.app.call_from_thread(self.load_folders)

    def action_rescan(self) -> None:
        if not self._ready():
            return
        if not self.folders:
            self._say(f"No folder is watched yet; {self.app.keys_of('add_folder')} adds one.", timeout=4)
        elif self.scanning is not None:
            self._say("A scan is running already.", timeout=3)
        elif self._selected_folder() in self._imported():
            shown = short_path(self._selected_folder() or "", 60)
            self._say(f"{shown} is an imported collection: it has no folder to scan.", timeout=4)
        else:
            self._start_scan(self._selected_folder() or ALL)

    def action_retry(self) -> None:
        option = self.query_one(OptionList).highlighted_option
        if option is None or option.id is None:
            self._say("No failed file is selected.", timeout=3)
        elif self._ready():
            self.retry(option.id)

    @work(thread=True, group="folders-change")
    def retry(self, path: str) -> None:
        """Queue the file to be parsed again, then follow the status until it is read or fails again
        (the background parses it within a second or so, unless it is busy with a long batch)."""
        client, worker, name = self.app.client, get_current_worker(), Path(path).name
        try:
            client.retry(path)
            self._say(f"Reading {name} again…", timeout=3)
            deadline = time.monotonic() + RETRY_WAIT_S
            while not worker.is_cancelled:
                status = client.status()
                reason = next((f.reason for f in status.failures if f.path == path), None)
                if reason is None and status.documents.pending and time.monotonic() < deadline:
                    time.sleep(RETRY_POLL_S)
                    continue
                if reason is not None:
                    self._say(f"{name} still fails: {reason}", severity="warning", timeout=8)
                elif not status.documents.pending:
                    self._say(f"{name} is read now; its memories follow.", timeout=5)
                else:
                    self._say(f"{name} waits its turn to be read; if it fails again it is listed.")
                self.app.call_from_thread(self._retried, status)
                return
        except ServiceError as exc:
            self.app.lost(exc)

    def _retried(self, status: Status) -> None:
        self._apply(status)
        self.load_folders()

    # scanning

    def _start_scan(self, folder: str) -> None:
        self.scanning = folder
        progress = self.query_one(IngestProgress)
        progress.scanning = "every folder" if folder == ALL else short_path(folder, 40)
        self._scan_base = progress.tracker.last
        progress.redraw()
        self.scan(None if folder == ALL else folder)

    @work(thread=True, exclusive=True, group="scan")
    def scan(self, folder: str | None) -> None:
        """Stream one scan's events here; leaving it (the app quits) closes the stream after the next
        event, and the engine goes on in the background."""
        worker = get_current_worker()
        try:
            with self.app.engine_client().scan(folder) as stream:
                for event in stream:
                    if worker.is_cancelled:
                        return
                    self.post_message(ScanStep(event))
        except ServiceError as exc:
            if not worker.is_cancelled:
                self.app.lost(exc)
        finally:
            self.post_message(ScanEnded())

    def on_scan_step(self, message: ScanStep) -> None:
        event, progress = message.event, self.query_one(IngestProgress)
        if isinstance(event, ScanProgress):
            self._scan_base = Reading.of_scan(event)
            progress.show(self._scan_base)
        elif isinstance(event, MemoryProgress) and self._scan_base is not None:
            progress.show(self._scan_base.writing(event))
        elif isinstance(event, ScanDone):
            self._report(event)

    def on_scan_ended(self) -> None:
        self.scanning = self._scan_base = None
        progress = self.query_one(IngestProgress)
        progress.scanning = None
        progress.redraw()
        self.load_folders()

    def _report(self, done: ScanDone) -> None:
        changes = {"new": done.new, "changed": done.changed, "moved": done.moved, "deleted": done.deleted}
        said = ", ".join(f"{n:,} {word}" for word, n in changes.items() if n) or "nothing changed"
        where = "every folder" if self.scanning in (None, ALL) else short_path(self.scanning, 60)
        failed = f"; {done.failed:,} failed (listed below)" if done.failed else ""
        self._say(f"Scanned {where}: {said}{failed}.", severity="warning" if done.failed else "information")
        for path in done.missing:
            self._say(f"{short_path(path, 60)} is missing from the disk.", severity="warning", timeout=8)
        if done.unreadable:
            path, reason = done.unreadable[0]
            more = f" (and {len(done.unreadable) - 1:,} more)" if len(done.unreadable) > 1 else ""
            self._say(f"{short_path(path, 60)} cannot be read: {reason}{more}", severity="warning")
