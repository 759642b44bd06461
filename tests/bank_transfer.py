"""Helpers for the bank file tests: engines over homes of their own, a logical snapshot of everything an
import may change (catalog, bank, retrieval index), and a child process that imports or exports until it
is killed.

Run as a script, it is that child: `bank_transfer.py import|export ROOT MODEL FILE EMBEDDER_CACHE` opens
an engine over ROOT with MODEL, prints "ready", then one line per progress event, then "done".
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import Engine  # noqa: E402


def snapshot(engine: Engine) -> dict:
    """What an import may change, as values: catalog rows (without times or row ids), the bank's memories
    (by key, their bytes hashed) and the retrieval index's items (hash, text, vector)."""
    rows = engine.catalog.rows
    hashes = [r["hash"] for r in rows("SELECT hash FROM memory_work UNION SELECT hash FROM chunks")]
    vectors = engine.retriever.vectors(hashes)
    stored = engine.bank.keys()
    return {
        "folders": rows("SELECT path, kind FROM folders ORDER BY path"),
        "documents": rows(
            "SELECT f.path, d.rel_path, d.sha256, d.size, d.status FROM documents d"
            " JOIN folders f ON f.id = d.folder_id ORDER BY f.path, d.rel_path"
        ),
        "chunks": rows(
            "SELECT f.path, d.rel_path, c.ord, c.hash, c.text, c.char_start, c.char_end, c.line_start,"
            " c.line_end, c.page FROM chunks c JOIN documents d ON d.id = c.document_id"
            " JOIN folders f ON f.id = d.folder_id ORDER BY f.path, d.rel_path, c.ord"
        ),
        "memory_work": rows("SELECT hash, wanted, written FROM memory_work ORDER BY hash"),
        "imports": rows("SELECT file FROM imports"),
        "bank": {key: hashlib.sha256(engine.bank.encoded(key)).hexdigest() for key in stored},
        "index": {h: hashlib.sha256(v.tobytes()).hexdigest() for h, v in vectors.items()},
        "index_size": len(engine.retriever),
    }


def _child(action: str, root: str, model: str, file: str, embedder_cache: str) -> None:
    from engine.retrieval.embedder import Embedder

    engine = Engine.open(root, model=model, embedder=Embedder.load(Path(embedder_cache)))
    engine.load()
    print("ready", flush=True)

    def say(stage: str, done: int, total: int) -> None:
        print(stage, done, total, flush=True)

    if action == "import":
        engine.import_bank(file, on_progress=say)
    else:
        engine.export_bank(file, on_progress=say)
    print("done", flush=True)
    engine.close()


if __name__ == "__main__":
    _child(*sys.argv[1:6])
