"""`m3 bench tui`: the app as a user meets it, in a real terminal.

It runs `m3` (the app) in a pseudo-terminal (bench/terminal.py), reads its screen through pyte and types
bytes, importing nothing of the app. It measures the time to the first frame, to `● ready` and from Ctrl+Q
to exit, and the time from a key's byte to the composer showing it: idle, while an answer streams, while a
folder of small files ingests, and both at once; and it checks that 80×24 renders. Everything runs in a
temporary home (holding a copy of the sample folder) that borrows the cache of `home`; its engine service
is stopped at the end, on error too.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import engine_bench
from bench.ask_wall import SAMPLE, m3_command
from bench.errors import BenchmarkError, ScreenTimeout
from bench.machine import machine_info
from bench.terminal import Lines, Predicate, Terminal
from bench.tui_screen import (
    MARKER,
    OFFLINE,
    READY,
    STOPPED,
    STOPPING,
    STREAMING,
    composer_clear,
    composer_holds,
    composer_text,
    drawn,
    shows,
)
from engine.retrieval.embedder import Embedder
from engine.service.client import Client
from ingest.atomic import write_atomic
from ingest.paths import Home

SIZE = (120, 40)
NARROW = (80, 24)
LAUNCHES, QUICK_LAUNCHES = 5, 3
KEYS, QUICK_KEYS = 60, 20
FILES, QUICK_FILES = 1000, 200
TARGETS = {"first_frame_s": 0.5, "key_p95_ms": 50.0}

QUESTION = "Tell me everything about the steam engine, oxygen, Nikola Tesla and the Apollo program."
CTRL_Q, ENTER, BACKSPACE, ESCAPE, CTRL_N = b"\x11", b"\r", b"\x7f", b"\x1b", b"\x0e"
STOPS, QUICK_STOPS = 10, 3

FRAME_S, READY_S, ANSWER_S, KEY_S, EXIT_S, WORK_S, POLL_S = 10, 600, 300, 5, 30, 900, 0.5
KEY_GAP_S = 0.03  # between keys, so that each is timed on its own
STATUS_S = 3.0  # the app reads the service's status every 2 s
KEYS_BUDGET_S = 300  # most time spent collecting one kind of key timing


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict:
    """{"n", "p50", "p95", "max"} of latencies given in seconds, in milliseconds (None when empty)."""
    if not seconds:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "max": max(ms)}


def expect(term: Terminal, predicate: Predicate, timeout: float, what: str) -> float:
    """term.wait_for, failing with the screen attached."""
    try:
        return term.wait_for(predicate, timeout)
    except TimeoutError:
        raise ScreenTimeout(what, term.text()) from None


def quit_app(term: Terminal) -> float:
    """Press Ctrl+Q; seconds until the app's process ended."""
    sent = term.send(CTRL_Q)
    try:
        term.wait_exit(EXIT_S)
    except subprocess.TimeoutExpired:
        raise ScreenTimeout("its exit after Ctrl+Q", term.text()) from None
    return time.perf_counter() - sent


def launch(app: list[str], env: dict[str, str], size: tuple[int, int]) -> tuple[float, float, Terminal]:
    """Open the app; (seconds to the first frame, seconds to `● ready`, its terminal, still open)."""
    term = Terminal(app, env, *size)
    try:
        first = expect(term, drawn, FRAME_S, "its first frame") - term.started
        ready = expect(term, shows(READY), READY_S, "the engine ready") - term.started
    except BaseException:
        term.close()
        raise
    return first, ready, term


def ask(term: Terminal) -> None:
    """Send QUESTION from the composer and wait until its answer streams."""
    term.send(QUESTION.encode())
    expect(term, composer_holds(QUESTION), KEY_S, "the question in the composer")
    term.send(ENTER)
    expect(term, shows(STREAMING), ANSWER_S, "an answer being written")


def stop_answers(term: Terminal, want: int) -> dict[str, list[float]]:
    """Seconds from Esc to the answer marked "stopping…" (the app took the key) and to "stopped" (the
    engine ended the answer and the app says so), over `want` answers stopped while they streamed. Each is
    asked in a new chat (Ctrl+N), so that the screen shows one answer; one that ended before the Esc is
    not counted."""
    taken: list[float] = []
    stopped: list[float] = []
    for _ in range(want * 3):
        if len(stopped) == want:
            break
        term.send(CTRL_N)
        expect(term, lambda lines: not shows(STOPPED)(lines), KEY_S, "a new chat")
        ask(term)
        seen: list[float] = []

        def ended(lines: Lines, seen: list[float] = seen) -> bool:
            if not seen and shows(STOPPING)(lines):
                seen.append(time.perf_counter())  # called by the reader as the output arrives
            return shows(STOPPED)(lines) or not (shows(STREAMING)(lines) or shows(STOPPING)(lines))

        sent = term.send(ESCAPE)
        end = expect(term, ended, ANSWER_S, "the answer's end")
        if shows(STOPPED)(term.lines()):
            stopped.append(end - sent)
            taken.append((seen[0] if seen else end) - sent)
    return {"acknowledged": taken, "stopped": stopped}


