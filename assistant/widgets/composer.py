"""Where questions are written: Enter sends, Shift+Enter or Ctrl+J adds a line, Up and Down recall
earlier questions (from the first or last line, as a shell does)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class Composer(TextArea):
    DEFAULT_CSS = """
    Composer { height: auto; max-height: 8; min-height: 3; border: round $primary 50%; }
    Composer:focus { border: round $primary; }
    """

    @dataclass
    class Submitted(Message):
        text: str

    def __init__(self, **kwargs: object):
        super().__init__(
            soft_wrap=True, show_line_numbers=False, tab_behavior="focus", compact=False, **kwargs
        )
        self.placeholder = "Ask about your files…  (Enter sends, Shift+Enter or Ctrl+J adds a line)"
        self.asked: list[str] = []
        self._recalled: int | None = None  # index into history while recalling
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self._submit()
        elif event.key in ("shift+enter", "ctrl+j"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
        elif event.key == "up" and self.cursor_at_first_line and self.asked:
            event.stop()
            event.prevent_default()
            self._step(-1)
        elif event.key == "down" and self.cursor_at_last_line and self._recalled is not None:
            event.stop()
            event.prevent_default()
            self._step(1)
        else:
            await super()._on_key(event)

    def _submit(self) -> None:
        text = self.text.strip()
        if not text:
            return
        if not self.asked or self.asked[-1] != text:
            self.asked.append(text)
        self._recalled, self._draft = None, ""
        self.clear()
        self.post_message(self.Submitted(text))

    def _step(self, direction: int) -> None:
        """Move through the history: older with -1, newer with +1; past the newest is the draft."""
        if self._recalled is None:
            self._draft, self._recalled = self.text, len(self.asked)
        self._recalled = max(0, self._recalled + direction)
        if self._recalled >= len(self.asked):
            self._recalled, text = None, self._draft
        else:
            text = self.asked[self._recalled]
        self.load_text(text)
        self.move_cursor(self.document.end)
