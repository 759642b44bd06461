"""A bank file on its way (export, inspection, import): its stage, a progress bar and a Cancel button; and
the sentences that say what a bank file holds, what importing it does, and what was done.

The bank screen runs the stream in a worker and feeds its `BankProgress` events here; Cancel (or Esc on
the screen) asks the screen to hang up, which cancels the work on the service.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, ProgressBar

from engine.service.client import BankProgress, BankReport, Exported

BYTE_STAGES = ("copying", "checking")  # counted in bytes; the other stages count records


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


def stage_line(event: BankProgress) -> str:
    """'checking: 1.2 MiB of 3.4 MiB', 'writing memories: 120 of 300'."""
    if event.stage in BYTE_STAGES:
        return f"{event.stage}: {human_bytes(event.done)} of {human_bytes(event.total)}"
    return f"{event.stage}: {event.done:,} of {event.total:,}"


def exported_text(done: Exported) -> str:
    said = (
        f"Wrote {done.path} ({human_bytes(done.bytes)}): {done.documents:,} documents, {done.chunks:,} "
        f"chunks, {done.memories:,} memories, {done.vectors:,} vectors."
    )
    return "\n".join([said] + [f"Left out: {sentence}" for sentence in done.skipped])


def _get(table: Any, *keys: str) -> Any:
    """A manifest's field, '?' where a (hostile or older) file lacks it."""
    for key in keys:
        if not isinstance(table, dict) or key not in table:
            return "?"
        table = table[key]
    return table


def report_text(path: str, r: BankReport) -> Text:
    """What a bank file holds and what importing it does (or did): its manifest in short, the verdict's
    reasons, and the plan. Names come from the file, so they are never read as markup."""
    m, v, p = r.manifest, r.verdict, r.plan
    counts = _get(m, "counts")
    scope = f"{_get(m, 'scope', 'kind')}" + (f" {m['scope']['value']}" if _get(m, "scope", "value") else "")
    lines = [
        (f"{path} ({human_bytes(r.file_bytes)})", "bold"),
        f"Made by {_get(m, 'producer')} on {_get(m, 'created')}; scope: {scope}.",
        f"Holds {_get(counts, 'documents')} documents, {_get(counts, 'chunks')} chunks, "
        f"{_get(counts, 'memories')} memories, {_get(counts, 'vectors')} vectors.",
        f"Model: {_get(m, 'model', 'name')}; profile {_get(m, 'profile', 'name')}; "
        f"embedder {_get(m, 'embedder', 'name')}.",
        "",
        ("Verdict", "bold"),
    ]
    if not v.reasons:
        lines.append("Compatible: its memories and vectors are used as they are.")
    lines += [f"· {reason}" for reason in v.reasons]
    new = f" (new: {', '.join(p.new_collections)})" if p.new_collections else ""
    lines += [
        "",
        ("Imported" if r.imported else "Importing it", "bold"),
        f"Collections: {', '.join(p.collections) or 'none'}{new}.",
        f"Documents: {p.documents_new:,} new, {p.documents_replaced:,} replaced, "
        f"{p.documents_unchanged:,} unchanged.",
        f"Memories: {p.memories_import:,} from the file, {p.memories_present:,} already here, "
        f"{p.memories_write:,} to write here.",
        f"Vectors: {p.vectors_import:,} from the file, {p.vectors_present:,} already here, "
        f"{p.vectors_embed:,} to embed here.",
    ]
    if r.pending:
        lines.append("The engine is still applying its memories in the background (the status bar shows it).")
    text = Text()
    for i, line in enumerate(lines):
        words, style = (line, None) if isinstance(line, str) else line
        text.append(("\n" if i else "") + words, style)
    return text


class BankTransfer(Vertical):
    """Hidden until `start`; `show(event)` moves the bar; `stop()` hides it again."""

    DEFAULT_CSS = """
    BankTransfer { height: auto; margin-top: 1; padding: 0 1; border: round $primary; display: none; }
    BankTransfer Horizontal { height: auto; }
    BankTransfer ProgressBar { width: 1fr; padding-top: 1; }
    BankTransfer Bar { width: 1fr; }
    BankTransfer Button { margin-left: 2; }
    """

    def compose(self) -> ComposeResult:
        yield Label(id="transfer-title", markup=False)
        with Horizontal():
            yield ProgressBar(show_eta=False)
            yield Button("Cancel", id="transfer-cancel", variant="error", compact=True)
        yield Label(id="transfer-stage", markup=False)

    def start(self, title: str) -> None:
        self.query_one("#transfer-title", Label).update(title)
        self.query_one("#transfer-stage", Label).update("starting…")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.query_one(Button).disabled = False
        self.display = True

    def show(self, event: BankProgress) -> None:
        self.query_one(ProgressBar).update(total=max(event.total, 1), progress=min(event.done, event.total))
        self.query_one("#transfer-stage", Label).update(stage_line(event))

    def cancelling(self) -> None:
        self.query_one("#transfer-stage", Label).update("cancelling…")
        self.query_one(Button).disabled = True

    def stop(self) -> None:
        self.display = False
