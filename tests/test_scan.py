"""The reconciling scan on real folders: whatever happened while nothing was running is found at the next
scan, moves keep their chunks, ignore rules and the size limit hold, and bad files fail alone."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest

import ingest.ignore
import ingest.ingester
import ingest.scan
from ingest.catalog import FOLDER_NOT_UTF8, NAME_NOT_UTF8, Catalog, Document
from ingest.config import IngestConfig
from ingest.errors import FolderError, NotFoundError
from ingest.folders import add_folder, remove_folder
from ingest.ingester import Ingester
from ingest.queue import CRASHED, MAX_ATTEMPTS
from ingest.scan import Scanning, ScanStopped
from ingest.watcher import Batch

PARAGRAPHS = [f"Paragraph {i} is about the topic number {i} and nothing else at all." for i in range(6)]
TEXT = "\n\n".join(PARAGRAPHS) + "\n"


def words(text: str) -> int:
    return len(text.split())


def write(path: Path, text: str = TEXT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def queued(catalog: Catalog) -> list[int]:
    return [r["document_id"] for r in catalog.rows("SELECT document_id FROM jobs ORDER BY document_id")]


def documents(catalog: Catalog) -> dict[str, Document]:
    return {rel: doc for folder in catalog.folders() for rel, doc in catalog.documents(folder.id).items()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    return tmp_path / "docs"


@pytest.fixture
def ingester(catalog: Catalog, root: Path) -> Ingester:
    add_folder(catalog, root)
    return Ingester(catalog, words, IngestConfig(max_chunk_tokens=16))  # one paragraph per chunk


def synced(ingester: Ingester):
    report = ingester.scan()
    ingester.process_pending()
    return report


def test_new_files_are_catalogued_queued_and_chunked(ingester: Ingester, root: Path):
    write(root / "a.txt")
    write(root / "sub" / "b.md", "# Title\n\nSome words.\n")
    report = synced(ingester)
    assert (report.new, report.changed, report.deleted) == (2, 0, 0)
    docs = documents(ingester.catalog)
    assert sorted(docs) == ["a.txt", "sub/b.md"]
    assert {d.status for d in docs.values()} == {"ok"}
    assert len(ingester.catalog.chunk_hashes(docs["a.txt"].id)) == len(PARAGRAPHS)
    assert ingester.status().progress.chunks_pending == ingester.catalog.counts()["chunks"]


def test_an_edit_reparses_and_keeps_the_unchanged_chunks(ingester: Ingester, root: Path):
    path = write(root / "a.txt")
    synced(ingester)
    doc = documents(ingester.catalog)["a.txt"]
    before = ingester.catalog.chunk_hashes(doc.id)
    ingester.catalog.complete_memory_work(written=before)
    write(path, TEXT.replace("topic number 3", "topic number three, edited"))
    report = synced(ingester)
    after = ingester.catalog.chunk_hashes(doc.id)
    assert report.changed == 1 and documents(ingester.catalog)["a.txt"].id == doc.id
    assert len(set(before) & set(after)) == len(PARAGRAPHS) - 1
    assert sorted(w.action for w in ingester.catalog.pending_memory_work()) == ["drop", "write"]


def test_documents_older_parsers_read_are_read_again_once(ingester: Ingester, root: Path, tmp_path: Path):
    """A parser's fix reaches unchanged files: a document read by other parsers (PARSED_WITH) is queued at
    the next scan and read again, keeping its id and its memories; not one whose bytes crashed the process,
    nor one whose folder is missing now; and only once."""
    write(root / "a.txt")
    write(root / "crash.txt", "Bytes that killed the parser once.\n")
    synced(ingester)
    cat = ingester.catalog
    docs = documents(cat)
    hashes = cat.chunk_hashes(docs["a.txt"].id)
    cat.complete_memory_work(written=hashes)
    assert {r["parsed_with"] for r in cat.rows("SELECT parsed_with FROM documents")} == {
        ingest.ingester.PARSED_WITH
    }
    cat.update_document(docs["crash.txt"].id, status="failed", error=CRASHED)
    with cat.atomic():  # what an older memory3 left: other parsers, and lines they got wrong
        cat.db.execute("UPDATE documents SET parsed_with = 'parsers 0, chunker 2'")
        cat.db.execute("UPDATE chunks SET line_start = 99, line_end = 99")
    report = ingester.scan()
    assert (report.new, report.changed, report.deleted) == (0, 0, 0)  # the files did not change
    assert queued(cat) == [docs["a.txt"].id]
    ingester.process_pending()
    a = docs["a.txt"].id
    assert documents(cat)["a.txt"].id == a and cat.chunk_hashes(a) == hashes
    lines = cat.rows("SELECT line_start FROM chunks WHERE document_id = ? ORDER BY ord", (a,))
    assert [r["line_start"] for r in lines] == [1, 3, 5, 7, 9, 11]
    assert not {w.hash for w in cat.pending_memory_work()} & set(hashes)  # same texts: no memory rewritten
    assert documents(cat)["crash.txt"].error == CRASHED
    ingester.scan()
    assert queued(cat) == []  # read again once
    with cat.atomic():
        cat.db.execute("UPDATE documents SET parsed_with = ''")
    root.rename(tmp_path / "unplugged")
    ingester.scan()
    assert queued(cat) == []  # its file is not there: it waits for its folder


def test_renames_and_moves_keep_the_document_and_its_chunks(ingester: Ingester, root: Path):
    write(root / "a.txt")
    write(root / "x" / "b.txt", "Another document entirely.\n")
    synced(ingester)
    ids = {rel: d.id for rel, d in documents(ingester.catalog).items()}
    hashes = ingester.catalog.chunk_hashes(ids["a.txt"])
    (root / "a.txt").rename(root / "renamed.txt")
    (root / "y").mkdir()
    (root / "x" / "b.txt").rename(root / "y" / "b.txt")
    report = ingester.scan()
    assert (report.moved, report.new, report.deleted) == (2, 0, 0)
    assert ingester.catalog.counts()["jobs"] == 0  # nothing to parse again
    after = documents(ingester.catalog)
    assert {rel: d.id for rel, d in after.items()} == {"renamed.txt": ids["a.txt"], "y/b.txt": ids["x/b.txt"]}
    assert ingester.catalog.chunk_hashes(ids["a.txt"]) == hashes


def test_a_move_between_watched_folders_keeps_the_document(ingester: Ingester, root: Path, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    add_folder(ingester.catalog, other)
    write(root / "a.txt")
    synced(ingester)
    doc_id = documents(ingester.catalog)["a.txt"].id
    (root / "a.txt").rename(other / "a.txt")
    assert ingester.scan().moved == 1
    (doc,) = ingester.catalog.documents(ingester.catalog.folders()[1].id).values()
    assert doc.id == doc_id and ingester.catalog.document_path(doc) == other / "a.txt"


def test_deleted_files_are_removed_and_their_memories_dropped(ingester: Ingester, root: Path):
    write(root / "a.txt")
    write(root / "b.txt", PARAGRAPHS[0] + "\n\nA paragraph found in this second file and in no other one.\n")
    synced(ingester)
    ingester.catalog.complete_memory_work(written=[w.hash for w in ingester.catalog.pending_memory_work()])
    (root / "a.txt").unlink()
    assert ingester.scan().deleted == 1
    assert list(documents(ingester.catalog)) == ["b.txt"]
    drops = [w for w in ingester.catalog.pending_memory_work() if w.action == "drop"]
    assert len(drops) == len(PARAGRAPHS) - 1  # the first paragraph is still used by b.txt


def test_a_touched_file_is_hashed_but_not_parsed_again(ingester: Ingester, root: Path):
    path = write(root / "a.txt")
    synced(ingester)
    os.utime(path, ns=(1, 10**18))
    report = ingester.scan()
    assert (report.changed, ingester.catalog.counts()["jobs"]) == (0, 0)
    assert documents(ingester.catalog)["a.txt"].mtime_ns == 10**18


def test_unchanged_size_and_mtime_skip_reading(ingester: Ingester, root: Path, monkeypatch):
    for i in range(5):
        write(root / f"{i}.txt")
    synced(ingester)
    reads: list[Path] = []
    monkeypatch.setattr(ingest.scan, "sha256_file", lambda p: reads.append(p) or "x")
    report = ingester.scan()
    assert (report.new, report.changed, report.deleted, reads) == (0, 0, 0, [])


def test_ignore_rules(ingester: Ingester, root: Path):
    kept = ["a.txt", "notes/b.md", "deep/er/c.txt", "keep.log.txt"]
    ignored = [
        ".hidden.txt",
        ".git/config.txt",
        "node_modules/x/readme.md",
        "__pycache__/m.txt",
        ".venv/lib/doc.txt",
        "sub/.cache/c.txt",
        "a.txt~",
        "a.txt.swp",
        "~$report.docx",
        "#draft.txt#",
        "photo.png",
        "tool.exe",
        "drafts/d.txt",
        "x.log.txt",
        "notes/secret.md",
        "deep/private/p.txt",
    ]
    for rel in kept + ignored:
        write(root / rel, "some words\n")
    write(root / ".m3ignore", "drafts/\n*.log.txt\n!keep.log.txt\n")
    write(root / "notes" / ".m3ignore", "secret.md\n")
    write(root / "deep" / ".m3ignore", "private/\n")
    synced(ingester)
    assert sorted(documents(ingester.catalog)) == sorted(kept)


def test_a_new_m3ignore_removes_what_it_now_excludes(ingester: Ingester, root: Path):
    write(root / "a.txt")
    write(root / "b.txt", "other\n")
    synced(ingester)
    write(root / ".m3ignore", "b.txt\n")
    assert ingester.scan().deleted == 1
    assert list(documents(ingester.catalog)) == ["a.txt"]


def test_files_over_the_size_limit_are_ignored(catalog: Catalog, root: Path):
    add_folder(catalog, root)
    write(root / "small.txt", "x" * 1000)
    write(root / "large.txt", "x" * 3000)
    ingester = Ingester(catalog, words, IngestConfig(max_file_mb=2000 / 2**20))
    synced(ingester)
    assert list(documents(catalog)) == ["small.txt"]
    assert [path.name for path, _ in ingester.status().skipped.too_large_files] == ["large.txt"]


def skipped(ingester: Ingester) -> dict[str, tuple[str, str]]:
    """Relative path -> (kind, reason) of every file recorded as no document."""
    return {rel: (s.kind, s.reason) for f in ingester.catalog.folders() for rel, s in skipped_of(ingester, f)}


def skipped_of(ingester: Ingester, folder) -> list:
    return list(ingester.catalog.skipped(folder.id).items())


def test_files_that_are_no_documents_are_listed_with_why(catalog: Catalog, root: Path):
    """What a search will not find is listed, not dropped silently: files over the size limit by name,
    types memory3 does not read by suffix, what .m3ignore leaves out as a count; hidden files and tools'
    folders are not worth a line."""
    add_folder(catalog, root)
    ingester = Ingester(catalog, words, IngestConfig(max_file_mb=1))
    write(root / "notes.txt")
    (root / "scan.pdf").write_bytes(b"%PDF-1.7\n" + b"x" * (3 * 2**19))  # 1.5 MB
    for rel in ["a.png", "sub/b.PNG", "c.png", "setup.exe"]:
        write(root / rel, "pixels")
    write(root / "tool").write_bytes(b"\x7fELF\x00\x01\x02" * 100)  # an executable: no suffix, not text
    write(root / "drafts" / "d.txt")
    write(root / "x.log.txt")
    write(root / ".m3ignore", "drafts/\n*.log.txt\n")
    for rel in [".hidden.png", "node_modules/m.png", "a.txt~", ".git/objects/ab"]:
        write(root / rel, "tool state")
    synced(ingester)
    assert sorted(documents(catalog)) == ["notes.txt"]
    assert skipped(ingester) == {
        "scan.pdf": ("too_large", "1.5 MB, over the 1 MB limit (max_file_mb)"),
        "a.png": ("unsupported", "memory3 does not read .png files"),
        "c.png": ("unsupported", "memory3 does not read .png files"),
        "sub/b.PNG": ("unsupported", "memory3 does not read .png files"),
        "setup.exe": ("unsupported", "memory3 does not read .exe files"),
        "tool": ("unsupported", "no suffix, and not text"),
        "drafts": ("ignored", "left out by .m3ignore"),
        "x.log.txt": ("ignored", "left out by .m3ignore"),
    }
    k = ingester.status().skipped
    assert (k.too_large, k.unsupported, k.ignored) == (1, 5, 2)
    assert k.too_large_files == [(root / "scan.pdf", "1.5 MB, over the 1 MB limit (max_file_mb)")]
    assert k.unsupported_types == [(".png", 3), ("", 1), (".exe", 1)]

    # gone from the list as soon as it is no longer true: deleted, shrunk, text now, no longer left out
    (root / "a.png").unlink()
    (root / "scan.pdf").write_bytes(b"%PDF-1.7\n")
    (root / "tool").write_text("#!/bin/sh\necho a script now\n")
    (root / ".m3ignore").write_text("drafts/\n")
    report = synced(ingester)
    assert (report.new, report.deleted) == (3, 0)
    assert sorted(documents(catalog)) == ["notes.txt", "scan.pdf", "tool", "x.log.txt"]
    assert set(skipped(ingester)) == {"c.png", "sub/b.PNG", "setup.exe", "drafts"}
    # the watcher's batches keep the list as scans do: a file, a folder, one removed
    (root / "sub" / "e.zip").write_bytes(b"PK")
    (root / "c.png").unlink()
    ingester.apply(Batch(frozenset({root / "sub", root / "c.png"}), (), 2))
    assert set(skipped(ingester)) == {"sub/b.PNG", "sub/e.zip", "setup.exe", "drafts"}
    remove_folder(catalog, root)
    assert ingester.status().skipped.unsupported == 0


def test_a_binary_without_a_suffix_is_not_read_again_while_unchanged(
    catalog: Catalog, root: Path, monkeypatch
):
    add_folder(catalog, root)
    write(root / "tool").write_bytes(b"\x00\x01binary" * 100)
    synced(Ingester(catalog, words))
    sniffed: list[Path] = []
    real = ingest.ignore.is_supported
    monkeypatch.setattr(ingest.ignore, "is_supported", lambda path: sniffed.append(path) or real(path))
    synced(Ingester(catalog, words))  # a new process: what it knows comes from the catalog
    assert sniffed == []
    (root / "tool").write_bytes(b"\x00\x01changed" * 100)
    synced(Ingester(catalog, words))
    assert sniffed == [root / "tool"]


def test_bad_files_fail_alone_with_a_reason(ingester: Ingester, root: Path):
    write(root / "good.txt")
    write(root / "broken.pdf", "%PDF-1.7 this is not really a PDF")
    (root / "loop1.txt").symlink_to(root / "loop2.txt")
    (root / "loop2.txt").symlink_to(root / "loop1.txt")
    (root / "dangling.txt").symlink_to(root / "nowhere.txt")
    synced(ingester)
    status = ingester.status()
    reasons = {path.name: reason for path, reason in status.failures}
    assert set(reasons) == {"broken.pdf", "loop1.txt", "loop2.txt"}
    assert reasons["loop1.txt"] == "symbolic link loop"
    assert reasons["broken.pdf"]  # the parser's words, whatever they are
    assert status.progress.files_parsed == 1


def test_files_without_a_suffix_are_documents_when_they_are_text(ingester: Ingester, root: Path):
    """README, Makefile, a script in bin/ are read as text; an executable is not a document at all: not a
    failure listed for every binary in a bin/ folder. A dot-file stays out, as every hidden file does."""
    for rel in ("README", "Makefile", "bin/deploy", ".bashrc"):
        write(root / rel, "#!/bin/sh\necho some words\n")
    (root / "bin" / "tool").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + bytes(range(256)) * 64)
    report = synced(ingester)
    assert sorted(documents(ingester.catalog)) == ["Makefile", "README", "bin/deploy"]
    assert (report.new, report.failed, ingester.status().failures) == (3, 0, [])
    assert {d.status for d in documents(ingester.catalog).values()} == {"ok"}
    (root / "README").write_bytes(bytes(100))  # turned binary: no longer a document
    assert ingester.scan().deleted == 1
    assert sorted(documents(ingester.catalog)) == ["Makefile", "bin/deploy"]


def test_a_guessed_encoding_is_recorded_and_an_unsure_one_listed(ingester: Ingester, root: Path):
    (root / "street.txt").write_bytes("Straße 12".encode("cp1252"))  # short: cp1252, but unsure
    (root / "letter.txt").write_bytes(("Die Größe der Straße ist übermäßig. " * 5).encode("cp1252"))
    write(root / "plain.txt")
    synced(ingester)
    rows = ingester.catalog.rows("SELECT rel_path, status, meta, warning FROM documents ORDER BY rel_path")
    saved = {r["rel_path"]: (r["status"], json.loads(r["meta"]), r["warning"]) for r in rows}
    status, meta, warning = saved["street.txt"]
    assert status == "ok" and meta["encoding"] == "cp1252" and meta["encoding_confidence"] < 0.5
    sure = f"{meta['encoding_confidence']:.0%} sure"
    assert warning.startswith(f"encoding guessed as cp1252 ({sure}): ambiguous, it reads as well in ")
    assert saved["letter.txt"] == ("ok", {"encoding": "cp1252", "encoding_confidence": 1.0}, None)
    assert saved["plain.txt"] == ("ok", {"encoding": "utf-8", "encoding_confidence": 1.0}, None)
    assert ingester.status().warnings == [(root / "street.txt", warning)]
    assert ingester.status().failures == []
    (root / "street.txt").write_text("Straße 12")  # saved again as UTF-8: the doubt goes
    synced(ingester)
    assert ingester.status().warnings == []


def test_a_document_that_kills_the_process_is_given_up_per_content(
    ingester: Ingester, root: Path, monkeypatch
):
    """A parser that segfaults takes the process with it: each restart claimed the job again, forever. After
    MAX_ATTEMPTS unfinished claims the document fails, and so does the same content anywhere, until it
    changes."""
    write(root / "poison.txt", "These bytes crash the parser.\n")
    ingester.scan()
    for _ in range(MAX_ATTEMPTS):  # claimed, then the process died: its lease is reclaimed, never completed
        ingester.queue.release(ingester.queue.claim())
    monkeypatch.setattr(ingest.ingester, "parse", lambda path: pytest.fail(f"{path} was parsed again"))
    ingester.process_pending()
    assert ingester.status().failures == [(root / "poison.txt", CRASHED)]
    (root / "poison.txt").touch()  # same bytes: still given up
    write(root / "copy.txt", "These bytes crash the parser.\n")  # same bytes elsewhere: given up at once
    synced(ingester)
    assert ingester.status().failures == [(root / "copy.txt", CRASHED), (root / "poison.txt", CRASHED)]
    monkeypatch.undo()
    write(root / "poison.txt", "Fixed: these bytes read fine.\n")  # changed: tried again, from zero
    synced(ingester)
    assert ingester.status().failures == [(root / "copy.txt", CRASHED)]
    assert documents(ingester.catalog)["poison.txt"].status == "ok"


def test_a_document_changed_after_crashes_is_read_from_its_first_attempt(ingester: Ingester, root: Path):
    """The process died on the file MAX_ATTEMPTS times, then the user fixed it: the new bytes are read (its
    job kept counting, and gave the new content up unread)."""
    write(root / "poison.txt", "These bytes crash the parser.\n")
    ingester.scan()
    for _ in range(MAX_ATTEMPTS):
        ingester.queue.release(ingester.queue.claim())
    write(root / "poison.txt", "Fixed: these bytes read fine, and there are more of them.\n")
    synced(ingester)
    assert documents(ingester.catalog)["poison.txt"].status == "ok" and ingester.status().failures == []


def test_a_retry_of_a_crashed_document_retries_every_copy_of_its_bytes(
    ingester: Ingester, root: Path, monkeypatch
):
    """`m3 retry` of a document given up for crashing failed again at once while another copy of its bytes
    was given up: the copies are one content, tried again together (once the parser is fixed, both read)."""
    for name in ("poison.txt", "copy.txt"):
        write(root / name, "These bytes crash the parser.\n")
    ingester.scan()
    while (job := ingester.queue.claim()) is not None and job.attempts <= MAX_ATTEMPTS:
        ingester.queue.release(job)  # each claim died
    ingester.queue.release(job)
    monkeypatch.setattr(ingest.ingester, "parse", lambda path: pytest.fail(f"{path} was parsed again"))
    ingester.process_pending()
    assert ingester.status().failures == [(root / "copy.txt", CRASHED), (root / "poison.txt", CRASHED)]
    monkeypatch.undo()  # the parser fixed
    ingester.retry(root / "poison.txt")
    ingester.process_pending()
    assert ingester.status().failures == []
    assert {d.status for d in documents(ingester.catalog).values()} == {"ok"}


def test_a_renamed_watched_folder_is_shown_missing_and_its_new_name_takes_its_documents(
    ingester: Ingester, root: Path, tmp_path: Path, monkeypatch
):
    write(root / "a.txt")
    write(root / "sub" / "b.md", "# Title\n\nSome words.\n")
    synced(ingester)
    before = {
        rel: (d.id, ingester.catalog.chunk_hashes(d.id)) for rel, d in documents(ingester.catalog).items()
    }
    renamed = root.rename(tmp_path / "notes-2024")
    assert ingester.status().missing == [root]  # status says so (only `ingest` printed a warning)
    assert ingester.scan().missing == [root]
    monkeypatch.setattr(ingest.ingester, "parse", lambda path: pytest.fail(f"{path} was parsed again"))
    add_folder(ingester.catalog, renamed)
    report = synced(ingester)
    assert (report.moved, report.new) == (2, 0)  # the same bytes under the new name: moves, nothing new
    new_folder = next(f for f in ingester.catalog.folders() if f.path == renamed)
    after = ingester.catalog.documents(new_folder.id)
    assert {rel: (d.id, ingester.catalog.chunk_hashes(d.id)) for rel, d in after.items()} == before
    assert ingester.status().missing == [root]  # kept (an unplugged drive comes back) until unwatched
    remove_folder(ingester.catalog, root)
    assert ingester.status().missing == [] and len(documents(ingester.catalog)) == 2


def latin1(folder: Path, *names: bytes) -> Path:
    """A file (and folders on the way) named with these Latin-1 bytes, which are not UTF-8."""
    path = os.path.join(os.fsencode(folder), *names)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(TEXT.encode())
    return Path(os.fsdecode(path))


def test_a_file_name_that_is_not_utf8_fails_alone_and_stays_listed(ingester: Ingester, root: Path):
    write(root / "good.txt")
    resume = latin1(root, b"r\xe9sum\xe9-2019.txt")
    latin1(root, b"\xe9t\xe9", b"notes.txt")  # a folder of such a name fails, once (the next test)
    report = synced(ingester)
    assert (report.new, report.failed) == (3, 2)
    reasons = {str(path.relative_to(root)): reason for path, reason in ingester.status().failures}
    assert reasons == {"r\\xe9sum\\xe9-2019.txt": NAME_NOT_UTF8, "\\xe9t\\xe9": FOLDER_NOT_UTF8}
    assert ingester.status().progress.files_parsed == 1
    again = synced(ingester)  # nothing changed: nothing new, nothing failed twice
    assert (again.new, again.changed, again.deleted, again.failed) == (0, 0, 0, 0)
    with pytest.raises(NotFoundError):  # a retry cannot help a name: it stays failed
        ingester.retry(resume)
    seen = ingester.apply(Batch(frozenset({resume}), (), 1))  # what the watcher hands over
    assert (seen.new, seen.changed, seen.deleted) == (0, 0, 0)
    resume.unlink()
    gone = ingester.apply(Batch(frozenset({resume}), (), 1))
    assert gone.deleted == 1 and len(ingester.status().failures) == 1


def test_a_folder_whose_name_is_not_utf8_fails_once_for_all_its_files(ingester: Ingester, root: Path):
    """A folder named in Latin-1 (from an old archive) was blamed on each file inside it, a failure per file,
    and the watcher's events from inside it each added one: the folder fails, once, until it is renamed."""
    write(root / "good.txt")
    inside = [latin1(root, b"\xe9t\xe9", *names) for names in ((b"a.txt",), (b"b.txt",), (b"sub", b"c.txt"))]
    folder = inside[0].parent
    report = synced(ingester)
    assert (report.new, report.failed) == (2, 1)
    assert ingester.status().failures == [(root / "\\xe9t\\xe9", FOLDER_NOT_UTF8)]
    seen = ingester.apply(Batch(frozenset([*inside, folder]), (), 4))  # what the watcher hands over
    assert (seen.new, seen.changed, seen.deleted, seen.failed) == (0, 0, 0, 0)
    with pytest.raises(NotFoundError, match="until it is renamed"):  # a retry cannot mend a name
        ingester.retry(folder)
    folder.rename(root / "ete")
    renamed = ingester.apply(Batch(frozenset({folder, root / "ete"}), (), 2))
    ingester.process_pending()
    assert (renamed.new, renamed.deleted) == (3, 1) and ingester.status().failures == []
    assert sorted(documents(ingester.catalog)) == ["ete/a.txt", "ete/b.txt", "ete/sub/c.txt", "good.txt"]


