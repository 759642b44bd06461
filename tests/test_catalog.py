"""The catalog file: schema versions and migrations, WAL, and the memory work that follows chunk hashes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from ingest import sqlite
from ingest.catalog import MIGRATIONS, Catalog, Skipped, newer_catalog
from ingest.chats import Chats
from ingest.chunker import Chunk
from ingest.errors import CatalogError
from ingest.ingester import Ingester
from ingest.paths import Home


def migrate(db: Database, migrations: tuple[sqlite.Migration, ...] = MIGRATIONS) -> int:
    """The catalog's migrations applied to a bare file, as Catalog applies them."""
    return sqlite.migrate(db, migrations, newer_catalog)


def chunks(*texts: str) -> list[Chunk]:
    return [Chunk(text=t, start=0, end=len(t), line_start=1, line_end=1, page=None) for t in texts]


def work(catalog: Catalog) -> dict[str, tuple[int, int]]:
    """hash -> (wanted, written) for every memory-work row."""
    return {
        r["hash"]: (r["wanted"], r["written"])
        for r in catalog.db.query("SELECT hash, wanted, written FROM memory_work")
    }


def two_documents(catalog: Catalog, tmp_path: Path) -> tuple[int, int]:
    folder = catalog.add_folder(tmp_path)
    return (
        catalog.insert_document(folder.id, "a.txt", 1, 1, None),
        catalog.insert_document(folder.id, "b.txt", 1, 1, None),
    )


def test_a_new_catalog_is_at_the_newest_version_in_wal_mode(catalog: Catalog):
    assert catalog.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert catalog.db.journal_mode == "wal"
    assert {"folders", "documents", "chunks", "memory_work", "jobs"} <= set(catalog.db.table_names())


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path):
    with Database(tmp_path / "c.db") as db:
        assert migrate(db) == len(MIGRATIONS)
    cat = Catalog(tmp_path / "c.db")
    cat.add_folder(tmp_path)
    cat.close()
    cat = Catalog(tmp_path / "c.db")
    assert [f.path for f in cat.folders()] == [tmp_path]
    cat.close()


def _v2_adds_a_label(db: Database) -> None:
    db.execute("ALTER TABLE folders ADD COLUMN label TEXT NOT NULL DEFAULT 'mine'")


def test_an_older_catalog_is_upgraded_in_place_keeping_its_rows(tmp_path: Path):
    path = tmp_path / "old.db"
    cat = Catalog(path)  # written at version 1
    cat.add_folder(tmp_path)
    cat.close()
    with Database(path) as db:
        assert migrate(db, (*MIGRATIONS, _v2_adds_a_label)) == len(MIGRATIONS) + 1
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        rows = db.query("SELECT path, label FROM folders")
        assert [(r["path"], r["label"]) for r in rows] == [(str(tmp_path), "mine")]


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path):
    def broken(db: Database) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("step failed")

    with Database(tmp_path / "c.db") as db:
        migrate(db)
        with pytest.raises(RuntimeError):
            migrate(db, (*MIGRATIONS, broken))
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert "half_done" not in db.table_names()


