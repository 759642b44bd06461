"""kill -9 at random moments: an ingesting process is killed mid-run again and again, then left to finish.
The catalog must end exactly as a clean run's: the same documents and chunk rows, one memory-work row per
chunk text, no job left, nothing doubled or lost, and an intact SQLite file."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlite_utils import Database

CHILD = """
import sys, time
from pathlib import Path
from ingest.catalog import Catalog
from ingest.config import IngestConfig
from ingest.folders import add_folder
from ingest.ingester import Ingester

catalog = Catalog(Path(sys.argv[1]))
if not catalog.folders():
    add_folder(catalog, sys.argv[2])
print("ready", flush=True)  # imports done: kill moments are counted from here

def count_tokens(text):
    time.sleep(0.0003)  # a real tokenizer's pace, so that kills land mid-way
    return len(text.split())

ingester = Ingester(catalog, count_tokens, IngestConfig(max_chunk_tokens=24))
ingester.scan()
while True:  # parse a few documents, then play the engine: write or drop the memories they call for
    parsed = ingester.process_pending(limit=5)
    work = catalog.pending_memory_work(limit=40)
    catalog.complete_memory_work(written=[w.hash for w in work if w.action == "write"],
                                 dropped=[w.hash for w in work if w.action == "drop"])
    if not parsed and not work:
        break
"""

SHARED = "This closing paragraph is the same in many files, so its chunk is shared by all of them.\n"


def make_folder(root: Path, n: int = 200) -> None:
    rng = random.Random(7)
    vocabulary = [f"word{i}" for i in range(500)]
    root.mkdir()
    for i in range(n):
        paragraphs = [
            " ".join(rng.choices(vocabulary, k=rng.randint(5, 40))) + "." for _ in range(rng.randint(2, 8))
        ]
        if i % 3 == 0:
            paragraphs.append(SHARED)
        path = root / f"d{i // 50}" / f"file{i:03}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n\n".join(paragraphs))


def run_child(db: Path, root: Path, kill_after: float | None = None) -> tuple[int, float]:
    """Run the child, SIGKILLed `kill_after` seconds after it is ready; its exit code and working time."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child.stdout.readline()
    ready = time.monotonic()
    if kill_after is not None:
        try:
            child.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
    _, err = child.communicate(timeout=120)
    assert child.returncode in (0, -signal.SIGKILL), err
    return child.returncode, time.monotonic() - ready


def snapshot(db_path: Path) -> dict:
    """Everything the catalog says about the folder, without row ids or timestamps."""
    with Database(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        return {
            "documents": sorted(
                db.execute("SELECT rel_path, size, mtime_ns, sha256, status, error FROM documents").fetchall()
            ),
            "chunks": sorted(
                db.execute(
                    "SELECT d.rel_path, c.ord, c.hash, c.char_start, c.char_end, c.line_start, c.line_end,"
                    " c.page, c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
                ).fetchall()
            ),
            "memory_work": sorted(db.execute("SELECT hash, wanted, written FROM memory_work").fetchall()),
            "chunk_texts": sorted(r[0] for r in db.execute("SELECT DISTINCT hash FROM chunks")),
            "jobs": db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0],
        }


def test_killed_again_and_again_then_finished_equals_a_clean_run(tmp_path: Path):
    root = tmp_path / "folder"
    make_folder(root)
    code, work_s = run_child(tmp_path / "clean.db", root)
    assert code == 0
    clean = snapshot(tmp_path / "clean.db")
    assert clean["jobs"] == 0 and len(clean["documents"]) == 200 and len(clean["chunks"]) > 600
    assert clean["memory_work"] == [(h, 1, 1) for h in clean["chunk_texts"]]

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    moments = [rng.uniform(0, work_s / 3) for _ in range(6)]  # most runs die before the work is done
    crashed = tmp_path / "crashed.db"
    kills = sum(run_child(crashed, root, kill_after=t)[0] == -signal.SIGKILL for t in moments)
    assert run_child(crashed, root)[0] == 0
    assert kills >= 3, f"the kills (seed {seed}, at {moments}) came too late to interrupt anything"
    assert snapshot(crashed) == clean, f"seed {seed}, kills at {moments}"