def test_a_real_name_that_reads_like_an_escaped_one_is_kept(ingester: Ingester, root: Path):
    write(root / "r\\xe9sum\\xe9.txt")  # backslashes in a real name: the catalog form of the next one
    latin1(root, b"r\xe9sum\xe9.txt")
    synced(ingester)  # they collided in the catalog and every scan failed
    assert documents(ingester.catalog)["r\\xe9sum\\xe9.txt"].status == "ok"


def test_a_folder_whose_name_is_not_utf8_is_refused_in_one_sentence(catalog: Catalog, tmp_path: Path):
    folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9")))
    folder.mkdir()
    with pytest.raises(FolderError, match=r"caf\\xe9: the name is not valid UTF-8"):
        add_folder(catalog, folder)
    assert catalog.folders() == []


def test_an_unreadable_file_fails_with_permission_denied(ingester: Ingester, root: Path, monkeypatch):
    path = write(root / "secret.txt")
    write(root / "open.txt")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads every file: fail the read as it fails for anyone else
        real = ingest.ingester.sha256_file

        def deny(p: Path) -> str:
            if p == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(p))
            return real(p)

        monkeypatch.setattr(ingest.ingester, "sha256_file", deny)
    try:
        synced(ingester)
        assert ingester.status().failures == [(path, "permission denied")]
        assert ingester.status().progress.files_parsed == 1
    finally:
        path.chmod(0o600)


