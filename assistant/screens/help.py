"""F1: every key, from the action table, as the keymap in config.toml has set them."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

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
    HelpScreen > Vertical { width: 95%; max-width: 110; height: 90%; border: thick $primary;
                            background: $surface; }
    HelpScreen Label { padding: 0 1; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Keys[/b] · Ctrl+P finds any action by name")
            with VerticalScroll():
                yield Static(self._table())
            yield Label(r"[dim]Rebind by id in config.toml \[keys] · Escape closes[/dim]")

    def _table(self) -> Table:
        """One section per place a key works; descriptions wrap, so nothing is cut on a narrow screen."""
        table = Table(box=None, expand=True, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("key", no_wrap=True)
        table.add_column("id", no_wrap=True, style="dim")
        table.add_column("what it does", ratio=1)
        for scope, name in SCOPE_NAMES.items():
            table.add_section()
            table.add_row(f"[b u]{name}[/]", "", "")
            for action in (a for a in actions.ACTIONS if a.scope == scope):
                table.add_row(self.app.keys_of(action.id), action.id, action.help)
        return table
