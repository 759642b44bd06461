"""One engine per data folder: the service holds an flock on `service.lock` for its whole life.

The kernel drops an flock when its process ends, however it ends (kill -9 included), so a lock is never
stale: whoever acquires it knows that no other service is alive, and may clear what a crashed one left (its
socket file, its `service.json`). The lock file itself is never deleted, since unlinking a lock file that
another process has open would let two processes lock two different files.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from engine.service.errors import ServiceRunningError
from engine.service.protocol import LOCK, PROCESS_FILE
from ingest.atomic import write_atomic


class ServiceLock:
    """Held from `acquire()` to `release()` (or a `with` block) by the one service of `data`."""

    def __init__(self, data: Path, socket: Path):
        self.data = data
        self.socket = socket
        self.info = data / PROCESS_FILE
        self._lock = FileLock(data / LOCK, timeout=0, mode=0o600, thread_local=False, preserve_lock_file=True)

    def acquire(self) -> None:
        """Take the lock, name this process in service.json and clear a crashed service's socket file.
        Raises ServiceRunningError, naming the holder, when another service has it."""
        self.data.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise ServiceRunningError(self._refusal()) from None
        self.socket.unlink(missing_ok=True)  # the lock proves nobody serves it
        info = {"pid": os.getpid(), "socket": str(self.socket), "started_at": time.time()}
        write_atomic(self.info, json.dumps(info) + "\n")

    def release(self) -> None:
        """Remove the socket file and service.json, then let the lock go (in that order: a new service may
        start the moment it is free)."""
        self.socket.unlink(missing_ok=True)
        self.info.unlink(missing_ok=True)
        self._lock.release()

    def _refusal(self) -> str:
        try:
            pid = json.loads(self.info.read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):  # the holder is starting and has not written it
            return f"Another memory3 engine service already serves {self.data}."
        return f"Another memory3 engine service (pid {pid}) already serves {self.data}; `m3 stop` ends it."

    def __enter__(self) -> ServiceLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
