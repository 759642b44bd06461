"""The modal that adds a watched folder: type its path (directory names complete from the disk, `~`
expanded) or browse for it; Enter asks the engine to watch it.

The modal stays open when the engine refuses (a folder already watched, inside a watched one, missing):
its sentence is shown as a notice and the path can be fixed. It closes with the folder's path once the
engine watches it; the folders screen then scans it with progress.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label
from textual_fspicker import SelectDirectory

from engine.service.client import ServiceError


def complete_directory(value: str) -> str | None:
    """`value` completed to the first directory whose name it begins (with a trailing '/'), keeping the
    user's spelling (`~/Doc` → `~/Documents/`); hidden folders only when the name begins with a dot."""
    if value == "~":
        return "~/"
    folder, start = os.path.split(os.path.expanduser(value))
    try:
        with os.scandir(folder or ".") as entries:
            names = sorted(
                e.name
                for e in entries
                if e.name.startswith(start)
                and (start.startswith(".") or not e.name.startswith("."))
                and e.is_dir()
            )
    except OSError:
        return None
    return value + names[0][len(start) :] + "/" if names else None


class DirectorySuggester(Suggester):
    """Input completion from the disk (`complete`: folders by default); the listing runs off the UI thread
    (a slow or network disk)."""

    def __init__(self, complete: Callable[[str], str | None] = complete_directory) -> None:
        super().__init__(use_cache=False, case_sensitive=True)  # the disk changes; paths have case
        self.complete = complete

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(self.complete, value)


class AddFolderScreen(ModalScreen[str | None]):
    """Dismissed with the path the engine now watches, or None when cancelled."""

    DEFAULT_CSS = """
    AddFolderScreen { align: center middle; }
    AddFolderScreen > Vertical {
        width: 76; max-width: 95%; height: auto; padding: 1 2; border: thick $primary; background: $surface;
    }
    AddFolderScreen Input { margin: 1 0; }
    AddFolderScreen Horizontal { height: auto; align-horizontal: right; }
    AddFolderScreen Button { margin-left: 1; }
    AddFolderScreen .hint { color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+o", "browse", "Browse"),
        Binding("tab", "complete", "Complete", show=False, priority=True),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Watch a folder[/b]: its files are read and turned into memories.")
            yield Input(placeholder="~/Documents/notes", suggester=DirectorySuggester(), id="path")
            with Horizontal():
                yield Button("Browse…", id="browse")
                yield Button("Cancel", id="cancel")
                yield Button("Add", id="add", variant="primary")
            yield Label(
                "Enter adds · Tab or → completes a name · Ctrl+O browses · Escape cancels", classes="hint"
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

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
        typed = Path(os.path.expanduser(self.query_one(Input).value.strip() or "~"))
        start = typed if typed.is_dir() else Path.home()
        self.app.push_screen(SelectDirectory(start, "Choose a folder to watch"), self._browsed)

    def _browsed(self, chosen: Path | None) -> None:
        """The chosen folder goes into the input, so Enter adds it and the path is seen first."""
        if chosen is not None:
            field = self.query_one(Input)
            field.value = str(chosen)
            field.cursor_position = len(field.value)
            field.focus()

    def action_complete(self) -> None:
        """Tab completes the folder name suggested, as a shell does; with nothing to complete it moves on."""
        field = self.query_one(Input)
        suggestion = field._suggestion  # Textual keeps the suggestion shown in the input here
        if field.has_focus and suggestion and suggestion != field.value:
            field.value = suggestion
            field.cursor_position = len(suggestion)
        else:
            self.focus_next()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

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
