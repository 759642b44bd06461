"""The live watcher with the real watchdog observer on real folders: edits show up in the catalog, renames
stay renames, and bursts arrive as a few batches. Every wait polls with a deadline (no fixed sleeps that a
loaded machine could outrun)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ingest.ingester
from ingest.catalog import Catalog
from ingest.config import IngestConfig
from ingest.folders import add_folder
from ingest.ingester import Ingester
from ingest.watcher import Batch, Watcher

DEADLINE_S = 60.0


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    return tmp_path / "docs"


@pytest.fixture
def parses(monkeypatch) -> Counter:
    """How many times each file was parsed."""
    counter: Counter = Counter()
    real = ingest.ingester.parse

    def counting(path: Path):
        counter[path] += 1
        return real(path)

    monkeypatch.setattr(ingest.ingester, "parse", counting)
    return counter


def watching(catalog: Catalog, root: Path, config: IngestConfig) -> Iterator[tuple[Ingester, Watcher]]:
    add_folder(catalog, root)
    ingester = Ingester(catalog, words, config)
    with ingester.watcher() as watcher:
        ingester.scan()
        ingester.process_pending()
        yield ingester, watcher


@pytest.fixture
def live(catalog: Catalog, root: Path) -> Iterator[tuple[Ingester, Watcher]]:
    yield from watching(catalog, root, IngestConfig(quiet_s=0.3, max_latency_s=5.0))


def follow(ingester: Ingester, watcher: Watcher, done: Callable[[], bool], parse: bool = True) -> list[Batch]:
    """Apply the watcher's batches (and parse what they queue) until `done()` holds; the batches seen."""
    batches = []
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "the catalog did not catch up with the folder"
        if (batch := watcher.next_batch(timeout=0.2)) is not None:
            batches.append(batch)
            ingester.apply(batch)
        if parse:
            ingester.process_pending()
    return batches


def settle(ingester: Ingester, watcher: Watcher, quiet_s: float = 1.5) -> list[Batch]:
    """Apply batches until none comes for `quiet_s`: whatever the folder still had to say."""
    batches = []
    while (batch := watcher.next_batch(timeout=quiet_s)) is not None:
        batches.append(batch)
        ingester.apply(batch)
        ingester.process_pending()
    return batches


def texts(catalog: Catalog) -> dict[str, str]:
    """Relative path -> text of its chunks, for every parsed document."""
    out = {}
    for folder in catalog.folders():
        for rel, doc in catalog.documents(folder.id).items():
            if doc.status == "ok":
                rows = catalog.db.query(
                    "SELECT text FROM chunks WHERE document_id = ? ORDER BY ord", [doc.id]
                )
                out[rel] = "".join(r["text"] for r in rows)
    return out


def test_create_edit_rename_delete(live, root: Path, parses: Counter):
    ingester, watcher = live
    catalog = ingester.catalog
    (root / "a.txt").write_text("first words\n")
    follow(ingester, watcher, lambda: texts(catalog) == {"a.txt": "first words\n"})

    # The folder exists (and is watched) before the move: a move into a folder created a moment earlier
    # can reach inotify before the new folder's watch does, and then looks like a delete and a create.
    (root / "sub").mkdir()
    (root / "a.txt").write_text("second words, longer\n")
    follow(ingester, watcher, lambda: texts(catalog) == {"a.txt": "second words, longer\n"})

    (doc_id,) = (d.id for d in catalog.documents(catalog.folders()[0].id).values())
    parsed = sum(parses.values())
    (root / "a.txt").rename(root / "sub" / "b.txt")
    follow(ingester, watcher, lambda: list(texts(catalog)) == ["sub/b.txt"])
    assert catalog.documents(catalog.folders()[0].id)["sub/b.txt"].id == doc_id
    assert sum(parses.values()) == parsed  # a rename is not parsed again

    (root / "sub" / "b.txt").unlink()
    follow(ingester, watcher, lambda: catalog.counts()["documents"] == 0)
    assert catalog.counts()["chunks"] == 0


