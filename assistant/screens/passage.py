"""A cited passage in its document: the chunks before and after it, the passage itself highlighted.
`o` opens the file at the passage's first line in $EDITOR (the app suspends meanwhile)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from assistant.widgets.answer import where
from engine.service.client import Citation, Passage, ServiceError


def open_in_editor(app: App, path: str, line: int) -> None:
    """Open `path` at `line` in $VISUAL or $EDITOR (`editor +LINE path`, which vi, vim, nano, emacs,
    micro and helix understand), suspending the app until the editor exits."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        app.notify("Set $EDITOR (for example EDITOR=nano) to open files from here.", severity="warning")
        return
    try:
        argv = shlex.split(editor)
    except ValueError:
        argv = []
    if not argv or shutil.which(argv[0]) is None:  # checked before the terminal is handed over
        app.notify(
            f"The editor {editor!r} (from $VISUAL or $EDITOR) is no program here.",
            severity="error",
            markup=False,
        )
        return
    if not os.path.exists(path):
        app.notify(f"{path} is no longer there.", severity="error", markup=False)
        return
    failed: OSError | None = None
    try:
        with app.suspend():
            try:  # nothing may escape here: Textual takes the terminal back only when the block ends
                subprocess.run([*argv, f"+{line}", path], check=False)
            except OSError as exc:
                failed = exc
    except SuspendNotSupported:  # no terminal to hand over (a test, a web view)
        app.notify(
            "The editor cannot be opened here: the app has no terminal to lend it.", severity="warning"
        )
    if failed is not None:
        app.notify(f"{editor} cannot be started ({failed.strerror}).", severity="error", markup=False)


class PassageScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    PassageScreen { align: center middle; }
    PassageScreen > Vertical { width: 90%; height: 90%; border: thick $secondary; background: $surface; }
    PassageScreen #passage-title { padding: 0 1; background: $secondary 30%; width: 100%; }
    PassageScreen VerticalScroll { padding: 0 1; }
    PassageScreen .context { color: $text-muted; }
    PassageScreen .cited { background: $accent 25%; color: $text; }
    """
    BINDINGS = [
        Binding("escape,q", "dismiss", "Close"),
        Binding("o", "open", "Open in $EDITOR"),
    ]

    def __init__(self, citation: Citation):
        super().__init__()
        self.citation = citation
        self.passage: Passage | None = None  # once loaded from the engine

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"[{self.citation.n}] {where(self.citation)}", id="passage-title", markup=False)
            with VerticalScroll():
                yield Static(Text(self.citation.text), classes="cited")
            yield Label("[dim]o opens the file at this line · Escape closes[/dim]")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True)
    def load(self) -> None:
        try:
            passage = self.app.engine_client().passage(self.citation.hash, self.citation.path, context=3)
        except ServiceError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="warning", markup=False)
            return
        self.app.call_from_thread(self._show, passage)

    async def _show(self, passage: Passage) -> None:
        scroll = self.query_one(VerticalScroll)
        await scroll.remove_children()
        parts = [
            *(Static(Text(p.text), classes="context") for p in passage.before),
            cited := Static(Text(passage.text), classes="cited"),
            *(Static(Text(p.text), classes="context") for p in passage.after),
        ]
        if not passage.before and not passage.after:
            parts.append(Static("(the document holds nothing else)", classes="context"))
        await scroll.mount_all(parts)
        self.passage = passage
        scroll.call_after_refresh(scroll.scroll_to_widget, cited, top=True, animate=False)

    def action_open(self) -> None:
        open_in_editor(self.app, self.citation.path, self.citation.line_start)
