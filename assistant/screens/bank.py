"""The bank screen: what the memory bank holds, what it takes on disk, and how much of its budget is used;
export of the bank to a bank file, and import of one.

The figures come with every status reading (`/v1/bank/stats`); `r` reads them again at once. An export
(`e`) or an import (`i`: the file is checked first, and what it would change is shown before anything
does) streams its progress from a worker; Esc or Cancel hangs up, which cancels it on the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, ProgressBar, Static
from textual.worker import get_current_worker

from assistant import actions
from assistant.bank_text import exported_text, report_text
from assistant.messages import BankEnded, BankStep, StatusChanged
from assistant.screens.bank_dialogs import BankPathScreen, BankPlanScreen, Export
from assistant.screens.dialogs import ConfirmScreen
from assistant.units import human_bytes, short_path
from assistant.widgets.bank_transfer import BankTransfer
from assistant.widgets.status_bar import StatusBar
from engine.service.client import BankProgress, Exported, ServiceError, ServiceUnreachable

NEARLY_FULL = 0.9
FULL_HINT = (
    "The bank is nearly full: memories past its budget are written only when first needed. "
    "[engine] bank_budget_gb in config.toml raises it."
)
TITLES = {"export": "Exporting the bank to {}", "inspect": "Checking {}", "import": "Importing {}"}
CANCELLED = {
    "export": "The export was cancelled; no file was written.",
    "inspect": "The check was cancelled; nothing was changed.",
    "import": (
        "The import was cancelled; unless the engine had just committed it (Folders would list its"
        " collection), nothing was changed."
    ),
    "committed": (
        "The import was already committed: its documents are in, and the engine applies the rest of its"
        " memories and vectors in the background."
    ),
}


class BankScreen(Screen):
    SCOPE = actions.BANK
    BINDINGS = actions.bindings(actions.BANK)

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, Any] | None = None
        self.job: str | None = None  # the bank stream running: export, inspect or import
        self.cancelled = False  # Esc or Cancel: the worker hangs up at its next event
        self.committed = False  # the import running has committed (it is applying)

    def compose(self) -> ComposeResult:
        yield Static("[b]Memory bank[/b]", id="bank-head")
        with VerticalScroll(id="bank-body"):
            yield Static("Waiting for the engine…", id="bank-figures")
            with Horizontal(id="bank-budget"):
                yield Label("Budget used")
                yield ProgressBar(show_eta=False)
            yield Static(FULL_HINT, id="bank-full", markup=False)
            yield BankTransfer(id="bank-transfer")
            yield Static(id="bank-last")
        yield Footer(compact=True)
        yield StatusBar()

    def on_mount(self) -> None:
        self.query_one("#bank-last").display = False
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
        self.refresh_stats("Bank statistics read again.")

    @work(thread=True, exclusive=True, group="bank")
    def refresh_stats(self, said: str | None = None) -> None:
        try:
            stats = self.app.engine_client().bank_stats()
        except ServiceError as exc:
            self.app.lost(exc)
            return
        self.app.call_from_thread(self._read, stats, said)

    def _read(self, stats: dict[str, Any], said: str | None) -> None:
        self.stats = stats
        self._show()
        if said:
            self.notify(said, timeout=2)

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
        grid.add_row("Chunks", f"{stats['chunks']:,} passages of your files")
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

    # bank files (see assistant/actions.py)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc cancels only while a bank file is written or read (and is in the footer only then)."""
        return self.job is not None if action == "cancel_bank" else True

    def _can_start(self) -> bool:
        if not self.app.ready or self.app.client is None:
            self.notify("The engine is not ready yet; try again in a moment.", timeout=3)
        elif self.job is not None:
            self.notify("A bank file is being written or read; wait for it, or Esc cancels it.", timeout=4)
        else:
            return True
        return False

    def action_export_bank(self) -> None:
        if self._can_start():
            self.app.push_screen(BankPathScreen(importing=False), self._export_to)

    def _export_to(self, export: Export | None) -> None:
        if export is None:
            return
        path, options = export.path, export.options()
        if not Path(path).exists():
            self._start("export", path, options)
            return
        question = f"{short_path(path, 60)} exists. Replace it with this export?"
        replace = options | {"replace": True}
        self.app.push_screen(
            ConfirmScreen(question), lambda sure: sure and self._start("export", path, replace)
        )

    def action_import_bank(self) -> None:
        if self._can_start():
            self.app.push_screen(BankPathScreen(importing=True), self._inspect)

    def _inspect(self, path: str | None) -> None:
        if path is not None:
            self._start("inspect", path)

    def _start(self, job: str, path: str, options: dict[str, Any] | None = None) -> None:
        """Run `job` on the bank file at `path`; an export's `options` are `Client.export_bank`'s keywords."""
        self.job, self.cancelled, self.committed = job, False, False
        self.refresh_bindings()
        self.query_one(BankTransfer).start(TITLES[job].format(short_path(path, 60)))
        self.transfer(job, path, options or {})

    @on(Button.Pressed, "#transfer-cancel")
    def action_cancel_bank(self) -> None:
        if self.job is not None and not self.cancelled:
            self.cancelled = True
            self.query_one(BankTransfer).cancelling()

    @work(thread=True, exclusive=True, group="bank-transfer")
    def transfer(self, job: str, path: str, options: dict[str, Any]) -> None:
        """Follow one bank stream; cancelled (Esc, or the app quitting), it leaves the stream at the next
        event, and closing it cancels the work on the service."""
        worker = get_current_worker()
        result: Any = None
        error: ServiceError | None = None
        try:
            client = self.app.engine_client()
            if job == "export":
                stream = client.export_bank(path, **options)
            else:
                stream = (client.inspect_bank if job == "inspect" else client.import_bank)(path)
            with stream:
                for event in stream:  # each event is told, so the screen knows what happened
                    if isinstance(event, BankProgress):
                        self.post_message(BankStep(event))
                    else:
                        result = event
                    if worker.is_cancelled or self.cancelled:
                        break
        except ServiceError as exc:
            error = exc
        if result is None and error is None and not self.cancelled and not worker.is_cancelled:
            error = ServiceError("The engine service ended the stream without its report.")
        self.post_message(BankEnded(job, path, result, None if self.cancelled else error))

    def on_bank_step(self, message: BankStep) -> None:
        if message.event.stage.startswith(("applying", "embedding")):
            self.committed = True  # an import applies only what it has committed
        if self.job is not None and not self.cancelled:
            self.query_one(BankTransfer).show(message.event)

    def on_bank_ended(self, message: BankEnded) -> None:
        job, path, result, error = message.job, message.path, message.result, message.error
        self.job = None
        self.refresh_bindings()
        self.query_one(BankTransfer).stop()
        if isinstance(error, ServiceUnreachable):
            self.app.lost(error)
        elif error is not None:
            self._last(Text(str(error), "red"), severity="error")
        elif result is None:
            self._last(Text(CANCELLED["committed" if self.committed else job]), severity="warning")
        elif isinstance(result, Exported):
            self._last(Text(exported_text(result)))
            self.refresh_stats()
        elif job == "inspect":
            self.app.push_screen(
                BankPlanScreen(path, result), lambda yes: yes and self._start("import", path)
            )
        else:
            self._last(report_text(path, result), f"Imported {Path(path).name}.")
            self.refresh_stats()

    def _last(self, text: Text, notice: str | None = None, severity: str = "information") -> None:
        """What the last bank file did (or why it did not) stays on the screen; a notice says it too."""
        last = self.query_one("#bank-last", Static)
        last.update(text)
        last.display = True
        self.notify(notice or text.plain, severity=severity, timeout=8, markup=False)
        self.query_one("#bank-body").scroll_end(animate=False)
