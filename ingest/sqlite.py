"""memory3's SQLite files (the catalog, the bank index, the retrieval database), opened one way.

Each is one connection shared by the threads of one process. WAL lets another process read beside our
writes. The schema version lives in PRAGMA user_version and is reached through an append-only list of
migrations, one transaction each. Writes go through `atomic()`, BEGIN IMMEDIATE ... COMMIT. The
connection is in autocommit mode (isolation_level=None): Python never opens a transaction behind our back,
so an open transaction is always one of ours and nested `atomic()` calls can join it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

from sqlite_utils import Database

T = TypeVar("T")

# One step of a schema's history. It gets sqlite-utils' Database, whose executescript() stays inside the
# step's transaction (sqlite3's own commits first), so a crash leaves the version before the step.
Migration = Callable[[Database], None]

# SQLite checkpoints the WAL once it holds this much (by default 1000 pages, 4 MiB) and then cuts it back to
# it: at 4 MiB the three databases' WALs were a tenth of the data folder of 500 small files (the soak)
WAL_LIMIT_BYTES = 2**20
BATCH = 500  # values per `IN (...)`, well under SQLite's limit on bound parameters


def migrate(db: Database, migrations: Sequence[Migration], newer: Callable[[int, int], Exception]) -> int:
    """Bring the file to version len(migrations) by applying the steps it lacks, each in a transaction
    with the version it reaches. Raises newer(found, known) for a file a newer memory3 wrote."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise newer(version, len(migrations))
    for number, step in enumerate(migrations[version:], start=version + 1):
        with _transaction(db.conn):
            step(db)
            db.conn.execute(f"PRAGMA user_version = {number}")
    return len(migrations)


class SQLite:
    """One SQLite file: `conn` (and `db`, sqlite-utils' view of it) shared between threads, `lock` to
    serialise their use, `atomic()` to write."""

    def __init__(
        self,
        path: Path,
        migrations: Sequence[Migration],
        *,
        newer: Callable[[int, int], Exception],
        unreadable: Callable[[sqlite3.DatabaseError], Exception],
        synchronous: Literal["NORMAL", "FULL"],
        timeout: float = 30.0,
    ) -> None:
        """Open `path` (created if missing) and migrate it. Raises newer(found, known) for a file from a
        newer memory3 and unreadable(error) for one SQLite cannot use. `synchronous`: NORMAL is durable
        against a crash of the process, FULL against a power cut too. `timeout`: seconds to wait for
        another process's write lock."""
        self.path = path
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            # a checkpoint cuts the WAL back to this: without a limit it keeps the size of the largest
            # transaction ever made (a big scan or import) for good
            self.conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            page = self.conn.execute("PRAGMA page_size").fetchone()[0]
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_LIMIT_BYTES // page}")
            self.conn.execute(f"PRAGMA synchronous = {synchronous}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.db = Database(self.conn)
            migrate(self.db, migrations, newer)
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise unreadable(exc) from exc
            raise

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One write transaction; nested calls join the outer one. IMMEDIATE takes the write lock up front,
        so two processes never deadlock upgrading a read lock."""
        with self.lock:
            if self.conn.in_transaction:
                yield
                return
            with _transaction(self.conn):
                yield

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def placeholders(n: int) -> str:
    """`?,?,...`: the bound parameters of an `IN (...)` of `n` values."""
    return ",".join("?" * n)


def batches(values: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    """`values` in slices of at most `size`, one `IN (...)` query each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # also when COMMIT itself failed: never leave a transaction open
            conn.execute("ROLLBACK")
        raise
