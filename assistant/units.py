"""Sizes, paths and lists as people read them, one way everywhere (the app and the `m3` command)."""

from __future__ import annotations

import os
from pathlib import Path


def human_bytes(n: int) -> str:
    """Bytes in binary units: '512 B', '1.5 KiB', '12.3 MiB', '2.0 GiB'."""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:,.1f} {unit}"


def some_of(names: list[str], shown: int = 3) -> str:
    """'a, b, c and 4 more': the first `shown` names and how many are left out."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def short_path(path: str, width: int) -> str:
    """`path` with ~ for the home folder, cut from the left to `width` cells at most ('…/deep/folder')."""
    home = str(Path.home())
    if path == home or path.startswith(home + os.sep):
        path = "~" + path[len(home) :]
    if len(path) <= width:
        return path
    tail = path[-(width - 1) :]
    return "…" + (tail[tail.index(os.sep) :] if os.sep in tail else tail)
