"""NDJSON streams whose events come from a worker thread, so the event loop never runs the model.

Each stream gets a thread of its own for its whole life (torch keeps a thread pool per calling thread,
so hopping between pool threads per token would start new pools), which hands events to the event loop
through an asyncio queue. The worker starts with the response, not with its first read, so it always
runs to its end and unregisters itself. When the response ends, however it ends (a client hanging up
included), the stream's cancel event is set: a worker still running stops at its next check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from engine.service import events, protocol
from engine.service.errors import M3Error

log = logging.getLogger(__name__)

Emit = Callable[[events.Event], None]
Produce = Callable[[Emit], None]

_END = object()


class Streams:
    """The streams in progress (worker thread and cancel event), so that an exit can stop them all."""

    def __init__(self, log_file: str) -> None:
        self.log_file = log_file
        self._running: dict[threading.Thread, threading.Event] = {}
        self._lock = threading.Lock()

    def response(
        self, produce: Produce, cancel: threading.Event, on_end: Callable[[], None] | None = None
    ) -> StreamingResponse:
        """Stream what `produce(emit)` emits, run in a new thread; a failure ends the stream with an
        `error` event. `on_end` runs when the worker is done. Call from the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def emit(event: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the service is exiting
                loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            try:
                produce(emit)
            except M3Error as exc:
                emit(events.Failed(str(exc)))
            except Exception:
                log.exception("a stream failed")
                emit(
                    events.Failed(f"Something went wrong inside memory3; the details are in {self.log_file}.")
                )
            finally:
                if on_end is not None:
                    on_end()
                with self._lock:
                    self._running.pop(threading.current_thread(), None)
                emit(_END)

        thread = threading.Thread(target=work, name="m3-stream", daemon=True)
        with self._lock:
            self._running[thread] = cancel
        thread.start()
        return _Stream(_lines(queue), cancel)

    def busy(self) -> bool:
        """A worker still runs (its client may have hung up: a scan goes on until its folders are read)."""
        with self._lock:
            return bool(self._running)

    def cancel_all(self) -> None:
        with self._lock:
            for cancel in self._running.values():
                cancel.set()

    def join(self, timeout_s: float) -> bool:
        """Wait for every worker to finish; False if some are still running after `timeout_s`."""
        with self._lock:
            threads = list(self._running)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


async def _lines(queue: asyncio.Queue[object]) -> AsyncIterator[bytes]:
    while (event := await queue.get()) is not _END:
        yield events.line(event)  # type: ignore[arg-type]


class _Stream(StreamingResponse):
    """An NDJSON response that sets its stream's cancel event when it ends, however it ends: Starlette
    stops sending when the client hangs up (even before the first event)."""

    def __init__(self, lines: AsyncIterator[bytes], cancel: threading.Event) -> None:
        super().__init__(lines, media_type=protocol.NDJSON)
        self.cancel = cancel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cancel.set()  # a no-op once the worker is done
