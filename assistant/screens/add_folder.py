"""The modal that adds a watched folder: type its path (directory names complete from the disk, `~`
expanded) or browse for it; Enter asks the engine to watch it.

The modal stays open when the engine refuses (a folder already watched, inside a watched one, missing):
its sentence is shown as a notice and the path can be fixed. It closes with the folder's path once the
engine watches it; the folders screen then scans it with progress.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label
from textual_fspicker import SelectDirectory

from assistant.screens.path_entry import PathScreen, PathSuggester
from engine.service.client import ServiceError


class AddFolderScreen(PathScreen):
    """Dismissed with the path the engine now watches, or None when cancelled."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Watch a folder[/b]: its files are read and turned into memories.")
            yield Input(placeholder="~/Documents/notes", suggester=PathSuggester(), id="path")
            with Horizontal():
                yield Button("Browse…", id="browse")
                yield Button("Cancel", id="cancel")
                yield Button("Add", id="add", variant="primary")
            yield Label(
                "Enter adds · Tab or → completes a name · Ctrl+O browses · Escape cancels", classes="hint"
            )

    @on(Input.Submitted)
    @on(Button.Pressed, "#add")
    def _submit(self) -> None:
        value = self.query_one(Input).value.strip()
        if not value:
            self.notify("Type the path of a folder, or browse for one (Ctrl+O).", timeout=4)
            return
        self.add(value)

    @on(Button.Pressed, "#browse")
    def action_browse(self) -> None:
        typed = self.typed()
        start = typed if typed.is_dir() else Path.home()
        self.app.push_screen(SelectDirectory(start, "Choose a folder to watch"), self.browsed)

    @work(thread=True, exclusive=True, group="add")
    def add(self, value: str) -> None:
        client = self.app.client
        if client is None or not self.app.ready:
            self.notify("The engine is not ready yet; try again in a moment.")
            return
        try:
            folder = client.add_folder(value)
        except ServiceError as exc:
            self.app.lost(exc)  # the engine's sentence ("… is already watched") as a notice
            return
        self.app.call_from_thread(self.dismiss, folder.path)
