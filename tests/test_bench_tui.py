"""The pure parts of `m3 bench tui`: percentiles, and reading the composer off a pyte screen fed known bytes
(the screen-reading is what every key timing rests on). No timing is asserted here."""

from __future__ import annotations

import pyte
import pytest

from bench.tui_bench import percentile, summary_ms, table
from bench.tui_screen import OFFLINE, composer_clear, composer_holds, composer_text, drawn, shows


def screen(*rows: str, columns: int = 60, lines: int = 10) -> list[str]:
    """The rows of a pyte screen after drawing `rows` from the top, as a terminal would receive them."""
    s = pyte.Screen(columns, lines)
    pyte.ByteStream(s).feed(("\x1b[2J\x1b[H" + "\r\n".join(rows)).encode())
    return s.display


def app_screen(*composer: str, transcript: str = "") -> list[str]:
    """A chat screen: transcript, the composer's round box, the footer, the status bar at the bottom."""
    box = [f"│ {row:<40} │" for row in composer]
    return screen(
        transcript,
        "",
        "╭" + "─" * 42 + "╮",
        *box,
        "╰" + "─" * 42 + "╯",
        " ^q Quit  f1 Help",
        f"● ready · CPU · {OFFLINE}",
    )


def test_percentile_interpolates_between_ranks():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([float(i) for i in range(101)], 95) == 95.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([7.0], 95) == 7.0


def test_summary_is_in_milliseconds_and_empty_is_none():
    assert summary_ms([0.001, 0.002, 0.003]) == pytest.approx({"n": 3, "p50": 2.0, "p95": 2.9, "max": 3.0})
    assert summary_ms([]) == {"n": 0, "p50": None, "p95": None, "max": None}


def test_composer_text_is_inside_the_lowest_box_above_the_status_bar():
    lines = app_screen("zq012")
    assert composer_text(lines) == "zq012"
    assert composer_holds("zq012")(lines)
    assert not composer_holds("zq0123")(lines)
    assert shows(OFFLINE)(lines)


def test_typed_text_elsewhere_on_screen_does_not_count():
    lines = app_screen("zq01", transcript="an answer that quotes zq0123")
    assert not composer_holds("zq0123")(lines)


def test_soft_wrapped_composer_rows_join_up():
    assert composer_text(app_screen("zq012345", "6789")) == "zq0123456789"


def test_empty_composer_and_no_composer():
    assert composer_clear(app_screen("Ask about your files…"))
    assert not composer_clear(app_screen("zq"))
    assert composer_text(screen("no box here", OFFLINE)) is None
    assert not composer_clear(screen("no box here", OFFLINE))


def test_table_marks_missing_figures():
    keys = {"n": 0, "p50": None, "p95": None, "max": None}
    results = {
        "size": "120x40",
        "first_frame_s": {"median": 0.25, "runs": [0.25]},
        "ready_s": {"cold": 3.0, "warm": None},
        "quit_s": 0.3,
        "keys_ms": {"idle": keys, "streaming": keys, "ingest": keys, "streaming_ingest": keys},
        "stop_ms": {"acknowledged": keys, "stopped": {"n": 2, "p50": 80.0, "p95": 95.0, "max": 96.0}},
        "ingest_background": {"ingest": {"working": 3}, "streaming_ingest": {"paused": 2, "working": 1}},
        "ingest_files": 200,
        "narrow": {"composer": True, "offline_shown_when_ready": True},
        "machine": {"cpu": "cpu", "cores": 2, "ram_gib": 8, "gpu": None},
        "load_avg": (1.0, 0.5, 0.25),
        "device": None,
        "date": "2025-01-01",
    }
    text = table(results)
    assert "| first frame, median of 1 | 0.250 s | < 0.5 s |" in text
    assert "— / — / —" in text
    assert "200 files ingesting" in text
    assert "paused its ingest at 2 of 3 checks" in text
    assert (
        "| Esc to the answer stopped by the engine: p50 / p95 / max (2 answers) | 80.0 ms / 95.0 ms / 96.0 ms"
        in text
    )


def test_composer_is_found_when_the_status_bar_is_cut_short():
    lines = screen(
        "╭────╮", "│ zq │", "╰────╯", "● ready · 59 memories · paused: 984 files · off", " ^q Quit"
    )
    assert composer_text(lines) == "zq"
    assert drawn(lines)


def test_a_blank_screen_or_a_shell_line_is_no_frame():
    assert not drawn(screen())
    assert not drawn(screen("$ m3", "Error: something went wrong inside memory3"))
