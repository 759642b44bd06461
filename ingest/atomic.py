"""Replacing a file whole, so that a crash leaves either the old file or the new one, never a mix of both.

The new contents go to a temporary file beside the target (the same file system, so the rename is atomic),
which is fsynced and renamed over the target; then the folder is fsynced so that the rename itself
survives a power cut. Files appended to in place (the bank's segments) use only `fsync_dir`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A new, empty temporary path beside `path` to write the new contents to, by any means (a library
    that takes a file name included). When the block ends it replaces `path`; if the block raises, it is
    deleted and `path` is left as it was. Permissions follow the umask, as for a plain open()."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace `path` by `data` (a str is written as UTF-8), as `replacing` does."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries durable: a file created, renamed or deleted in it is not on disk until
    the folder itself is fsynced."""
    _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
