"""Reading the memory3 app's screen as a user does, from the rows of text a terminal shows: the texts the
TUI benchmark waits for, and where the composer is. Pure functions of the rows, so they are tested on
screens fed known bytes."""

from __future__ import annotations

from bench.terminal import Lines, Predicate

# What the app shows (assistant/widgets/status_bar.py, answer.py, composer.py), as a user reads it.
OFFLINE = "offline: nothing leaves this machine"
READY = "● ready"
STREAMING = "writing…"
STOPPING = "stopping…"  # an answer's head once Esc was taken
STOPPED = "· stopped"  # once the engine ended it
MARKER = "zq0123456789012345678901"  # typed one key at a time: each prefix is new on screen


def shows(text: str) -> Predicate:
    return lambda lines: any(text in line for line in lines)


def composer_text(lines: Lines) -> str | None:
    """The text inside the composer: the lowest round-bordered box above the status bar (above the bottom
    when the bar's offline note is cut off), its rows joined (soft-wrapped text joins back up). None when
    no such box is on screen."""
    bottom = next((i for i in range(len(lines) - 1, -1, -1) if OFFLINE in lines[i]), len(lines))
    top = next((i for i in range(bottom - 1, -1, -1) if lines[i].lstrip().startswith("╰")), None)
    if top is None:
        return None
    inner = []
    for i in range(top - 1, -1, -1):
        row = lines[i].strip()
        if row.startswith("╭"):
            return "".join(reversed(inner))
        inner.append(row.removeprefix("│").split("│")[0].strip())
    return None


def composer_holds(typed: str) -> Predicate:
    return lambda lines: typed in (composer_text(lines) or "")


def composer_clear(lines: Lines) -> bool:
    text = composer_text(lines)
    return text is not None and MARKER[:2] not in text


def drawn(lines: Lines) -> bool:
    """The app's first frame is on screen: its status bar's offline note, or its composer (a narrow or busy
    status bar cuts the note off; Textual draws a whole frame at once)."""
    return shows(OFFLINE)(lines) or composer_text(lines) is not None
