"""A question and its answers: each answer streams as Markdown and ends with its numbered sources.

An answer view receives its worker's messages (AnswerStarted, AnswerPiece, AnswerWithdrawn, AnswerFinished)
directly, so answers in several modes can stream side by side. Pieces go through Textual's MarkdownStream
(which batches them when they come faster than the screen redraws); the end is one full render.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Markdown, Static
from textual.widgets._markdown import MarkdownStream

from assistant.messages import AnswerFinished, AnswerPiece, AnswerStarted, AnswerWithdrawn
from assistant.units import some_of
from engine.service.client import Citation, Read, Source

if TYPE_CHECKING:
    from assistant.screens.chat import Conversation


def where(source: Citation | Source, name_only: bool = False) -> str:
    """`…/notes/a.md:12-18` (with `p.3` for paged documents): how a source is named on screen;
    name_only: `a.md:12-18`, where room is short."""
    page = f" p.{source.page}" if source.page else ""
    path = Path(short_path(source.path)).name if name_only else short_path(source.path)
    return f"{path}:{source.line_start}-{source.line_end}{page}"


def short_path(path: str) -> str:
    """The path with the home folder as ~, its last three parts at most; line breaks and tabs in a name
    shown as \\n, \\t (a name may hold them; a citation stays one line)."""
    p = Path(path.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    with contextlib.suppress(ValueError):
        p = Path("~") / p.relative_to(Path.home())
    parts = p.parts
    return str(Path("…", *parts[-3:])) if len(parts) > 3 else str(p)


class AnswerView(Vertical, can_focus=True):
    """One answer in one mode. `answer_id` is known once the engine has started it."""

    DEFAULT_CSS = """
    AnswerView { height: auto; padding: 0 1; border-left: thick $accent 40%; margin: 0 0 1 0; }
    AnswerView:focus { border-left: thick $accent; background: $boost; }
    AnswerView > .answer-head { color: $text-muted; }
    AnswerView > Markdown { margin: 0; padding: 0; }
    AnswerView > Markdown > * { margin: 0 0 1 0; }
    AnswerView > .answer-cites { color: $text-muted; }
    """

    @dataclass
    class Selected(Message):
        view: AnswerView

    def __init__(
        self,
        question: str,
        mode: str,
        text: str = "",
        citations: Sequence[Citation] = (),
        reads: Sequence[Read] = (),
        stopped: bool = False,
        withdrawn: Sequence[str] = (),
        reread_stopped: bool = False,
        pending: bool = False,
    ):
        super().__init__()
        self.question, self.mode, self.text = question, mode, text
        self.citations, self.reads, self.stopped = list(citations), list(reads), stopped
        self.answer_id: str | None = None
        self.conversation: Conversation | None = None  # the chat it is saved in
        self.running = pending  # asked, not finished
        self.stop_asked = False
        self.error: str | None = None
        self.withdrawn = list(withdrawn)  # the names of a memory answer taken back, once it is
        self.reread_stopped = reread_stopped  # ... and its re-read stopped before a word: it stands
        self._stream: MarkdownStream | None = None
        self._state = "waiting…" if pending else ""

    def compose(self) -> ComposeResult:
        yield Static(self._head(), classes="answer-head")
        yield Markdown(self.text)
        yield Static(self._cites(), classes="answer-cites")

    def on_focus(self) -> None:
        self.post_message(self.Selected(self))

    def state(self, text: str) -> None:
        self._state = text
        self.query_one(".answer-head", Static).update(self._head())

    def _head(self) -> Text:
        head = Text(self.mode, style="bold")
        if self.withdrawn:
            named = f"it named {some_of(self.withdrawn)}, in none of its sources"
            head.append(
                f" · withdrawn: {named}" if self.reread_stopped else f" · read again as text: {named}"
            )
        stopped = "stopped before its re-read as text" if self.reread_stopped else "stopped"
        state = stopped if self.stopped else self._state
        if self.error:
            state = f"error: {self.error}"
        if state:
            head.append(f" · {state}", style="italic")
        return head

    def _cites(self) -> Text:
        cites = Text()
        for c in self.citations:
            cites.append("\n" if cites else "")
            cites.append(f"[{c.n}]", style="bold")
            cites.append(f" {where(c, name_only=True)} · {c.share:.0%}")
        return cites

    def on_answer_started(self, message: AnswerStarted) -> None:
        self.answer_id = message.answer_id
        self.state("writing…" if not self.stop_asked else "stopping…")

    async def on_answer_piece(self, message: AnswerPiece) -> None:
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(Markdown))
        self.text += message.text
        await self._stream.write(message.text)

    async def _end_stream(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None

    async def on_answer_withdrawn(self, message: AnswerWithdrawn) -> None:
        await self._end_stream()
        self.text, self.withdrawn = "", message.names
        await self.query_one(Markdown).update("")
        self.state(self._state)

    async def on_answer_finished(self, message: AnswerFinished) -> None:
        await self._end_stream()
        self.running = False
        self.reread_stopped = bool(self.withdrawn and message.stopped and not self.text and message.text)
        self.text, self.citations, self.reads = message.text, message.citations, message.reads
        self.stopped, self.error = message.stopped, message.error
        await self.query_one(Markdown).update(self.text)
        self.query_one(".answer-cites", Static).update(self._cites())
        self.state("")
        if self.has_focus or not isinstance(self.screen.focused, AnswerView):
            self.post_message(self.Selected(self))  # the newest answer's sources, unless one is being read


class Turn(Vertical):
    """A question and the answers to it, side by side when it was asked in more than one mode."""

    DEFAULT_CSS = """
    Turn { height: auto; margin: 0 0 1 0; }
    Turn > .question { color: $text; text-style: bold; padding: 0 1; margin: 0 0 1 0;
                       border-left: thick $primary; }
    Turn > Horizontal { height: auto; }
    Turn > Horizontal > AnswerView { width: 1fr; }
    """

    def __init__(self, question: str, answers: Sequence[AnswerView]):
        super().__init__()
        self.question = question
        self._first = list(answers)

    def compose(self) -> ComposeResult:
        yield Static(Text(self.question), classes="question")
        with Horizontal():
            yield from self._first

    @property
    def answers(self) -> list[AnswerView]:
        return list(self.query(AnswerView))

    async def add(self, view: AnswerView) -> None:
        await self.query_one(Horizontal).mount(view)
