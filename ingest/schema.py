"""The catalog's schema: its history as migrations, oldest first, each one step (ingest.sqlite applies them).

Append only: a step, once released, is never changed, since catalogs in the wild have applied it.
"""

from __future__ import annotations

import json

from sqlite_utils import Database

from ingest.chunker import text_hash
from ingest.errors import CatalogError
from ingest.sqlite import Migration


def _v1(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            added_at REAL NOT NULL
        );
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
            rel_path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT,
            status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'failed')),
            error TEXT,
            updated_at REAL NOT NULL,
            parsed_at REAL,
            UNIQUE (folder_id, rel_path)
        );
        CREATE INDEX documents_sha256 ON documents(sha256);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ord INTEGER NOT NULL,
            hash TEXT NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            line_start INTEGER NOT NULL,
            line_end INTEGER NOT NULL,
            page INTEGER,
            text TEXT NOT NULL,
            UNIQUE (document_id, ord)
        );
        CREATE INDEX chunks_hash ON chunks(hash);
        CREATE TABLE memory_work (
            hash TEXT PRIMARY KEY,
            wanted INTEGER NOT NULL,
            written INTEGER NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX memory_work_pending ON memory_work(written) WHERE wanted != written;
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            gen INTEGER NOT NULL DEFAULT 1,
            lease_pid INTEGER,
            lease_until REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            enqueued_at REAL NOT NULL,
            UNIQUE (document_id, kind)
        );
        CREATE INDEX jobs_free ON jobs(id) WHERE lease_until IS NULL;
        """
    )


def _v2(db: Database) -> None:
    """Chats and their messages; an answer's citations are kept as JSON beside it."""
    db.executescript(
        """
        CREATE TABLE chats (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            text TEXT NOT NULL,
            mode TEXT,
            citations TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL
        );
        CREATE INDEX messages_chat ON messages(chat_id, id);
        """
    )


def _v3(db: Database) -> None:
    """An answer the user stopped is kept with what was streamed, and marked so."""
    db.execute("ALTER TABLE messages ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0")


def _v4(db: Database) -> None:
    """What an answer read (one entry per retrieval) is kept beside it, and the citations saved before
    name their chunk by hash as new ones do (a chunk's hash is its text's, which a citation carries)."""
    db.execute("ALTER TABLE messages ADD COLUMN reads TEXT NOT NULL DEFAULT '[]'")
    rows = db.execute("SELECT id, citations FROM messages WHERE citations != '[]'").fetchall()
    updates = []
    for message_id, saved in rows:
        citations = json.loads(saved)
        for citation in citations:
            citation.setdefault("hash", text_hash(citation["text"]))
        updates.append((json.dumps(citations), message_id))
    db.conn.executemany("UPDATE messages SET citations = ? WHERE id = ?", updates)


def _v5(db: Database) -> None:
    """Collections imported from a bank file sit beside watched folders: `kind` tells them apart, and an
    imported collection's `path` is its label (relative, so never a watched folder's absolute path).
    `imports` lists the bank files committed but not yet applied to the memory bank and the retrieval
    index, `import_hashes` the texts whose memory and vector each brings (those new to this catalog): a
    start after a crash finishes them (engine/bankfile/importer.py)."""
    db.executescript(
        """
        ALTER TABLE folders ADD COLUMN kind TEXT NOT NULL DEFAULT 'watched'
            CHECK (kind IN ('watched', 'imported'));
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            file TEXT NOT NULL UNIQUE,
            memories INTEGER NOT NULL,
            vectors INTEGER NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE import_hashes (
            import_id INTEGER NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
            hash TEXT NOT NULL,
            PRIMARY KEY (import_id, hash)
        ) WITHOUT ROWID;
        """
    )


def _v6(db: Database) -> None:
    """What parsing learnt of a document beside its text: `meta` (JSON: the encoding a text file was read in
    and how sure that guess is) and `warning` (a readable doubt about a document that was read: the status
    lists it, as it lists failures)."""
    db.executescript(
        """
        ALTER TABLE documents ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE documents ADD COLUMN warning TEXT;
        """
    )


def _v7(db: Database) -> None:
    """The files of watched folders that are not documents (over the size limit, of a type not read, left
    out by an .m3ignore), each with why, so that the status lists what a search will not find. A catalog
    from before has none: the next scan of each folder records them."""
    db.executescript(
        """
        CREATE TABLE skipped (
            folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
            rel_path TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('too_large', 'unsupported', 'ignored')),
            suffix TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (folder_id, rel_path)
        ) WITHOUT ROWID;
        CREATE INDEX skipped_kind ON skipped(kind, suffix);
        """
    )


def _v8(db: Database) -> None:
    """Which parsers and chunker read each document (`parsed_with`, ingester.PARSED_WITH): a document read
    by older ones is read again at the next scan though its file is unchanged, so a parser's fix (an HTML
    page's lines, a CSV's header) reaches the files already in the catalog. A catalog from before has ''."""
    db.execute("ALTER TABLE documents ADD COLUMN parsed_with TEXT NOT NULL DEFAULT ''")


def _v9(db: Database) -> None:
    """A memory answer withdrawn and read again as text (engine/chat/grounding.py) is kept with what was
    withdrawn (JSON `{"text", "names"}`), so that a chat opened later says so as the live answer did."""
    db.execute("ALTER TABLE messages ADD COLUMN withdrawn TEXT")


# The schema's history, oldest first: version N is reached by applying the first N steps. Append only.
MIGRATIONS: tuple[Migration, ...] = (_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9)


def newer_catalog(version: int, known: int) -> CatalogError:
    """The refusal of a catalog whose schema `version` is past the `known` ones."""
    return CatalogError(
        f"The catalog was written by a newer memory3 (schema {version}, this one knows {known}); "
        "upgrade memory3 to use it."
    )
