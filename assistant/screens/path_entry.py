"""What the dialogs that take a path share: completion from the disk (a shell's Tab), the picker, and the
modal's frame, keys and cancel. Subclasses compose their own label, input and buttons."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from textual import on
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input


def complete_path(value: str, files: Callable[[str], bool] = lambda name: False) -> str | None:
    """`value` completed to the first folder (with a trailing '/') or file accepted by `files` whose name
    it begins, keeping the user's spelling (`~/Doc` → `~/Documents/`); hidden names only when the name
    begins with a dot."""
    if value == "~":
        return "~/"
    folder, start = os.path.split(os.path.expanduser(value))
    try:
        with os.scandir(folder or ".") as entries:
            names = sorted(
                e.name + "/" * e.is_dir()
                for e in entries
                if e.name.startswith(start)
                and (start.startswith(".") or not e.name.startswith("."))
                and (e.is_dir() or files(e.name))
            )
    except OSError:
        return None
    return value + names[0][len(start) :] if names else None


class PathSuggester(Suggester):
    """Input completion from the disk (`complete`: folders by default); the listing runs off the UI thread
    (a slow or network disk)."""

    def __init__(self, complete: Callable[[str], str | None] = complete_path) -> None:
        super().__init__(use_cache=False, case_sensitive=True)  # the disk changes; paths have case
        self.complete = complete

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(self.complete, value)


class PathScreen(ModalScreen[str | None]):
    """A modal with one path Input: Tab completes, Ctrl+O browses (`action_browse`), Escape cancels."""

    DEFAULT_CSS = """
    PathScreen { align: center middle; }
    PathScreen > Vertical {
        width: 76; max-width: 95%; height: auto; padding: 1 2; border: thick $primary; background: $surface;
    }
    PathScreen Label { width: 100%; }
    PathScreen Input { margin: 1 0; }
    PathScreen Horizontal { height: auto; align-horizontal: right; }
    PathScreen Button { margin-left: 1; }
    PathScreen .hint { color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+o", "browse", "Browse"),
        Binding("tab", "complete", "Complete", show=False, priority=True),
    ]

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def typed(self) -> Path:
        """What is typed, `~` expanded (the home folder when nothing is)."""
        return Path(os.path.expanduser(self.query_one(Input).value.strip() or "~"))

    def browsed(self, chosen: Path | None) -> None:
        """The picker's choice goes into the input, so Enter takes it and the path is seen first."""
        if chosen is not None:
            field = self.query_one(Input)
            field.value = str(chosen)
            field.cursor_position = len(field.value)
            field.focus()

    def action_complete(self) -> None:
        """Tab completes the name suggested, as a shell does; with nothing to complete it moves on."""
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