def test_a_renamed_folder_keeps_its_documents(live, root: Path, parses: Counter):
    ingester, watcher = live
    for i in range(20):
        (root / "old" / "deep").mkdir(parents=True, exist_ok=True)
        (root / "old" / "deep" / f"{i}.txt").write_text(f"file {i}\n")
    follow(ingester, watcher, lambda: len(texts(ingester.catalog)) == 20)
    folder_id = ingester.catalog.folders()[0].id
    ids = {rel.split("/")[-1]: d.id for rel, d in ingester.catalog.documents(folder_id).items()}
    parses.clear()
    (root / "old").rename(root / "new")
    follow(ingester, watcher, lambda: all(rel.startswith("new/deep/") for rel in texts(ingester.catalog)))
    settle(ingester, watcher)
    after = ingester.catalog.documents(folder_id)
    assert {rel.split("/")[-1]: d.id for rel, d in after.items()} == ids
    assert not parses


def test_a_safe_save_through_a_temporary_file(live, root: Path):
    """Editors write a temporary file and rename it over the original."""
    ingester, watcher = live
    (root / "a.txt").write_text("original\n")
    follow(ingester, watcher, lambda: texts(ingester.catalog) == {"a.txt": "original\n"})
    (root / ".a.txt.tmp").write_text("saved safely\n")
    (root / ".a.txt.tmp").replace(root / "a.txt")
    follow(ingester, watcher, lambda: texts(ingester.catalog) == {"a.txt": "saved safely\n"})


def test_an_editor_saving_five_times_a_second_is_parsed_once(catalog: Catalog, root: Path, parses: Counter):
    # quiet_s above the save interval with room for a loaded machine's scheduling delays
    for ingester, watcher in watching(catalog, root, IngestConfig(quiet_s=1.0, max_latency_s=10.0)):
        path = root / "note.txt"
        for i in range(10):
            path.write_text(f"draft number {i}\n")
            time.sleep(0.2)
        follow(ingester, watcher, lambda: texts(catalog) == {"note.txt": "draft number 9\n"})
        settle(ingester, watcher)
        assert parses[path] == 1


def test_a_new_m3ignore_applies_at_once(live, root: Path):
    ingester, watcher = live
    (root / "a.txt").write_text("kept\n")
    (root / "b.txt").write_text("to be ignored\n")
    follow(ingester, watcher, lambda: len(texts(ingester.catalog)) == 2)
    (root / ".m3ignore").write_text("b.txt\n")
    follow(ingester, watcher, lambda: list(texts(ingester.catalog)) == ["a.txt"])


def test_a_burst_of_5000_files_comes_in_a_few_batches(live, root: Path):
    ingester, watcher = live
    catalog = ingester.catalog
    names = [f"f{i:04}.txt" for i in range(5000)]
    for i, name in enumerate(names):
        (root / name).write_text(f"file {i}\n")
    batches = follow(ingester, watcher, lambda: catalog.counts()["documents"] == len(names), parse=False)
    batches += settle(ingester, watcher)
    assert 1 <= len(batches) <= 6
    assert sorted(catalog.documents(catalog.folders()[0].id)) == names
    assert catalog.counts()["jobs"] == len(names)  # one job per document

    # a `git checkout` touching them all: a few batches again, and still one job per document
    now = time.time_ns()
    for name in names:
        os.utime(root / name, ns=(now, now))
    batches = follow(
        ingester,
        watcher,
        lambda: all(d.mtime_ns == now for d in catalog.documents(catalog.folders()[0].id).values()),
        parse=False,
    )
    batches += settle(ingester, watcher)
    assert 1 <= len(batches) <= 6
    assert catalog.counts()["jobs"] == len(names)


def test_lost_events_make_the_next_batch_check_everything(root: Path):
    import logging

    with Watcher([root], quiet_s=0.1) as watcher:
        logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; events lost")
        batch = watcher.next_batch(timeout=DEADLINE_S)
    assert batch is not None and batch.paths == {root}


def test_run_follows_the_folders_until_stopped(catalog: Catalog, root: Path, tmp_path: Path):
    import threading

    add_folder(catalog, root)
    (root / "before.txt").write_text("there before the start\n")
    ingester = Ingester(catalog, words, IngestConfig(quiet_s=0.2))
    stop = threading.Event()
    worker = threading.Thread(target=ingester.run, args=(stop,))
    worker.start()
    try:
        wait_for(lambda: list(texts(catalog)) == ["before.txt"])
        (root / "during.txt").write_text("written while running\n")
        wait_for(lambda: sorted(texts(catalog)) == ["before.txt", "during.txt"])
        (tmp_path / "more").mkdir()
        add_folder(catalog, tmp_path / "more")  # the watch restarts with the new folder
        (tmp_path / "more" / "new.txt").write_text("in a folder added while running\n")
        wait_for(lambda: len(texts(catalog)) == 3)
    finally:
        stop.set()
        worker.join(timeout=DEADLINE_S)
    assert not worker.is_alive()


