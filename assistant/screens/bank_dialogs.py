"""The bank screen's two modals: the bank file's path (typed, with completion from the disk, or browsed
for; an export also asks what it holds), and the report of an inspected file with the question whether to
import it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static
from textual_fspicker import FileOpen, Filters

from assistant.bank_text import report_text
from assistant.screens.path_entry import PathScreen, PathSuggester, complete_path
from engine.service.client import BankReport

SUFFIX = ".m3bank"
ONLY = "a watched folder, a collection's label, or a glob such as *.pdf"
BANK_FILES = Filters(("Bank files", lambda p: p.suffix == SUFFIX), ("Any file", lambda _: True))
GLOB = set("*?[")


@dataclass(frozen=True)
class Export:
    """What the export dialog was given: the file, what to put in it (`only`: empty for everything) and
    whether the vectors go too."""

    path: str
    only: str = ""
    vectors: bool = True

    def options(self) -> dict[str, Any]:
        """`Client.export_bank`'s keywords: `only` is its `documents` glob when it holds any of `*?[`, else
        its `folder` (the client tells a collection's label from a watched folder's path)."""
        options: dict[str, Any] = {"vectors": self.vectors}
        if self.only:
            options["documents" if GLOB & set(self.only) else "folder"] = self.only
        return options


def default_export_path(today: date | None = None) -> str:
    """'~/memory3-20250101.m3bank': where an export goes unless another name is typed."""
    return f"~/memory3-{(today or date.today()):%Y%m%d}{SUFFIX}"


def complete_bank_file(value: str) -> str | None:
    """`value` completed to the first folder or bank file whose name it begins (path_entry.complete_path)."""
    return complete_path(value, lambda name: name.endswith(SUFFIX))


class BankPathScreen(PathScreen):
    """Dismissed with the absolute path typed (import: an existing file; export: in an `Export`, with what
    the export holds), or None when cancelled."""

    DEFAULT_CSS = """
    BankPathScreen #only { margin-top: 0; }
    """

    def __init__(self, importing: bool):
        super().__init__()
        self.importing = importing

    def compose(self) -> ComposeResult:
        verb = "Import" if self.importing else "Export"
        with Vertical():
            if self.importing:
                yield Label("[b]Import a bank file[/b]: it is checked, and what it would change shown first.")
            else:
                yield Label("[b]Export the bank[/b] to a file (it holds your documents' text).")
            value = "" if self.importing else default_export_path()
            suggester = PathSuggester(complete_bank_file)
            yield Input(value, placeholder="~/memory3.m3bank", suggester=suggester)
            if not self.importing:
                yield Label("Only (empty: everything)")
                yield Input(placeholder=ONLY, id="only")
                yield Checkbox("Leave out vectors (the importer computes them)", id="no-vectors")
            with Horizontal():
                if self.importing:
                    yield Button("Browse…", id="browse")
                yield Button("Cancel", id="cancel")
                yield Button(verb, id="go", variant="primary")
            browse = " · Ctrl+O browses" if self.importing else ""
            hint = f"Enter {verb.lower()}s · Tab or → completes a name{browse} · Escape cancels"
            yield Label(hint, classes="hint")

    @on(Input.Submitted)
    @on(Button.Pressed, "#go")
    def _submit(self) -> None:
        value = self.query_one(Input).value.strip()  # the path: the first input
        path = Path(os.path.expanduser(value)).absolute() if value else None
        if path is None:
            self.notify("Type the bank file's path.", timeout=4)
        elif path.is_dir():
            self.notify(f"{path} is a folder; type the bank file's name.", timeout=5, markup=False)
        elif self.importing and not path.exists():
            self.notify(f"There is no file at {path}.", timeout=5, markup=False)
        elif self.importing and not path.is_file():
            self.notify(f"{path} is not a regular file.", timeout=5, markup=False)
        elif self.importing:
            self.dismiss(str(path))
        else:
            only = self.query_one("#only", Input).value.strip()
            self.dismiss(Export(str(path), only, not self.query_one(Checkbox).value))

    @on(Button.Pressed, "#browse")
    def action_browse(self) -> None:
        if not self.importing:
            return
        typed = self.typed()
        start = typed if typed.is_dir() else typed.parent if typed.parent.is_dir() else Path.home()
        self.app.push_screen(FileOpen(start, "Choose a bank file", filters=BANK_FILES), self.browsed)


class BankPlanScreen(ModalScreen[bool]):
    """An inspected bank file: what it holds, the verdict and the plan. y or Import: True; n, Escape or
    Cancel: False."""

    DEFAULT_CSS = """
    BankPlanScreen { align: center middle; }
    BankPlanScreen > Vertical {
        width: 90; max-width: 95%; height: auto; max-height: 90%; padding: 1 2; border: thick $primary;
        background: $surface;
    }
    BankPlanScreen VerticalScroll { height: auto; max-height: 1fr; }
    BankPlanScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    BankPlanScreen Button { margin-left: 2; }
    """
    BINDINGS = [Binding("y", "answer(True)", "Import"), Binding("n,escape", "answer(False)", "Cancel")]

    def __init__(self, path: str, report: BankReport):
        super().__init__()
        self.path, self.report = path, report

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll():
                yield Static(report_text(self.path, self.report), id="bank-plan")
            with Horizontal():
                yield Button("Cancel", id="no")
                yield Button("Import", id="yes", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
