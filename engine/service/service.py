"""What the endpoints serve: one engine, loaded in the background, with its answers in progress, its
background work, and the decision to exit (asked to, or idle).

The model loads in a thread after the socket is up, so `/v1/health` answers at once ("loading", then
"ready" or "failed" with the reason); the other endpoints answer 503 until the engine is ready.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine import package_version
from engine.config import ServiceConfig
from engine.facade import Engine
from engine.service.answers import Answers
from engine.service.background import Background
from engine.service.errors import M3Error, NotReadyError
from engine.service.replies import Health
from engine.service.streams import Streams
from engine.threads import compute_threads
from ingest.paths import Home

log = logging.getLogger(__name__)

STREAMS_JOIN_S = 30.0  # at exit: streams were told to stop; one that has not after this is left behind


class Service:
    def __init__(self, home: Home, model: str | Path | None, device: str | None, config: ServiceConfig):
        self.home = home
        self.config = config
        self.engine = Engine.open(home, model, device)
        self.model, self.device = (str(model) if model else None), device
        self.started_at = time.time()
        self.state = "loading"  # then "ready" or "failed"
        self.error: str | None = None
        self.answers = Answers()
        self.streams = Streams(str(home.log_file))
        self.background = Background(self.engine)
        self.in_flight = 0  # requests being served (a stream counts until it ends)
        self.last_request = time.monotonic()
        self._lock = threading.Lock()
        self._exiting = False
        self._stop_serving: Callable[[], None] = lambda: None
        self._loader = threading.Thread(target=self._load, name="m3-load", daemon=True)

    def start(self, stop_serving: Callable[[], None]) -> None:
        """Load the engine in the background; `stop_serving()` is how `exit()` ends the server."""
        self._stop_serving = stop_serving
        torch.set_num_threads(compute_threads())  # before any torch work; threads started later inherit it
        self._loader.start()

    def _load(self) -> None:
        started = time.monotonic()
        try:
            self.engine.load()
        except M3Error as exc:
            self._fail(str(exc))
            return
        except Exception:
            log.exception("the engine failed to load")
            self._fail(f"The engine failed to load; the details are in {self.home.log_file}.")
            return
        with self._lock:
            if self._exiting:
                return
            self.model = str(self.engine.runtime.path)
            self.device = str(self.engine.runtime.model.device)
            self.state = "ready"
            self.background.start()
        log.info(
            "ready: %s in %.1f s, %d torch threads",
            self.engine.description,
            time.monotonic() - started,
            torch.get_num_threads(),
        )

    def _fail(self, sentence: str) -> None:
        log.error("the engine failed to load: %s", sentence)
        self.error, self.state = sentence, "failed"

    def ready(self) -> Engine:
        """The engine, if it can serve; NotReadyError (503) while loading, after a failed load, and while
        exiting."""
        if self._exiting:
            raise NotReadyError("The engine service is shutting down.")
        if self.state == "loading":
            raise NotReadyError("The engine is still loading; ask again in a moment.")
        if self.state == "failed":
            raise NotReadyError(self.error or "The engine failed to load.")
        return self.engine

    def health(self) -> Health:
        return Health(
            pid=os.getpid(),
            version=package_version(),
            state=self.state,
            error=self.error,
            data=str(self.home.data),
            model=self.model,
            device=self.device,
            started_at=self.started_at,
        )

    def background_state(self, pending: bool) -> str:
        """idle (nothing to do), working, or paused (waiting for answers to end)."""
        if not pending:
            return "idle"
        return "paused" if self.engine.turns.answers else "working"

    def idle(self) -> bool:
        """Nothing happened for `idle_minutes`: no request in flight, no answer, no background work left
        (a failed engine has none it can do). Reads the catalog: call from a worker thread."""
        if self.state == "loading" or self.in_flight or self.answers.ids() or self.streams.busy():
            return False
        if time.monotonic() - self.last_request < self.config.idle_s:
            return False
        if self.state != "ready":
            return True
        counts = self.engine.catalog.counts()
        return not (
            counts["jobs"] or counts["memories_to_write"] or counts["memories_to_drop"] or counts["imports"]
        )

    def exit(self) -> None:
        """Stop answering: every answer and stream is told to stop now, then the server ends (it waits for
        the streams to close) and `close()` saves."""
        with self._lock:
            self._exiting = True
        self.streams.cancel_all()
        self._stop_serving()

    def close(self) -> None:
        """After the server ended: wait for the workers, stop the background work, save and close the
        engine (the vector index is saved here)."""
        with self._lock:
            self._exiting = True
        self.streams.cancel_all()
        if not self.streams.join(STREAMS_JOIN_S):
            log.warning("a stream did not stop within %.0f s; closing anyway", STREAMS_JOIN_S)
        self.background.close()
        if self._loader.is_alive():
            self._loader.join()
        self.engine.close()
        log.info("stopped")
