"""Every saved chat, searchable across titles and messages; Enter opens one."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.service.client import ServiceError
from ingest.printable import one_line


class ChatsScreen(ModalScreen[int | None]):
    """Dismisses with the chosen chat's id, or None."""

    DEFAULT_CSS = """
    ChatsScreen { align: center middle; }
    ChatsScreen > Vertical { width: 90%; height: 85%; border: thick $primary; background: $surface; }
    ChatsScreen OptionList { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("down", "to_list", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Chats[/b] · type to search · Enter opens · Escape closes")
            yield Input(placeholder="Search chats…")
            yield OptionList()

    def on_mount(self) -> None:
        self.search("")

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self.search(event.value)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        """Enter in the search box opens the first chat found."""
        options = self.query_one(OptionList)
        if options.option_count and not options.get_option_at_index(0).disabled:
            self.dismiss(int(options.get_option_at_index(0).id))

    def action_to_list(self) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            options.focus()
            options.highlighted = 0

    @work(thread=True, exclusive=True)
    def search(self, query: str) -> None:
        try:
            chats = self.app.engine_client().chats(query.strip() or None)
        except ServiceError as exc:
            self.app.lost(exc)
            return
        if not get_current_worker().is_cancelled:  # a newer search is on its way: its results win
            self.app.call_from_thread(self._show, chats, query)

    def _show(self, chats: list, query: str) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        if not chats:
            note = f"No chat mentions “{query}”." if query.strip() else "No chats yet: ask something first."
            options.add_option(Option(Text(note, style="italic"), disabled=True))
            return
        for chat in chats:
            label = Text(one_line(chat.title), style="bold")  # a title saved before titles were one line
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.updated_at))
            label.append(f"  {when} · {chat.messages} messages", style="dim")
            if chat.match:
                label.append(f"\n  {chat.match}", style="italic")
            options.add_option(Option(label, id=str(chat.id)))

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))