def test_edits_through_symbolic_links_are_followed(catalog: Catalog, root: Path, tmp_path: Path):
    """A file or folder linked into a watched folder from outside it: an edit to the target was missed
    while following (the old text was cited until a later full scan). The scan and the watcher both follow
    links: the document is at the link's path, the target is watched."""
    import threading

    outside = tmp_path / "elsewhere"
    (outside / "shared").mkdir(parents=True)
    (outside / "plan.txt").write_text("the plan is to sail\n")
    (outside / "shared" / "list.txt").write_text("buy rope\n")
    (root / "plan.txt").symlink_to(outside / "plan.txt")
    (root / "shared").symlink_to(outside / "shared")
    (root / "loop").symlink_to(root)  # a link to the folder itself: not walked again
    (root / "up").symlink_to(tmp_path)  # to a folder holding it: not walked (it would walk everything)
    add_folder(catalog, root)
    ingester = Ingester(catalog, words, IngestConfig(quiet_s=0.2))
    stop = threading.Event()
    worker = threading.Thread(target=ingester.run, args=(stop,))
    worker.start()
    try:
        wait_for(
            lambda: texts(catalog) == {"plan.txt": "the plan is to sail\n", "shared/list.txt": "buy rope\n"}
        )
        (outside / "plan.txt").write_text("the plan is to row\n")  # edited at the target, outside the root
        (outside / "shared" / "list.txt").write_text("buy rope and oars\n")
        (outside / "shared" / "new.txt").write_text("a new note\n")
        wait_for(
            lambda: (
                texts(catalog)
                == {
                    "plan.txt": "the plan is to row\n",
                    "shared/list.txt": "buy rope and oars\n",
                    "shared/new.txt": "a new note\n",
                }
            )
        )
    finally:
        stop.set()
        worker.join(timeout=DEADLINE_S)
    assert not worker.is_alive()


