"""F1: every key, from the action table, as the keymap in config.toml has set them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from assistant import actions

SCOPE_NAMES = {
    actions.APP: "everywhere",
    actions.CHAT: "chat",
    actions.SOURCES: "sources panel",
    actions.FOLDERS: "folders",
    actions.BANK: "bank",
}


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90%; height: 90%; border: thick $primary; background: $surface; }
    HelpScreen DataTable { height: 1fr; }
    HelpScreen Label { padding: 0 1; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                "[b]memory3 keys[/b] · Ctrl+P finds any action by name · rebind in config.toml [keys]"
            )
            yield DataTable(cursor_type="row", zebra_stripes=True)
            yield Label("[dim]Escape closes[/dim]")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("where", "key", "action", "id", "what it does")
        for action in actions.ACTIONS:
            keys = self.app.keys_of(action.id)
            table.add_row(SCOPE_NAMES[action.scope], keys, action.title, action.id, action.help)