def type_keys(
    term: Terminal, want: int, streaming: bool, needs: Callable[[], bool] | None = None
) -> list[float]:
    """Seconds from each key's byte to the composer showing it, for up to `want` keys typed while an answer
    streams (when `streaming`; a new question is asked whenever none does) and `needs()` holds (measuring
    ends when it no longer does). Typed text is erased again after each batch."""
    latencies: list[float] = []
    deadline = time.monotonic() + KEYS_BUDGET_S
    while len(latencies) < want and time.monotonic() < deadline and (needs is None or needs()):
        if streaming and not shows(STREAMING)(term.lines()):
            ask(term)
        typed = ""
        for key in MARKER:
            typed += key
            sent = term.send(key.encode())
            shown = expect(term, composer_holds(typed), KEY_S, f"{typed!r} in the composer")
            if (streaming and not shows(STREAMING)(term.lines())) or (needs is not None and not needs()):
                break
            latencies.append(shown - sent)
            if len(latencies) == want:
                break
            time.sleep(KEY_GAP_S)
        term.send(BACKSPACE * len(typed))
        expect(term, composer_clear, KEY_S, "the composer emptied")
    return latencies


@dataclass(frozen=True)
class Rig:
    """The temporary home the benchmark runs in and the commands that use it."""

    root: Path
    home: Home
    env: dict[str, str]
    m3: list[str]  # the m3 command with its --device; alone, it opens the app
    states: list[str] = field(default_factory=list)  # background states seen by pending()

    def cli(self, *args: str) -> None:
        """Run an `m3` command to its end."""
        result = subprocess.run(
            [*self.m3, *args], env=self.env, capture_output=True, text=True, timeout=WORK_S
        )
        if result.returncode != 0:
            raise BenchmarkError(f"`m3 {' '.join(args)}` failed: {result.stderr.strip()}")

    def pending(self) -> bool:
        """Whether the service has documents to read or memories to write (asked of it, not read off the
        screen); its background state is noted in `states`."""
        with Client(self.home) as client:
            s = client.status()
        self.states.append(s.background)
        return bool(s.documents.pending or s.chunks_pending)

    def wait_pending(self, pending: bool, what: str) -> None:
        deadline = time.monotonic() + WORK_S
        while self.pending() != pending:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"The engine service {what} within {WORK_S} s.")
            time.sleep(POLL_S)


def write_files(folder: Path, count: int) -> None:
    """`count` small made-up text files (a few sentences each) in `folder`."""
    rng = random.Random(7)
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"note-{i:04d}.txt").write_text(engine_bench.text(rng, rng.randint(3, 8)) + "\n")


