"""How far the ingest is: a progress bar, the counts, and an estimate of the time left.

The numbers come from a scan's stream while one runs, else from the status every couple of seconds: both
give catalog-wide counts (files read, memories written, what waits), so one tracker serves both. The time
left comes from the rates of files read and memories written, measured here; until a rate is known the
estimate says so rather than guess.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from assistant.units import short_path
from engine.service.client import MemoryProgress, Scanning, ScanProgress, Status

ESTIMATING = "estimating…"
RATE_SAMPLES = 30  # a rate is measured over the last changes, so it follows a machine that speeds up


@dataclass(frozen=True)
class Reading:
    """One look at the ingest, catalog-wide."""

    files_done: int  # read, or given up on (failed)
    files_pending: int
    files_failed: int
    chunks: int  # of the files read: each one memory to write
    memories_done: int
    memories_pending: int
    paused: bool = False  # the background work waits for an answer in progress
    walk: Scanning | None = None  # a scan walking the folders: where, and what it found so far

    @classmethod
    def of_status(cls, s: Status) -> Reading:
        d = s.documents
        return cls(
            d.parsed + d.failed,
            d.pending,
            d.failed,
            s.chunks,
            s.chunks - s.chunks_pending,
            s.chunks_pending,
            s.background == "paused",
            s.scanning,
        )

    @classmethod
    def of_scan(cls, p: ScanProgress) -> Reading:
        return cls(
            p.files_parsed + p.files_failed,
            p.files_pending,
            p.files_failed,
            p.chunks,
            p.chunks - p.chunks_pending,
            p.chunks_pending,
            walk=p.scanning,
        )

    def writing(self, m: MemoryProgress) -> Reading:
        """This reading (a scan's last before its memories) once the scan wrote `m.done` of `m.total`."""
        return Reading(
            self.files_done,
            self.files_pending,
            self.files_failed,
            self.chunks,
            self.memories_done + m.done,
            max(m.total - m.done, 0),
        )

    @property
    def busy(self) -> bool:
        return bool(self.files_pending or self.memories_pending or self.walk)

    def expected_memories(self) -> float:
        """Memories still to write, counting those of files not read yet at the average chunks a file."""
        files_read = self.files_done - self.files_failed
        per_file = self.chunks / files_read if files_read else 0.0
        return self.memories_pending + self.files_pending * per_file


class Rate:
    """Units a second of one counter while it has work, from the time it last stood still; time with
    nothing to do does not count, so the next round starts afresh."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES)

    def add(self, now: float, value: int, waiting: bool) -> None:
        last = self.samples[-1][1] if self.samples else None
        if not waiting or last is None or value < last:  # idle, or work forgotten (a folder removed)
            self.samples.clear()
            self.samples.append((now, value))
        elif len(self.samples) == 1 and value == last:
            self.samples[0] = (now, value)  # not started yet: it starts from the last still reading
        elif value != last:
            self.samples.append((now, value))

    def per_s(self, now: float) -> float | None:
        """None until the counter has moved; it slows down while the counter stalls."""
        if len(self.samples) < 2:
            return None
        (t0, v0), (_, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / max(now - t0, 1e-6)


class Tracker:
    """The readings of one round of work (from busy to idle): the bar's share and the time left."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.files, self.memories = Rate(), Rate()
        self.start: Reading | None = None  # the first busy reading of this round
        self.last: Reading | None = None

    def add(self, reading: Reading) -> None:
        now = self.clock()
        self.files.add(now, reading.files_done, reading.files_pending > 0)
        self.memories.add(now, reading.memories_done, reading.expected_memories() > 0)
        if reading.busy and self.start is None:
            self.start = reading
        elif not reading.busy:
            self.start = None
        self.last = reading

    def steps(self) -> tuple[float, float]:
        """(done, total) of this round, in files read plus memories written."""
        start, last = self.start, self.last
        if start is None or last is None:
            return 1.0, 1.0  # nothing waits
        done = max(last.files_done - start.files_done, 0) + max(last.memories_done - start.memories_done, 0)
        return done, done + last.files_pending + last.expected_memories()

    def eta_s(self) -> float | None:
        """Seconds left, or None while a rate it needs is unknown."""
        last = self.last
        if last is None:
            return None
        now, left = self.clock(), 0.0
        for pending, rate in ((last.files_pending, self.files), (last.expected_memories(), self.memories)):
            if pending:
                per_s = rate.per_s(now)
                if not per_s:
                    return None
                left += pending / per_s
        return left


def duration_words(seconds: float) -> str:
    """'about 40 s', 'about 12 min', 'about 3 h 20 min': as precise as an estimate deserves."""
    if seconds < 60:
        return f"about {max(round(seconds / 5) * 5, 5):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


class IngestProgress(Vertical):
    """The bar (while there is work) and one line of counts with the time left."""

    DEFAULT_CSS = """
    IngestProgress { height: auto; padding: 0 1; }
    IngestProgress ProgressBar { height: 1; width: 100%; }
    IngestProgress ProgressBar Bar { width: 1fr; }
    IngestProgress #ingest-line { height: auto; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tracker = Tracker()
        self.scanning: str | None = None  # what a scan in front reads ("~/notes", "every folder")

    def compose(self) -> ComposeResult:
        yield ProgressBar(show_eta=False)
        yield Static(id="ingest-line")

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False
        self.query_one("#ingest-line", Static).update("Waiting for the engine…")

    def show(self, reading: Reading) -> None:
        self.tracker.add(reading)
        self.redraw()

    def redraw(self) -> None:
        last = self.tracker.last
        bar = self.query_one(ProgressBar)
        bar.display = self.scanning is not None or (last is not None and last.busy)
        if self.tracker.start is None or (last is not None and last.walk):
            bar.update(total=None)  # a scan walking: how much it will find is not known yet
        else:
            done, total = self.tracker.steps()
            bar.update(total=max(total, 1), progress=done)
        if last is not None:
            self.query_one("#ingest-line", Static).update(self.line(last))
        elif self.scanning:
            self.query_one("#ingest-line", Static).update(Text(f"Scanning {self.scanning}…", "bold"))

    def line(self, r: Reading) -> Text:
        text = Text(no_wrap=False)
        if self.scanning:
            text.append(f"Scanning {self.scanning} · ", "bold")
        if not r.busy and not self.scanning:
            text.append("Up to date: every file read, every memory written.")
            if r.files_failed:
                text.append(f" {r.files_failed:,} failed (below).", "yellow")
            return text
        if r.walk is not None:
            where = short_path(r.walk.folder, 40)
            text.append(f"listing {where} · {r.walk.files_found:,} files found, ")
            text.append(f"{r.walk.files_changed:,} new or changed", "bold")
            return text
        total_files = r.files_done + r.files_pending
        text.append(f"files {r.files_done:,}/{total_files:,} read")
        if r.files_failed:
            text.append(f" ({r.files_failed:,} failed)", "yellow")
        text.append(f" · memories {r.memories_done:,}/{r.memories_done + r.memories_pending:,} written · ")
        if r.paused:
            text.append("paused while an answer is written", "italic")
            return text
        if not r.busy:
            text.append("finishing…", "bold")  # a scan's last step: its report comes next
            return text
        eta = self.tracker.eta_s()
        text.append(ESTIMATING if eta is None else f"{duration_words(eta)} left", "bold")
        return text
