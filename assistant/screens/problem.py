"""When the engine cannot be reached or fails to start: what happened and what to do, never a traceback."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

ADVICE = (
    "What to do: r tries again (the app starts the engine when none runs). "
    "If it fails the same way, read the log file, fix what it names (a model file, config.toml), "
    "and try again; `m3 doctor` checks the data folder. Ctrl+Q quits: nothing you wrote is lost."
)


class ProblemScreen(ModalScreen[bool]):
    """Dismisses with True when the user asks to try again."""

    DEFAULT_CSS = """
    ProblemScreen { align: center middle; }
    ProblemScreen > Vertical { width: 80; max-width: 95%; height: auto; padding: 1 2;
                               border: thick $error; background: $surface; }
    ProblemScreen #what { text-style: bold; margin-bottom: 1; }
    """
    BINDINGS = [Binding("r", "retry", "Try again")]

    def __init__(self, sentence: str, log_file: Path):
        super().__init__()
        self.sentence, self.log_file = sentence, log_file

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("The engine is not available", id="title")
            yield Static(self.sentence, id="what", markup=False)
            yield Static(ADVICE)
            if str(self.log_file) not in self.sentence:
                yield Static(f"Log file: {self.log_file}", markup=False)

    def explain(self, sentence: str) -> None:
        """The engine is down again while this screen is shown: say the latest reason."""
        self.sentence = sentence
        self.query_one("#what", Static).update(sentence)
        self.notify("The engine is still not available.", severity="error", timeout=4)

    def action_retry(self) -> None:
        self.dismiss(True)
