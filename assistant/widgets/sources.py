"""The sources of the selected answer: file, page, line span, share of attention and a snippet.
Enter shows the passage in its document; `o` opens the file at that line in $EDITOR."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from assistant import actions
from assistant.widgets.answer import where
from engine.service.client import Citation

SNIPPET_CHARS = 160


class SourcesPanel(OptionList):
    DEFAULT_CSS = """
    SourcesPanel { border: round $secondary 50%; border-title-color: $text-muted; }
    SourcesPanel:focus { border: round $secondary; }
    """
    BINDINGS = actions.bindings(actions.SOURCES)

    @dataclass
    class Chosen(Message):
        """The user asked for a source: `how` is "passage" or "open"."""

        citation: Citation
        how: str

    def __init__(self, **kwargs: object):
        super().__init__(**kwargs)
        self.citations: list[Citation] = []
        self.border_title = "Sources"

    def show(self, citations: list[Citation], mode: str) -> None:
        self.citations = citations
        self.clear_options()
        if not citations:
            note = "No sources: this mode reads none." if mode == "none" else "No sources yet."
            self.add_option(Option(Text(note, style="italic"), disabled=True))
            return
        for c in citations:
            label = Text()
            label.append(f"[{c.n}] {c.share:.0%} ", style="bold")
            label.append(f"{where(c)}\n")
            snippet = " ".join(c.text.split())
            label.append(snippet[:SNIPPET_CHARS] + ("…" if len(snippet) > SNIPPET_CHARS else ""), style="dim")
            self.add_option(Option(label))
        self.highlighted = 0

    def _chosen(self, how: str) -> None:
        if self.highlighted is not None and self.highlighted < len(self.citations):
            self.post_message(self.Chosen(self.citations[self.highlighted], how))

    def action_passage(self) -> None:
        self._chosen("passage")

    def action_open_source(self) -> None:
        self._chosen("open")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._chosen("passage")
