"""A one-line spinner on stderr, for the seconds a command waits for the engine to start.

Drawn only on a terminal (a pipe or a log gets nothing), one frame per `show`, erased when done.
"""

from __future__ import annotations

import sys
from typing import TextIO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Spinner:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.frame = 0
        self.drawn = False

    def show(self, text: str) -> None:
        """Draw the next frame with `text` beside it."""
        if not self.on:
            return
        self.stream.write(f"\r\x1b[K{FRAMES[self.frame % len(FRAMES)]} {text}")
        self.stream.flush()
        self.frame += 1
        self.drawn = True

    def __enter__(self) -> Spinner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
