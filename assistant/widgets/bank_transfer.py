"""A bank file on its way (export, inspection, import): its stage, a progress bar and a Cancel button; and
the sentences that say what a bank file holds, what importing it does, and what was done.

The bank screen runs the stream in a worker and feeds its `BankProgress` events here; Cancel (or Esc on
the screen) asks the screen to hang up, which cancels the work on the service.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, ProgressBar

from assistant.bank_text import stage_line
from engine.service.client import BankProgress


class BankTransfer(Vertical):
    """Hidden until `start`; `show(event)` moves the bar; `stop()` hides it again."""

    DEFAULT_CSS = """
    BankTransfer { height: auto; margin-top: 1; padding: 0 1; border: round $primary; display: none; }
    BankTransfer Horizontal { height: auto; }
    BankTransfer ProgressBar { width: 1fr; padding-top: 1; }
    BankTransfer Bar { width: 1fr; }
    BankTransfer Button { margin-left: 2; }
    """

    def compose(self) -> ComposeResult:
        yield Label(id="transfer-title", markup=False)
        with Horizontal():
            yield ProgressBar(show_eta=False)
            yield Button("Cancel", id="transfer-cancel", variant="error", compact=True)
        yield Label(id="transfer-stage", markup=False)

    def start(self, title: str) -> None:
        self.query_one("#transfer-title", Label).update(title)
        self.query_one("#transfer-stage", Label).update("starting…")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.query_one(Button).disabled = False
        self.display = True

    def show(self, event: BankProgress) -> None:
        self.query_one(ProgressBar).update(total=max(event.total, 1), progress=min(event.done, event.total))
        self.query_one("#transfer-stage", Label).update(stage_line(event))

    def cancelling(self) -> None:
        self.query_one("#transfer-stage", Label).update("cancelling…")
        self.query_one(Button).disabled = True

    def stop(self) -> None:
        self.display = False
