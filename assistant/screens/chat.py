"""The chat screen: the transcript, the sources of the selected answer, and the composer."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text as RichText
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from assistant import actions
from assistant.export import chat_markdown
from assistant.messages import AnswerFinished, AnswerPiece, AnswerStarted, AnswerWithdrawn
from assistant.screens.chats import ChatsScreen
from assistant.screens.dialogs import ConfirmScreen, PromptScreen
from assistant.screens.passage import PassageScreen, open_in_editor
from assistant.screens.reads import ReadsScreen
from assistant.widgets.answer import AnswerView, Turn
from assistant.widgets.composer import Composer
from assistant.widgets.sources import SourcesPanel
from assistant.widgets.status_bar import StatusBar
from engine.service.client import (
    Chat,
    Citation,
    Citations,
    Done,
    Read,
    Reads,
    ServiceError,
    Start,
    Text,
    Withdrawn,
)
from ingest.atomic import write_atomic
from ingest.printable import one_line

MODES = ("memory", "rag", "none")
NEW_CHAT = "New chat"
TITLE_CHARS = 200  # the engine's limit
WELCOME = (
    "Ask about the files in your watched folders (F3 adds one). Answers name their sources: "
    "Ctrl+S moves to them, Enter shows a passage, o opens it in $EDITOR. F1 lists every key."
)


@dataclass
class Conversation:
    """The chat answers are saved in: none until its first answer starts (then the engine has made it);
    the answers asked meanwhile wait on `creating`, so that they all land in that one chat."""

    chat_id: int | None = None
    creating: threading.Lock = field(default_factory=threading.Lock)


class ChatScreen(Screen):
    SCOPE = actions.CHAT
    INNER_SCOPES = (actions.SOURCES,)
    BINDINGS = actions.bindings(actions.CHAT)

    mode: reactive[str] = reactive("memory")
    title_text: reactive[str] = reactive(NEW_CHAT)

    def __init__(self) -> None:
        super().__init__()
        self.conversation = Conversation()  # the chat on screen
        self.queued: list[AnswerView] = []  # asked while the engine was not ready
        self.shown: AnswerView | None = None  # whose sources the panel shows

    @property
    def chat_id(self) -> int | None:
        return self.conversation.chat_id

    def compose(self) -> ComposeResult:
        yield Static(id="chat-head")
        with Horizontal(id="chat-body"):
            with VerticalScroll(id="transcript"):
                yield Static(WELCOME, id="welcome")
            yield SourcesPanel(id="sources")
        yield Composer(id="composer")
        yield StatusBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.watch(self.app, "ready", self._engine_ready, init=False)
        self.query_one("#transcript", VerticalScroll).anchor()
        self.query_one(Composer).focus()
        self._head()

    def watch_mode(self) -> None:
        self._head()

    def watch_title_text(self) -> None:
        self._head()

    def _head(self) -> None:
        if self.is_attached:
            keys = self.app.keys_of("mode")
            self.query_one("#chat-head", Static).update(
                RichText.assemble(
                    (self.title_text, "bold"),
                    "   mode: ",
                    (f" {self.mode} ", "bold reverse"),
                    f"  ({keys} switches)",
                )
            )

    # asking

    async def on_composer_submitted(self, message: Composer.Submitted) -> None:
        await self.ask(message.text, self.mode)

    async def ask(self, question: str, mode: str, turn: Turn | None = None) -> None:
        view = AnswerView(question, mode, pending=True)
        view.conversation = self.conversation
        if turn is None:
            if self.chat_id is None and self.title_text == NEW_CHAT:
                self.title_text = one_line(question)[:60]
            await self.query_one("#transcript").mount(Turn(question, [view]))
            self.query_one("#welcome").display = False
        else:
            await turn.add(view)
        if self.app.ready:
            self.answer(view)
        else:
            view.state("waiting for the engine…")
            self.queued.append(view)

    def _engine_ready(self, ready: bool) -> None:
        """Questions typed while the engine loaded are asked now (whichever screen is in front)."""
        if ready:
            queued, self.queued = self.queued, []
            for view in queued:
                self.answer(view)

    @work(thread=True, group="answers")
    def answer(self, view: AnswerView) -> None:
        """Stream one answer into its view; the engine saves it in the view's chat (a new one if none
        yet). A new chat opened meanwhile leaves it to finish in its own chat, off screen."""
        chat = view.conversation
        cites: list[Citation] = []
        reads: list[Read] = []
        creating = chat.chat_id is None and chat.creating.acquire()
        answer_id = None
        cancelled = False
        try:
            client = self.app.engine_client()
            with client.ask(view.question, view.mode, chat.chat_id) as stream:
                for event in stream:
                    if isinstance(event, Start):
                        answer_id, chat.chat_id = event.id, event.chat_id
                        self.app.answering.add(answer_id)
                        if creating:
                            chat.creating.release()
                            creating = False
                        self._deliver(view, AnswerStarted(event.id))
                    if view.stop_asked and answer_id is not None and not cancelled:
                        # an Esc before the answer had its handle: stop it now; the stream ends with done
                        client.cancel(answer_id)
                        cancelled = True
                    if isinstance(event, Text):
                        self._deliver(view, AnswerPiece(event.text))
                    elif isinstance(event, Withdrawn):
                        self._deliver(view, AnswerWithdrawn(event.names))
                    elif isinstance(event, Reads):
                        reads = event.reads
                    elif isinstance(event, Citations):
                        cites = event.citations
                    elif isinstance(event, Done):
                        self._deliver(view, AnswerFinished(event.text, cites, reads, event.stopped))
        except ServiceError as exc:
            self._deliver(view, AnswerFinished(view.text, cites, reads, view.stop_asked, error=str(exc)))
            self.app.lost(exc)
        finally:
            self.app.answering.discard(answer_id)
            if creating:
                chat.creating.release()

    def _deliver(self, view: AnswerView, message: Message) -> None:
        """Hand a worker's message to its view on the UI thread, unless the view has left the screen."""

        def deliver() -> None:
            if view.is_attached:
                view.post_message(message)

        self.app.call_from_thread(deliver)

    def on_answer_view_selected(self, message: AnswerView.Selected) -> None:
        self.shown = message.view
        self.query_one(SourcesPanel).show(message.view.citations, message.view.mode)

    def _views(self) -> list[AnswerView]:
        return list(self.query(AnswerView))

    def _selected(self) -> AnswerView | None:
        """The focused answer, else the one whose sources are shown, else the latest."""
        focused = self.focused if isinstance(self.focused, AnswerView) else None
        views = self._views()
        return focused or (self.shown if self.shown in views else None) or (views[-1] if views else None)

    # actions (see assistant/actions.py)

    def action_stop(self) -> None:
        for view in self._views():
            if not view.running or view.stop_asked:
                continue
            view.stop_asked = True
            view.state("stopping…")
            if view in self.queued:
                self.queued.remove(view)
                view.post_message(AnswerFinished("", [], [], stopped=True))
            elif view.answer_id is not None:
                self.cancel(view.answer_id)

    @work(thread=True, group="cancel")
    def cancel(self, answer_id: str) -> None:
        try:
            self.app.engine_client().cancel(answer_id)
        except ServiceError as exc:
            self.app.lost(exc)

    def action_cycle_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self.notify(f"Answers now use {self.mode} mode.", timeout=2)

    async def action_compare(self) -> None:
        turns = list(self.query(Turn))
        if not turns:
            self.notify("Ask a question first; then this asks it again in another mode.", timeout=4)
            return
        turn = turns[-1]
        used = {v.mode for v in turn.answers}
        start = MODES.index(self.mode)  # the mode chosen now first, then the ones after it
        others = [m for i in range(3) if (m := MODES[(start + i) % 3]) not in used]
        if not others:
            self.notify("This question has an answer in every mode.", timeout=4)
            return
        await self.ask(turn.question, others[0], turn)

    async def action_new_chat(self) -> None:
        await self.query_one("#transcript").remove_children(Turn)
        self.query_one("#welcome").display = True
        self.conversation, self.shown, self.title_text = Conversation(), None, NEW_CHAT
        self.queued = []
        self.query_one(SourcesPanel).show([], self.mode)
        self.query_one(Composer).focus()

    def action_chats(self) -> None:
        self.app.push_screen(ChatsScreen(), self._open_chat)

    def _open_chat(self, chat_id: int | None) -> None:
        if chat_id is not None:
            self.load_chat(chat_id)

    @work(thread=True, exclusive=True, group="chat")
    def load_chat(self, chat_id: int) -> None:
        try:
            chat = self.app.engine_client().chat(chat_id)
        except ServiceError as exc:
            self.app.lost(exc)
            return
        if not get_current_worker().is_cancelled:  # another chat was asked for meanwhile
            self.app.call_from_thread(self._show_chat, chat)

    async def _show_chat(self, chat: Chat) -> None:
        await self.action_new_chat()
        self.conversation, self.title_text = Conversation(chat.id), one_line(chat.title)
        turns: list[tuple[str, list[AnswerView]]] = []  # a question asked again right after: a comparison
        question = ""
        for m in chat.messages:
            if m.role == "user":
                question = m.text
                continue
            withdrawn = m.withdrawn.names if m.withdrawn else ()
            view = AnswerView(
                question,
                m.mode or "memory",
                m.text,
                m.citations,
                m.reads,
                m.stopped,
                withdrawn,
                m.reread_stopped,
            )
            if turns and turns[-1][0] == question and len(turns[-1][1]) < len(MODES):
                turns[-1][1].append(view)
            else:
                turns.append((question, [view]))
        if turns:
            self.query_one("#welcome").display = False
            await self.query_one("#transcript").mount_all(Turn(q, views) for q, views in turns)
            self.query_one("#transcript", VerticalScroll).scroll_end(animate=False)
            last = self._views()[-1]
            self.on_answer_view_selected(AnswerView.Selected(last))

    def action_rename_chat(self) -> None:
        chat_id = self.chat_id
        if chat_id is None:
            self.notify("This chat has no answer yet, so nothing is saved to rename.", timeout=4)
            return
        prompt = PromptScreen("Rename this chat", self.title_text, TITLE_CHARS)
        self.app.push_screen(prompt, lambda title: self.rename(chat_id, title))

    @work(thread=True, group="rename")
    def rename(self, chat_id: int, title: str | None) -> None:
        """title: None when the dialog was cancelled, "" when it was emptied."""
        if title is None:
            return
        if not title:
            self.notify("A chat's title cannot be empty; the name stays.", timeout=4)
            return
        try:
            renamed = self.app.engine_client().rename_chat(chat_id, title)
        except ServiceError as exc:
            self.app.lost(exc)
            return
        if self.chat_id == chat_id:
            self.app.call_from_thread(setattr, self, "title_text", renamed.title)

    def action_delete_chat(self) -> None:
        chat_id = self.chat_id
        if chat_id is None:
            self.notify("This chat is not saved yet.", timeout=4)
            return
        question = f"Delete the chat “{self.title_text}”?"
        self.app.push_screen(ConfirmScreen(question), lambda sure: self.delete(chat_id) if sure else None)

    @work(thread=True, group="delete")
    def delete(self, chat_id: int) -> None:
        try:
            self.app.engine_client().delete_chat(chat_id)
        except ServiceError as exc:
            self.app.lost(exc)
            return
        if self.chat_id == chat_id:
            self.app.call_from_thread(self.action_new_chat)
        self.notify("Chat deleted.", timeout=3)

    def action_export_chat(self) -> None:
        if self.chat_id is None:
            self.notify("This chat is not saved yet.", timeout=4)
            return
        default = f"~/memory3-chat-{self.chat_id}.md"
        self.app.push_screen(PromptScreen("Export this chat as Markdown to", default), self._export_to)

    def _export_to(self, target: str | None) -> None:
        """An existing file is replaced only after a yes."""
        if not target:
            return
        path = Path(os.path.expanduser(target)).absolute()  # `~nobody/x` stays as typed: unwritable
        if path.exists():
            question = f"{path} exists. Replace it?"
            self.app.push_screen(ConfirmScreen(question), lambda yes: self.export(path) if yes else None)
        else:
            self.export(path)

    @work(thread=True, group="chat")
    def export(self, path: Path) -> None:
        if self.chat_id is None:
            return
        try:
            markdown = chat_markdown(self.app.engine_client().chat(self.chat_id))
            write_atomic(path, markdown.encode())
        except ServiceError as exc:
            self.app.lost(exc)
            return
        except OSError as exc:
            self.app.call_from_thread(
                self.notify, f"{path} cannot be written ({exc.strerror}).", severity="error", markup=False
            )
            return
        self.app.call_from_thread(self.notify, f"Exported to {path}.", timeout=5, markup=False)

    def action_copy_answer(self) -> None:
        view = self._selected()
        if view is None or not view.text:
            self.notify("No answer to copy yet.", timeout=3)
            return
        self.app.copy_to_clipboard(view.text)
        self.notify("Answer copied (where the terminal allows the clipboard).", timeout=3)

    def action_reads(self) -> None:
        view = self._selected()
        if view is None:
            self.notify("Ask a question first.", timeout=3)
            return
        self.app.push_screen(ReadsScreen(view.question, view.mode, view.reads))

    def action_focus_sources(self) -> None:
        self.query_one(SourcesPanel).focus()

    def action_passage(self) -> None:  # from the palette: the panel's own keys run on the panel
        self.query_one(SourcesPanel).action_passage()

    def action_open_source(self) -> None:
        self.query_one(SourcesPanel).action_open_source()

    def on_sources_panel_chosen(self, message: SourcesPanel.Chosen) -> None:
        if message.how == "open":
            open_in_editor(self.app, message.citation.path, message.citation.line_start)
        else:
            self.app.push_screen(PassageScreen(message.citation))
