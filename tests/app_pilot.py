"""Driving the app in tests: a private service home under /tmp, waiting for the screen, reading it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from textual.app import App
from textual.pilot import Pilot

from engine.service import client as service
from ingest.paths import Home

WAIT_S = 180.0  # an answer or a scan on a busy two-core machine


@contextmanager
def service_home(cache: Path) -> Iterator[Home]:
    """A home of its own under /tmp (a Unix socket's path must be short) sharing `cache` (the model and
    the embedder are prepared once per test run); its service is stopped and the folder removed after."""
    root = Path(tempfile.mkdtemp(prefix="m3app-", dir="/tmp"))
    cache.mkdir(parents=True, exist_ok=True)
    (root / "cache").symlink_to(cache)
    home = Home.at(root)
    try:
        yield home
    finally:
        service.stop(home)
        shutil.rmtree(root, ignore_errors=True)


async def until(pilot: Pilot, what: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Wait until `what()` holds, then for the screen to be drawn so."""
    waited = 0.0
    while not what():
        assert waited < timeout_s, f"the screen did not get there in time; it shows:\n{text(pilot.app)}"
        await pilot.pause(0.1)
        waited += 0.1
    await pilot.pause()


def text(app: App) -> str:
    """The screen as the terminal shows it."""
    return "\n".join("".join(s.text for s in strip) for strip in app.screen._compositor.render_strips())


def notices(app: App) -> list[str]:
    return [str(n.message) for n in app._notifications]


def visible(app: App, selector: str) -> bool:
    """Displayed and wholly on the screen (nothing pushed below the footer)."""
    widget = app.screen.query_one(selector)
    region = widget.region
    return widget.display and region.height > 0 and region.bottom <= app.size.height - 2
