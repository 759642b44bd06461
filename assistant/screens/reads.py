"""What the model read for one answer: at each 64-token step of Memory³'s schedule, the query it
retrieved with and the memories it attached, with their retrieval scores."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from assistant.widgets.answer import where
from engine.service.client import Read

QUERY_CHARS = 24


class ReadsScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    ReadsScreen { align: center middle; }
    ReadsScreen > Vertical { width: 95%; height: 90%; border: thick $accent; background: $surface; }
    ReadsScreen Label { padding: 0 1; }
    ReadsScreen DataTable { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, question: str, mode: str, reads: list[Read]):
        super().__init__()
        self.question, self.mode, self.reads = question, mode, reads

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                Text.assemble(("What the model read", "bold"), f" ({self.mode}): {self.question[:70]}")
            )
            yield Label(self._summary())
            yield DataTable(cursor_type="row", zebra_stripes=True)
            yield Label("[dim]Escape closes[/dim]")

    def _summary(self) -> str:
        if self.mode == "none":
            return "In none mode the model reads no sources."
        if not self.reads:
            return "Nothing was read (the answer was stopped before, or was saved before reads were kept)."
        if self.mode == "rag":
            return "In rag mode the chunks the question retrieved were read once, as text."
        return f"{len(self.reads)} readings: memories are re-chosen every 64 tokens from the last 64 tokens."

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("step", "query", "source", "score")
        for read in self.reads:
            query = " ".join(read.query.split())
            query = query[:QUERY_CHARS] + ("…" if len(query) > QUERY_CHARS else "")
            for i, source in enumerate(read.sources):
                table.add_row(
                    str(read.step) if i == 0 else "",
                    Text(query) if i == 0 else "",
                    Text(where(source, name_only=True)),
                    f"{source.score:.4f}",
                )