def test_a_catalog_from_a_newer_version_is_refused(tmp_path: Path):
    with Database(tmp_path / "c.db") as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(CatalogError, match="newer memory3"):
        Catalog(tmp_path / "c.db")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path):
    (tmp_path / "c.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(CatalogError, match="cannot be opened"):
        Catalog(tmp_path / "c.db")


def test_a_transaction_is_all_or_nothing(catalog: Catalog, tmp_path: Path):
    folder = catalog.add_folder(tmp_path)
    with pytest.raises(sqlite3.IntegrityError), catalog.atomic():
        catalog.insert_document(folder.id, "a.txt", 1, 1, None)
        catalog.insert_document(folder.id, "a.txt", 1, 1, None)  # unique per folder and path
    assert catalog.documents(folder.id) == {}


def test_a_text_in_two_documents_is_one_memory_kept_while_either_uses_it(catalog: Catalog, tmp_path: Path):
    a, b = two_documents(catalog, tmp_path)
    catalog.replace_chunks(a, chunks("shared", "only in a"))
    catalog.replace_chunks(b, chunks("shared"))
    shared, only_a = (c.hash for c in chunks("shared", "only in a"))
    assert work(catalog) == {shared: (1, 0), only_a: (1, 0)}
    assert [w.action for w in catalog.pending_memory_work()] == ["write", "write"]

    catalog.complete_memory_work(written=[shared, only_a])
    assert catalog.pending_memory_work() == []
    catalog.delete_documents([a])
    assert work(catalog) == {shared: (1, 1), only_a: (0, 1)}  # b still uses `shared`
    assert [(w.hash, w.action) for w in catalog.pending_memory_work()] == [(only_a, "drop")]
    catalog.complete_memory_work(dropped=[only_a])
    catalog.delete_documents([b])
    catalog.complete_memory_work(dropped=[shared])
    assert work(catalog) == {}


def test_an_edit_keeps_the_memories_of_unchanged_chunks(catalog: Catalog, tmp_path: Path):
    a, _ = two_documents(catalog, tmp_path)
    catalog.replace_chunks(a, chunks("one", "two", "three"))
    catalog.complete_memory_work(written=catalog.chunk_hashes(a))
    catalog.replace_chunks(a, chunks("one", "two, edited", "three"))
    pending = {(w.action, w.text) for w in catalog.pending_memory_work()}
    assert pending == {("write", "two, edited"), ("drop", None)}


def test_a_memory_never_written_is_simply_forgotten(catalog: Catalog, tmp_path: Path):
    a, _ = two_documents(catalog, tmp_path)
    catalog.replace_chunks(a, chunks("draft"))
    catalog.replace_chunks(a, chunks("final"))
    assert [(w.action, w.text) for w in catalog.pending_memory_work()] == [("write", "final")]


def test_memory_work_finished_after_the_chunks_changed_is_not_lost(catalog: Catalog, tmp_path: Path):
    a, _ = two_documents(catalog, tmp_path)
    catalog.replace_chunks(a, chunks("text"))
    (h,) = catalog.chunk_hashes(a)
    catalog.replace_chunks(a, [])  # the chunk goes away while the engine is writing its memory...
    catalog.complete_memory_work(written=[h])  # ...which it then reports
    assert [(w.hash, w.action) for w in catalog.pending_memory_work()] == [(h, "drop")]

    catalog.replace_chunks(a, chunks("text"))  # back before the drop was done: nothing to do
    assert catalog.pending_memory_work() == []
    catalog.replace_chunks(a, [])
    catalog.replace_chunks(a, chunks("text"))  # ...and if the engine drops it anyway, it is rewritten
    catalog.complete_memory_work(dropped=[h])
    assert [(w.hash, w.action) for w in catalog.pending_memory_work()] == [(h, "write")]


def test_sources_name_every_place_a_text_comes_from(catalog: Catalog, tmp_path: Path):
    a, b = two_documents(catalog, tmp_path)
    catalog.replace_chunks(a, chunks("same"))
    catalog.replace_chunks(b, chunks("same"))
    (h,) = catalog.chunk_hashes(a)
    assert [s.path for s in catalog.sources(h)] == [tmp_path / "a.txt", tmp_path / "b.txt"]


def test_removing_a_folder_drops_its_documents_and_their_memories(catalog: Catalog, tmp_path: Path):
    a, _ = two_documents(catalog, tmp_path)
    catalog.replace_chunks(a, chunks("text"))
    catalog.complete_memory_work(written=catalog.chunk_hashes(a))
    (folder,) = catalog.folders()
    catalog.remove_folder(folder.id)
    assert catalog.counts() == {**dict.fromkeys(catalog.counts(), 0), "memories_to_drop": 1}
    assert [w.action for w in catalog.pending_memory_work()] == ["drop"]
    assert catalog.db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_the_catalog_lives_in_the_data_folder(m3_home: Path):
    cat = Catalog(Home.from_env().catalog)
    assert cat.path == m3_home / "data" / "catalog.db" and cat.path.exists()
    cat.close()


def test_version_4_keeps_what_answers_read_and_names_old_citations_by_hash(tmp_path: Path):
    path = tmp_path / "v3.db"
    cited = [
        {"n": 1, "path": "/a.md", "page": None, "line_start": 1, "line_end": 2, "text": "Héron", "share": 1}
    ]
    with Database(path) as db:
        migrate(db, MIGRATIONS[:3])
        db.execute("INSERT INTO chats (id, title, created_at) VALUES (1, 'boats', 0)")
        db.execute(
            "INSERT INTO messages (chat_id, role, text, mode, citations, created_at)"
            " VALUES (1, 'assistant', 'Heron', 'rag', ?, 0)",
            (json.dumps(cited),),
        )
    cat = Catalog(path)
    [row] = cat.rows("SELECT citations, reads FROM messages")
    cat.close()
    assert row["reads"] == "[]"
    assert json.loads(row["citations"]) == [
        {**cited[0], "hash": hashlib.sha256("Héron".encode()).hexdigest()}
    ]
    assert json.loads(row["citations"])[0]["hash"] == chunks("Héron")[0].hash  # the chunk's own


def test_version_9_reads_the_answers_saved_before_as_never_withdrawn(tmp_path: Path):
    path = tmp_path / "v8.db"
    with Database(path) as db:
        migrate(db, MIGRATIONS[:8])
        db.execute("INSERT INTO chats (id, title, created_at) VALUES (1, 'capital', 0)")
        db.execute(
            "INSERT INTO messages (chat_id, role, text, created_at) VALUES (1, 'assistant', 'Tokyo', 0)"
        )
    cat = Catalog(path)
    try:
        [message] = Chats(cat).messages(1)
        assert (message.text, message.withdrawn) == ("Tokyo", None)
    finally:
        cat.close()


def test_version_7_lists_the_files_that_are_no_documents_from_the_next_scan(tmp_path: Path):
    """A catalog of version 6 keeps its documents; the next scan records what is no document."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("a note\n")
    (notes / "b.png").write_bytes(b"\x89PNG")
    path = tmp_path / "v6.db"
    with Database(path) as db:
        migrate(db, MIGRATIONS[:6])
        db.execute("INSERT INTO folders (id, path, added_at) VALUES (1, ?, 0)", (str(notes),))
        db.execute(
            "INSERT INTO documents (id, folder_id, rel_path, size, mtime_ns, status, updated_at)"
            " VALUES (7, 1, 'a.txt', 0, 0, 'ok', 0)"
        )
    cat = Catalog(path)
    try:
        assert cat.skipped(1) == {} and cat.skipped_files().unsupported == 0
        Ingester(cat, lambda text: len(text.split())).scan()
        assert cat.documents(1)["a.txt"].id == 7
        mtime_ns = (notes / "b.png").stat().st_mtime_ns
        reason = "memory3 does not read .png files"
        assert cat.skipped(1) == {"b.png": Skipped("b.png", "unsupported", ".png", 4, mtime_ns, reason)}
        assert cat.skipped_files().unsupported_types == [(".png", 1)]
    finally:
        cat.close()