def test_a_folder_link_loop_does_not_trap_the_scan(ingester: Ingester, root: Path):
    write(root / "sub" / "a.txt")
    (root / "sub" / "back").symlink_to(root)
    synced(ingester)
    assert list(documents(ingester.catalog)) == ["sub/a.txt"]


SYSTEM_FILES = {
    "passwd.txt": "/etc/passwd",
    "hosts": "/etc/hosts",
    "cpu.txt": "/proc/cpuinfo",
    "environ": "/proc/self/environ",
}


def test_links_to_system_files_are_not_followed(ingester: Ingester, root: Path):
    """A link in a watched folder to /etc/passwd made it a document (and /proc/self/environ, the process's
    environment, was read to tell whether it is text): a link into a system folder is not followed, to a
    file as to a folder."""
    write(root / "note.txt")
    for name, target in SYSTEM_FILES.items():
        (root / name).symlink_to(target)
    report = synced(ingester)
    assert list(documents(ingester.catalog)) == ["note.txt"] and report.links == {}
    assert ingester.catalog.skipped(ingester.catalog.folders()[0].id) == {}


def test_a_missing_folder_keeps_its_documents(ingester: Ingester, root: Path, tmp_path: Path):
    write(root / "a.txt")
    synced(ingester)
    root.rename(tmp_path / "unplugged")
    report = ingester.scan()
    assert report.missing == [root] and report.deleted == 0
    assert list(documents(ingester.catalog)) == ["a.txt"]


