"""Sizes as people read them, one way everywhere (the app and the `m3` command)."""

from __future__ import annotations


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
