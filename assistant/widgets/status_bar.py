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

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self, *_: object) -> None:
        """The engine's state, what it runs and holds, and the privacy note, which is always shown in
        full: on a narrow terminal the model's name goes first, then the device, then the memory count."""
        app = self.app
        if app.ready:
            state: tuple[str, str] = ("● ready", "bold green")
        elif app.engine == "down":
            state = ("✖ engine down", "bold red")
        else:
            state = (f"◌ {app.engine}", "yellow")
        parts: list[str] = []  # least needed first
        health, latest = app.health, app.latest
        if health is not None and app.ready:
            parts += [
                Path(health.model).stem if health.model else "default model",
                (health.device or "cpu").upper(),
            ]
        if latest is not None and app.ready:
            parts += [f"{latest.bank.get('memories', 0):,} memories", ingest_state(latest)]
        room = self.size.width - 2 - len(state[0]) - len(f" · {OFFLINE}")
        while parts and sum(len(p) + 3 for p in parts) > room:
            parts.pop(0)
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(*state)
        for part in parts:
            line.append(f" · {part}")
        line.append(f" · {OFFLINE}", "italic")
        self.update(line)


def ingest_state(latest: StatusChanged) -> str:
    """'ingest idle', or what waits: 'ingest: 12 files, 340 memories to write'."""
    s = latest.status
    if s.scanning is not None:
        return f"scanning: {s.scanning.files_found:,} files found"
    files, memories = s.documents.pending, s.chunks_pending
    if s.background == "idle" and not files and not memories:
        return "ingest idle"
    waiting = [f"{files:,} files" if files else "", f"{memories:,} memories to write" if memories else ""]
    word = "paused" if s.background == "paused" else "ingest"
    return f"{word}: {', '.join(w for w in waiting if w) or 'working'}"
