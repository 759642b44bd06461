"""The line at the bottom of every screen: the engine's state, model, device, memories, ingest, privacy."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from assistant.messages import StatusChanged

OFFLINE = "offline: nothing leaves this machine"


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "engine", self._redraw)
        self.watch(self.app, "ready", self._redraw)
        self.watch(self.app, "latest", self._redraw)

    def _redraw(self, *_: object) -> None:
        app = self.app
        line = Text(no_wrap=True, overflow="ellipsis")
        if app.ready:
            line.append("● ready", "bold green")
        elif app.engine == "down":
            line.append("✖ engine down", "bold red")
        else:
            line.append(f"◌ {app.engine}", "yellow")
        health = app.health
        if health is not None and app.ready:
            line.append(f" · {Path(health.model).stem if health.model else 'default model'}")
            line.append(f" · {(health.device or 'cpu').upper()}")
        latest = app.latest
        if latest is not None and app.ready:
            line.append(f" · {latest.bank.get('memories', 0):,} memories")
            line.append(f" · {ingest_state(latest)}")
        line.append(f" · {OFFLINE}", "italic")
        self.update(line)


def ingest_state(latest: StatusChanged) -> str:
    """'ingest idle', or what waits: 'ingest: 12 files, 340 memories to write'."""
    s = latest.status
    files, memories = s.documents.pending, s.chunks_pending
    if s.background == "idle" and not files and not memories:
        return "ingest idle"
    waiting = [f"{files:,} files" if files else "", f"{memories:,} memories to write" if memories else ""]
    word = "paused" if s.background == "paused" else "ingest"
    return f"{word}: {', '.join(w for w in waiting if w) or 'working'}"
