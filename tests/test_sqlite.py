"""The one SQLite helper: a transaction that cannot commit is rolled back, so later writes are not lost;
the WAL does not keep the size of the largest transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from ingest.sqlite import WAL_LIMIT_BYTES, SQLite


def _schema(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE parents (id INTEGER PRIMARY KEY);
        CREATE TABLE children (
            id INTEGER PRIMARY KEY,
            parent INTEGER REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED
        );
        """
    )


def _open(path: Path) -> SQLite:
    return SQLite(
        path,
        (_schema,),
        newer=lambda found, known: RuntimeError(f"newer {found} > {known}"),
        unreadable=lambda exc: RuntimeError(str(exc)),
        synchronous="NORMAL",
    )


def test_a_failed_commit_is_rolled_back_and_later_writes_persist(tmp_path: Path):
    db = _open(tmp_path / "x.db")
    with pytest.raises(sqlite3.IntegrityError), db.atomic():  # the deferred key is checked at COMMIT
        db.conn.execute("INSERT INTO children (id, parent) VALUES (1, 42)")
    assert not db.conn.in_transaction
    with db.atomic():
        db.conn.execute("INSERT INTO parents (id) VALUES (7)")
    db.close()
    again = _open(tmp_path / "x.db")
    assert again.conn.execute("SELECT id FROM parents").fetchall() == [(7,)]
    assert again.conn.execute("SELECT COUNT(*) FROM children").fetchone() == (0,)
    again.close()


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path):
    _open(tmp_path / "x.db").close()
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    with pytest.raises(RuntimeError, match="newer 9 > 1"):
        _open(tmp_path / "x.db")


def test_the_wal_is_cut_back_after_a_big_transaction(tmp_path: Path):
    db = _open(tmp_path / "x.db")
    db.conn.execute("CREATE TABLE blobs (b BLOB)")
    with db.atomic():  # one transaction far larger than the limit: the WAL grows to hold it
        db.conn.executemany("INSERT INTO blobs VALUES (zeroblob(?))", [(2**20,)] * 16)
    wal = tmp_path / "x.db-wal"
    assert wal.stat().st_size > 2 * WAL_LIMIT_BYTES
    db.conn.execute("PRAGMA wal_checkpoint")
    with db.atomic():  # the next write after a full checkpoint starts the WAL over, cut to the limit
        db.conn.execute("INSERT INTO parents (id) VALUES (-1)")
    assert wal.stat().st_size <= WAL_LIMIT_BYTES
    db.close()


def test_small_writes_keep_the_wal_within_the_limit(tmp_path: Path):
    """SQLite's automatic checkpoint comes at the limit, not at its default 1000 pages (4 MiB)."""
    db = _open(tmp_path / "x.db")
    db.conn.execute("CREATE TABLE blobs (b BLOB)")
    for _ in range(400):  # 400 transactions of 16 KiB: 6.25 MiB written in all
        with db.atomic():
            db.conn.execute("INSERT INTO blobs VALUES (zeroblob(?))", (2**14,))
    assert (tmp_path / "x.db-wal").stat().st_size <= WAL_LIMIT_BYTES + 2**16
    db.close()
