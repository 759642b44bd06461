"""The bank screen: what the memory bank holds, what it takes on disk, and how much of its budget is used.

The figures come with every status reading (`/v1/bank/stats`); `r` reads them again at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar, Static

from assistant import actions
from assistant.messages import StatusChanged
from assistant.widgets.status_bar import StatusBar
from engine.service.client import ServiceError

LATER = "Export and import: coming with bank files (m3 bank export)."
NEARLY_FULL = 0.9
FULL_HINT = (
    "The bank is nearly full: memories past its budget are written only when first needed. "
    "[engine] bank_budget_gb in config.toml raises it."
)


def human_bytes(n: int) -> str:
    """Bytes in binary units: '512 B', '1.5 KiB', '12.3 MiB', '2.0 GiB'."""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:,.1f} {unit}"


class BankScreen(Screen):
    SCOPE = actions.BANK
    BINDINGS = actions.bindings(actions.BANK)

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Static("[b]Memory bank[/b]", id="bank-head")
        with VerticalScroll(id="bank-body"):
            yield Static("Waiting for the engine…", id="bank-figures")
            with Horizontal(id="bank-budget"):
                yield Label("Budget used")
                yield ProgressBar(show_eta=False)
            yield Static(FULL_HINT, id="bank-full", markup=False)
            yield Static(LATER, id="bank-later")
        yield Footer(compact=True)
        yield StatusBar()

    def on_mount(self) -> None:
        self._show()

    def on_screen_resume(self) -> None:
        """Back on this screen: the last reading at once (readings reach the screens in front only)."""
        if self.app.latest is not None:
            self.stats = self.app.latest.bank
            self._show()

    def on_status_changed(self, message: StatusChanged) -> None:
        self.stats = message.bank
        self._show()

    def action_refresh(self) -> None:
        if not self.app.ready or self.app.client is None:
            self.notify("The engine is not ready yet; try again in a moment.", timeout=3)
            return
        self.refresh_stats()

    @work(thread=True, exclusive=True, group="bank")
    def refresh_stats(self) -> None:
        try:
            stats = self.app.client.bank_stats()
        except ServiceError as exc:
            self.app.lost(exc)
            return
        self.app.call_from_thread(self._read, stats)

    def _read(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self._show()
        self.notify("Bank statistics read again.", timeout=2)

    def _show(self) -> None:
        stats = self.stats
        budget = self.query_one("#bank-budget")
        budget.display = stats is not None
        self.query_one("#bank-full").display = False
        if stats is None:
            return
        self.query_one("#bank-figures", Static).update(self._figures(stats))
        live, limit = stats["bytes_live"], stats["budget_bytes"]
        self.query_one(ProgressBar).update(total=max(limit, 1), progress=min(live, limit))
        self.query_one("#bank-full").display = limit > 0 and live / limit >= NEARLY_FULL

    def _figures(self, stats: dict[str, Any]) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", width=12)
        grid.add_column()
        health = self.app.health
        model = Path(health.model).name if health is not None and health.model else "the default model"
        device = (health.device or "cpu").upper() if health is not None else "?"
        live, disk = stats["bytes_live"], stats["bytes_on_disk"]
        grid.add_row("Memories", f"{stats['memories']:,}")
        grid.add_row("Chunks", f"{stats['chunks']:,} passages of your files, one memory each")
        grid.add_row("Profile", Text(str(stats["profile"])))  # names are shown as they are, never as markup
        grid.add_row("Model", Text(f"{model} on {device}"))
        grid.add_row("Live", human_bytes(live))
        segments = stats["segments"]
        grid.add_row("On disk", f"{human_bytes(disk)} in {segments:,} segment{'s' * (segments != 1)}")
        if disk > live:
            grid.add_row("", Text(f"{human_bytes(disk - live)} of it dropped memories", "dim"))
        grid.add_row("Budget", human_bytes(stats["budget_bytes"]))
        for i, (name, figures) in enumerate(sorted(stats["by_profile"].items())):
            grid.add_row(
                "" if i else "By profile",
                Text(f"{name}: {figures['records']:,} memories, {human_bytes(figures['bytes'] or 0)}"),
            )
        return grid
