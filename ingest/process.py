"""Whether a process still runs: the queue reclaims the jobs of dead workers with it, and the service's
client tells a live service from a stale `service.json`."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process `pid` runs. Someone else's process counts as alive; a zombie (dead, not yet reaped
    by its parent) does not, where /proc tells (Linux)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal is all we know
    return state != "Z"