def test_a_file_moved_into_a_folder_just_created_keeps_its_document(
    catalog: Catalog, root: Path, tmp_path: Path, parses: Counter, caplog
):
    """mkdir and mv in quick succession: the move can reach inotify before the new folder's watch does, as
    a delete and a create. Moved out of the folders and, a debounce window later, into another new folder:
    the delete comes in one batch and the create in the next. Both are moves: the document keeps its id,
    its text is not parsed again, and its memories are neither dropped nor written again. A deletion is
    still one, a window later."""
    import logging
    import threading

    caplog.set_level(logging.INFO, logger="ingest.ingester")
    add_folder(catalog, root)
    (root / "a.txt").write_text("a note that travels from folder to folder\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    memories: Counter = Counter()  # (hash, "write" | "drop") -> times done, the engine's part

    def write_memories() -> bool:
        work = catalog.pending_memory_work()
        by = {action: [w.hash for w in work if w.action == action] for action in ("write", "drop")}
        catalog.complete_memory_work(written=by["write"], dropped=by["drop"])
        memories.update((w.hash, w.action) for w in work)
        return bool(work)

    ingester = Ingester(catalog, words, IngestConfig(quiet_s=0.3, max_latency_s=5.0))
    stop = threading.Event()
    worker = threading.Thread(target=ingester.run, args=(stop, write_memories))
    worker.start()
    try:
        wait_for(lambda: list(texts(catalog)) == ["a.txt"] and bool(memories))
        (doc,) = catalog.documents(catalog.folders()[0].id).values()
        written = dict(memories)

        (root / "new").mkdir()
        (root / "a.txt").rename(root / "new" / "a.txt")
        wait_for(lambda: list(texts(catalog)) == ["new/a.txt"])

        caplog.clear()
        (root / "new" / "a.txt").rename(outside / "a.txt")
        wait_for(lambda: "held" in caplog.text)  # the delete's batch is in: the create comes in another
        (root / "later").mkdir()
        (outside / "a.txt").rename(root / "later" / "a.txt")
        wait_for(lambda: list(texts(catalog)) == ["later/a.txt"])
        assert catalog.documents(doc.folder_id)["later/a.txt"].id == doc.id
        assert sum(parses.values()) == 1 and memories == written  # nothing parsed, dropped or written again

        (root / "later" / "a.txt").unlink()
        wait_for(lambda: catalog.counts()["documents"] == 0 and memories != written)
        assert {action for (_, action), n in memories.items() if n} == {"write", "drop"}
        assert all(memories[(h, "drop")] == 1 for h, action in written)
    finally:
        stop.set()
        worker.join(timeout=DEADLINE_S)
    assert not worker.is_alive()


def test_an_edit_to_a_file_linked_twice_reaches_both_links(catalog: Catalog, root: Path, tmp_path: Path):
    """Two links to one file: the scan and the watcher kept one link per target, so an edit there re-read
    one of the two documents and the other cited the old text."""
    target = tmp_path / "elsewhere" / "plan.txt"
    target.parent.mkdir()
    target.write_text("the plan is to sail\n")
    (root / "plan.txt").symlink_to(target)
    (root / "plan (copy).txt").symlink_to(target)
    add_folder(catalog, root)
    ingester = Ingester(catalog, words, IngestConfig(quiet_s=0.3))
    with ingester.watcher() as watcher:
        report = ingester.scan()
        assert report.links == {target: {root / "plan.txt", root / "plan (copy).txt"}}
        watcher.follow(report.links)
        ingester.process_pending()
        target.write_text("the plan is to row\n")  # edited at the target, outside the watched folder
        edited = dict.fromkeys(["plan.txt", "plan (copy).txt"], "the plan is to row\n")
        follow(ingester, watcher, lambda: texts(catalog) == edited)


def test_a_batch_inside_a_followed_folder_does_not_walk_back_into_it(
    catalog: Catalog, root: Path, tmp_path: Path
):
    """A folder made inside a followed folder link, holding a link back to that folder (or to one above
    it): the watcher's batch walked the link, every file of the followed folder was catalogued a second
    time under it until the next full scan. A batch follows links as the scan does; the two agree."""
    outside = tmp_path / "elsewhere"
    (outside / "shared").mkdir(parents=True)
    (outside / "shared" / "list.txt").write_text("buy rope\n")
    (root / "shared").symlink_to(outside / "shared")
    add_folder(catalog, root)
    ingester = Ingester(catalog, words, IngestConfig(quiet_s=0.3))
    with ingester.watcher() as watcher:
        watcher.follow(ingester.scan().links)
        ingester.process_pending()
        (outside / "shared" / "sub").mkdir()
        (outside / "shared" / "sub" / "back").symlink_to(outside / "shared")
        (outside / "shared" / "sub" / "up").symlink_to(outside)
        (outside / "shared" / "sub" / "note.txt").write_text("a new note\n")
        follow(ingester, watcher, lambda: "shared/sub/note.txt" in texts(catalog))
        settle(ingester, watcher)
        assert sorted(texts(catalog)) == ["shared/list.txt", "shared/sub/note.txt"]
        report = ingester.scan()  # what a full scan finds: the same
        assert (report.new, report.deleted, report.moved) == (0, 0, 0)


def test_links_to_system_files_made_while_watching_are_not_followed(live, root: Path):
    """The watcher's batches follow links as the scan does (one rule): a link to /etc/passwd or a /proc file
    made while watching is no document, and its target is not watched."""
    ingester, watcher = live
    (root / "passwd.txt").symlink_to("/etc/passwd")
    (root / "cpu.txt").symlink_to("/proc/cpuinfo")
    (root / "environ").symlink_to("/proc/self/environ")
    (root / "note.txt").write_text("a note beside them\n")
    batches = follow(ingester, watcher, lambda: "note.txt" in texts(ingester.catalog))
    batches += settle(ingester, watcher)
    assert any(root / "passwd.txt" in batch.paths for batch in batches)  # seen, and not followed
    assert list(texts(ingester.catalog)) == ["note.txt"] and ingester.catalog.counts()["documents"] == 1
    assert all(not ingester.apply(batch).links for batch in batches)


def wait_for(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "the catalog did not catch up with the folder"
        time.sleep(0.05)