def run(
    home: Home, model_path: Path, device: str | None, output_dir: Path, quick: bool = False
) -> tuple[dict, str]:
    """Measure the app (quick: fewer launches and keys, 200 files); return the results and a table."""
    launches, keys, files = (QUICK_LAUNCHES, QUICK_KEYS, QUICK_FILES) if quick else (LAUNCHES, KEYS, FILES)
    stop_count = QUICK_STOPS if quick else STOPS
    Embedder.load(home.cache / "embedder", device=device)  # exported now, so no launch waits for it
    with tempfile.TemporaryDirectory(prefix="m3-tui-bench-") as tmp:
        root = Path(tmp)
        env = dict(os.environ, M3_HOME=str(root / "home"), M3_MODEL=str(model_path), HF_HUB_OFFLINE="1")
        env["TERM"] = "xterm-256color"
        rig = Rig(
            root, Home.at(root / "home"), env, [*m3_command(), *(["--device", device] if device else [])]
        )
        rig.home.make_private()
        rig.home.cache.symlink_to(home.cache.resolve(), target_is_directory=True)  # the model, the embedder
        try:
            measured = _measure(rig, launches, keys, stop_count, files, output_dir)
        except ScreenTimeout as exc:
            dump = output_dir / "tui-failed-screen.txt"
            write_atomic(dump, exc.screen)
            raise BenchmarkError(f"{exc} Its last screen is in {dump}.") from exc
        finally:
            subprocess.run([*m3_command(), "stop"], env=env, capture_output=True, timeout=WORK_S)
    results = {
        **measured,
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "ingest_files": files,
        "targets": TARGETS,
        "machine": machine_info(),
        "load_avg": os.getloadavg(),  # 1, 5, 15 min at the end: other work on the machine skews timings
        "device": device,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return results, table(results)


def _measure(rig: Rig, launches: int, keys: int, stop_count: int, files: int, output_dir: Path) -> dict:
    """Every measurement, in order: launches (the first starts the service), 80×24, keys, Esc."""
    firsts, readies, quits = [], [], []
    for _ in range(launches):
        first, ready, term = launch(rig.m3, rig.env, SIZE)
        with term:
            quits.append(quit_app(term))
        firsts.append(first)
        readies.append(ready)

    first, ready, term = launch(rig.m3, rig.env, NARROW)
    with term:
        time.sleep(STATUS_S)  # the status bar's full line comes with the app's first status reading
        narrow = {
            "first_frame_s": first,
            "ready_s": ready,
            "composer": composer_text(term.lines()) is not None,
            "offline_shown_when_ready": shows(OFFLINE)(term.lines()),
        }
        write_atomic(output_dir / "tui-80x24.txt", term.text())
        quit_app(term)

    shutil.copytree(SAMPLE, rig.root / "sample")
    rig.cli("ingest", str(rig.root / "sample"))
    rig.wait_pending(False, "did not ingest the sample folder")
    write_files(rig.root / "notes", files)
    _, _, term = launch(rig.m3, rig.env, SIZE)
    with term:
        typed = {"idle": type_keys(term, keys, streaming=False)}
        typed["streaming"] = type_keys(term, keys, streaming=True)
        stops = stop_answers(term, stop_count)
        expect(term, lambda lines: not shows(STREAMING)(lines), ANSWER_S, "the answer finished")
        rig.cli("watch", str(rig.root / "notes"))  # the service ingests it in the background
        rig.wait_pending(True, "did not start ingesting")
        background = {}  # the service's state, checked after each key: answers pause the ingest
        for name, streams in (("ingest", False), ("streaming_ingest", True)):
            rig.states.clear()
            typed[name] = type_keys(term, keys, streaming=streams, needs=rig.pending)
            background[name] = dict(Counter(rig.states))
        write_atomic(output_dir / "tui-120x40.txt", term.text())
        quit_app(term)
    return {
        "first_frame_s": {"median": statistics.median(firsts), "runs": firsts},
        "ready_s": {"cold": readies[0], "warm": statistics.median(readies[1:]) if readies[1:] else None},
        "quit_s": statistics.median(quits),
        "keys_ms": {name: summary_ms(latencies) for name, latencies in typed.items()},
        "stop_ms": {name: summary_ms(latencies) for name, latencies in stops.items()},
        "ingest_background": background,
        "narrow": narrow,
    }


def _fmt(x: float | None, unit: str) -> str:
    return "—" if x is None else f"{x:.3f} {unit}" if unit == "s" else f"{x:.1f} {unit}"


def table(r: dict) -> str:
    """The results as one Markdown table and a line naming the machine."""
    runs, k = len(r["first_frame_s"]["runs"]), r["keys_ms"]
    rows = [
        (f"first frame, median of {runs}", _fmt(r["first_frame_s"]["median"], "s"), "< 0.5 s"),
        ("`● ready`, first launch (starts the service)", _fmt(r["ready_s"]["cold"], "s"), ""),
        ("`● ready`, later launches (median)", _fmt(r["ready_s"]["warm"], "s"), ""),
        ("Ctrl+Q to the process's exit (median)", _fmt(r["quit_s"], "s"), ""),
    ]
    for name, label in (
        ("idle", "key to screen, idle"),
        ("streaming", "key to screen, answer streaming"),
        ("ingest", f"key to screen, {r['ingest_files']:,} files ingesting"),
        ("streaming_ingest", f"key to screen, answer streaming + {r['ingest_files']:,} files ingesting"),
    ):
        s = k[name]
        values = " / ".join(_fmt(s[p], "ms") for p in ("p50", "p95", "max"))
        rows.append((f"{label}: p50 / p95 / max ({s['n']} keys)", values, "p95 < 50 ms"))
    for name, label in (
        ("acknowledged", "Esc to the answer marked stopping"),
        ("stopped", "Esc to the answer stopped by the engine"),
    ):
        s = r["stop_ms"][name]
        values = " / ".join(_fmt(s[p], "ms") for p in ("p50", "p95", "max"))
        rows.append((f"{label}: p50 / p95 / max ({s['n']} answers)", values, "< 100 ms"))
    n = r["narrow"]
    narrow = "yes" if n["composer"] else "no composer"
    if not n["offline_shown_when_ready"]:
        narrow += "; the status bar cuts `offline` once ready"
    rows.append(("80×24 renders (status bar, composer)", narrow, ""))
    lines = [f"| metric ({r['size']}) | value | target |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    paused = r["ingest_background"]["streaming_ingest"]
    m = r["machine"]
    lines += [
        "",
        f"While answers streamed, the service had paused its ingest at {paused.get('paused', 0)} of "
        f"{sum(paused.values())} checks (answers go first).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, GPU: {m['gpu'] or 'none'}, "
        f"load average {' '.join(f'{x:.1f}' for x in r['load_avg'])}; "
        f"engine device: {r['device'] or 'default'}; {r['date']}.",
    ]
    return "\n".join(lines)
