"""Two small modals: a line of text to enter (a title, a path) and a yes/no question."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

DIALOG_CSS = """
PromptScreen, ConfirmScreen { align: center middle; }
PromptScreen > Vertical, ConfirmScreen > Vertical {
    width: 70; max-width: 95%; height: auto; padding: 1 2; border: thick $primary; background: $surface;
}
ConfirmScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
ConfirmScreen Button { margin-left: 2; }
"""


class PromptScreen(ModalScreen[str | None]):
    """Enter accepts the text (stripped: "" when empty), Escape cancels (None)."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", max_length: int = 0):
        super().__init__()
        self.title_text, self.value, self.max_length = title, value, max_length

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, markup=False)
            yield Input(self.value, select_on_focus=True, max_length=self.max_length)
            yield Label("[dim]Enter accepts · Escape cancels[/dim]")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """y or the Yes button: True; n, Escape or No: False."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, markup=False)
            with Horizontal():
                yield Button("No", id="no")
                yield Button("Yes", id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
