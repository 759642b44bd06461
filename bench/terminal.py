"""A program in a pseudo-terminal, seen through pyte: what a user would see and type, for benchmarks that
drive an interactive app (the `m3` app) by its keys and time what reaches the screen.

The program gets the pty as its terminal; a reader thread feeds everything it writes into a pyte screen
and, after each piece, checks the one predicate a caller waits for, so a wait ends at the moment the
output that satisfied it arrived (not when the waiting thread woke up).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import pyte

READ_BYTES = 65536
POLL_S = 0.05
CLOSE_S = 5.0

Lines = list[str]  # the screen's rows as text, top to bottom
Predicate = Callable[[Lines], bool]


class Terminal:
    """`argv` running in a `columns`×`lines` pseudo-terminal. `started` is the perf_counter time just
    before the spawn. Use as a context manager: leaving it kills the program if it still runs."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], columns: int = 120, lines: int = 40):
        self.screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self.screen)
        self._changed = threading.Condition()
        self._want: Predicate | None = None
        self._met_at: float | None = None
        self._fed_at = 0.0
        self._eof = False
        self._stop = threading.Event()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        try:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                list(argv), stdin=slave, stdout=slave, stderr=slave, env=dict(env), start_new_session=True
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._master = master
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _read(self) -> None:
        """Feed the program's output to pyte until it closes the terminal (EIO) or close() is called."""
        while not self._stop.is_set():
            if not select.select([self._master], [], [], POLL_S)[0]:
                continue
            try:
                data = os.read(self._master, READ_BYTES)
            except OSError:
                data = b""
            at = time.perf_counter()
            with self._changed:
                if not data:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self._stream.feed(data)
                self._fed_at = at
                if self._want is not None and self._met_at is None and self._want(self.screen.display):
                    self._met_at = at
                self._changed.notify_all()

    def lines(self) -> Lines:
        with self._changed:
            return list(self.screen.display)

    def text(self) -> str:
        """The screen as text, trailing blanks cut: for reports and error messages."""
        return "\n".join(line.rstrip() for line in self.lines()).rstrip() + "\n"

    def send(self, data: bytes) -> float:
        """Write `data` as typed keys; the perf_counter time of the write."""
        at = time.perf_counter()
        os.write(self._master, data)
        return at

    def wait_for(self, predicate: Predicate, timeout: float) -> float:
        """Block until predicate(screen rows) holds; the perf_counter time the output that made it hold
        was read. TimeoutError when it does not hold within `timeout` s or the program closed the pty."""
        deadline = time.monotonic() + timeout
        with self._changed:
            if predicate(self.screen.display):
                return self._fed_at
            self._want, self._met_at = predicate, None
            try:
                while self._met_at is None:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._eof:
                        raise TimeoutError(f"the screen did not change as awaited within {timeout:g} s")
                    self._changed.wait(left)
                return self._met_at
            finally:
                self._want = None

    def wait_exit(self, timeout: float) -> int:
        """The program's exit status, waiting up to `timeout` s (subprocess.TimeoutExpired after)."""
        return self.process.wait(timeout)

    def close(self) -> None:
        """Kill the program's session if it still runs (SIGTERM, then SIGKILL), stop reading, free the pty."""
        if self.process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
                try:
                    self.process.wait(CLOSE_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._stop.set()
        self._reader.join()
        os.close(self._master)
