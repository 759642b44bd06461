"""The service's listening sockets: a Unix socket only its owner can connect to, and optionally a loopback
TCP port guarded by a bearer token.

We bind them ourselves and hand them to uvicorn, because uvicorn's own Unix socket is made mode 0666.
"""

from __future__ import annotations

import os
import secrets
import socket
import stat
from pathlib import Path

from engine.service.errors import ListenError
from ingest.atomic import replacing

BACKLOG = 64
PRIVATE = 0o600


def unix_socket(path: Path) -> socket.socket:
    """A listening socket at `path`, mode 0600 from its first instant: it is created under a umask of 0o177
    (the umask is process-wide, so call this before any other thread starts), then checked."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ListenError(f"The engine service cannot listen on {path} ({exc.strerror or exc}).") from exc
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode != PRIVATE:
        sock.close()
        path.unlink(missing_ok=True)
        raise ListenError(
            f"The socket {path} came out mode {mode:o}, not {PRIVATE:o}; refusing to serve on it."
        )
    sock.listen(BACKLOG)
    return sock


def tcp_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (loopback only, never another address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ListenError(
            f"The engine service cannot listen on 127.0.0.1:{port} ({reason}); change [service] tcp_port."
        ) from exc
    sock.listen(BACKLOG)
    return sock


def write_token(path: Path) -> str:
    """A fresh random bearer token, written to `path` readable by its owner only (a TCP client reads it
    there: being able to read the file is the permission)."""
    token = secrets.token_urlsafe(32)
    with replacing(path) as tmp:
        os.chmod(tmp, PRIVATE)
        tmp.write_text(token + "\n")
    return token