def test_removing_a_folder_forgets_its_documents(ingester: Ingester, root: Path):
    write(root / "a.txt")
    synced(ingester)
    remove_folder(ingester.catalog, root)
    counts = ingester.catalog.counts()
    assert (counts["documents"], counts["chunks"], counts["memories_to_write"]) == (0, 0, 0)


def test_progress_is_reported_as_files_are_parsed(catalog: Catalog, root: Path):
    add_folder(catalog, root)
    for i in range(3):
        write(root / f"{i}.txt")
    events = []
    synced(Ingester(catalog, words, IngestConfig(max_chunk_tokens=16), on_progress=events.append))
    scanned = next(e for e in events if e.scanning is None)  # after the walk's own progress
    assert (scanned.files_seen, scanned.files_pending, scanned.files_parsed) == (3, 3, 0)
    last = events[-1]
    assert (last.files_seen, last.files_pending, last.files_parsed, last.files_failed) == (3, 0, 3, 0)
    assert (last.chunks, last.chunks_pending) == (3 * len(PARAGRAPHS), len(PARAGRAPHS))  # same texts thrice


def test_a_scan_tells_how_far_its_walk_is_while_it_walks(catalog: Catalog, root: Path):
    """Progress during the scan, not at its end: each folder listed is told (`on_walk`), the first one at
    once to `on_progress` too, before the catalog changes; a stop ends the walk and changes nothing."""
    add_folder(catalog, root)
    for d in range(20):
        for i in range(5):
            write(root / f"d{d:02}" / f"{i}.txt", f"note {d}.{i}\n")
    write(root / "d07" / "photo.png", "pixels")
    walks: list[Scanning | None] = []
    progress: list = []
    ingester = Ingester(catalog, words, on_progress=progress.append, on_walk=walks.append)
    ingester.scan()
    assert walks[0] == Scanning(root, 0, 0) and walks[-2:] == [Scanning(root, 101, 100), None]
    assert {w.folder for w in walks[1:-2]} == {root / f"d{d:02}" for d in range(20)}
    found = [w.files_found for w in walks[:-1]]
    assert found == sorted(found) and 0 < found[len(found) // 2] < 101
    assert progress[0].scanning == walks[0] and progress[0].files_seen == 0  # told before any change
    assert progress[-1].scanning is None and progress[-1].files_seen == 100

    write(root / "d03" / "1.txt", "note 3.1, edited\n")
    write(root / "d12" / "new.txt", "a new note\n")
    walks.clear()
    assert ingester.scan().new == 1
    assert walks[-2:] == [Scanning(root, 102, 2), None]

    stop = threading.Event()
    write(root / "d15" / "later.txt", "not seen: the scan stops first\n")
    stopping = Ingester(catalog, words, on_walk=lambda w: w is not None and w.files_found > 30 and stop.set())
    with pytest.raises(ScanStopped):
        stopping.scan(stop=stop)
    assert "d15/later.txt" not in documents(catalog) and len(documents(catalog)) == 101


def test_a_tokenizer_failing_on_one_text_fails_that_document_only(catalog: Catalog, root: Path, caplog):
    """The user reads one sentence; what the tokenizer said goes to the log."""

    def fussy(text: str) -> int:
        if "poison" in text:
            raise ValueError("cannot count this")
        return words(text)

    add_folder(catalog, root)
    write(root / "good.txt")
    write(root / "bad.txt", "a poison pill\n")
    ingester = Ingester(catalog, fussy, IngestConfig())
    with caplog.at_level(logging.INFO, logger="ingest.ingester"):
        synced(ingester)
    assert ingester.status().failures == [(root / "bad.txt", "could not cut the text into chunks")]
    assert "ValueError: cannot count this" in caplog.text
    assert ingester.status().progress.files_parsed == 1


def test_chunks_fit_the_models_token_budget(catalog: Catalog, root: Path, model_path: Path):
    from engine.models.tokenizer import Tokenizer

    tok = Tokenizer(model_path)
    add_folder(catalog, root)
    write(root / "long.md", "# A long document\n\n" + " ".join(PARAGRAPHS * 40) + "\n")
    synced(Ingester(catalog, lambda s: len(tok.encode(s)), IngestConfig()))
    texts = [r["text"] for r in catalog.db.query("SELECT text FROM chunks ORDER BY ord")]
    assert len(texts) > 5
    assert max(len(tok.encode(t)) for t in texts) <= 128
