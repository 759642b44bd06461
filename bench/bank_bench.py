"""`m3 bench bank`: how fast bank files move memories: export, inspect (check only), import into an empty
home, and the same file imported again (a no-op merge), in MB/s and memories/s.

Writing 10,000 memories with the default model takes about 20 minutes on a CPU, so the large bank's
memories come from a tiny random-weight Gemma 3 (bench/tiny_gguf.py: 6 layers, 2 KV heads of 32 dims,
about 100 KiB per 128-token memory under the default profile), written through the real engine path
(`Engine.sync_memories`). The texts are real chunks all the same: generated Markdown files, scanned and
cut by the default model's tokenizer as a user's folder is. Their vectors have the real embedder's size
but are drawn from each text's hash (`_StandIn`: the real one embeds about 30 chunks/s here). A second,
smaller run does the same with the default model, whose memories are about ten times larger. Every figure
is one timed run on a warm page cache (the file was just written); peak RSS is the process's high-water
mark during each step (reset before it where Linux allows).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.engine_bench import text
from bench.machine import machine_info
from bench.tiny_gguf import write_tiny_gguf
from engine.facade import Engine
from engine.models.runtime import Runtime
from engine.retrieval.embedder import Embedder
from ingest.paths import Home

CHUNKS = 10_000  # the tiny model's bank (quick: QUICK_CHUNKS)
QUICK_CHUNKS = 1_000
DEFAULT_CHUNKS = 200  # the default model's bank (quick: QUICK_DEFAULT_CHUNKS)
QUICK_DEFAULT_CHUNKS = 50
PARAGRAPHS = 20  # per generated file; a paragraph of SENTENCES sentences is about one chunk
SENTENCES = 6
WRITE_BATCH = 64  # chunks per memory-writing turn while the source bank is built
MB = 1e6


class _StandIn:
    """The real embedder's name, dimension and weights hash, with a unit vector drawn from each text's
    hash in place of its embedding: the real one embeds about 30 chunks/s on a CPU, which would make
    filling a 10,000-chunk bank take most of an hour. A bank file carries vectors of the same size
    either way, and the compatible import takes them from the file without embedding."""

    def __init__(self, embedder: Embedder) -> None:
        self.name, self.dim, self.weights_hash = embedder.name, embedder.dim, embedder.weights_hash
        self.device = embedder.device

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


def run(
    home: Home,
    model_path: Path,
    device: str | None,
    output_dir: Path,
    quick: bool = False,
    chunks: int | None = None,
    default_chunks: int | None = None,
) -> tuple[dict, str]:
    """Build each source bank, then export, inspect, import and import again (quick: 1,000 and 50 chunks;
    `chunks`, `default_chunks`: other sizes, 0 skips that run)."""
    chunks = (QUICK_CHUNKS if quick else CHUNKS) if chunks is None else chunks
    default_chunks = (
        (QUICK_DEFAULT_CHUNKS if quick else DEFAULT_CHUNKS) if default_chunks is None else default_chunks
    )
    embedder = _StandIn(Embedder.load(home.cache / "embedder", device=device))
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="m3-bank-bench-") as tmp:
        tmp = Path(tmp)
        if chunks:
            tiny = Runtime.load(write_tiny_gguf(tmp / "tiny-gemma3.gguf", "gemma3"), device=device)
            runs["tiny"] = measure(tmp / "tiny", tiny, embedder, model_path, chunks)
        if default_chunks:
            runtime = Runtime.load(model_path, device=device)
            runs["default"] = measure(tmp / "default", runtime, embedder, model_path, default_chunks)
    results = {
        "runs": runs,
        "setup": {
            "texts": f"generated Markdown files of {PARAGRAPHS} paragraphs of {SENTENCES} made-up sentences,"
            f" scanned by Engine.scan and cut by {model_path.name}'s tokenizer",
            "memories": "Engine.sync_memories with the run's model under the engine's default profile;"
            " the `tiny` run's model is a random-weight 6-layer Gemma 3 (bench/tiny_gguf.py)",
            "vectors": f"{embedder.dim}-d unit vectors drawn from each text's hash, under the name and"
            f" weights hash of the real embedder ({embedder.name}): the same bytes in the file, no embedding",
            "import": "Engine.import_bank into an empty home with the same model and embedder (the"
            " compatible path: memories and vectors are taken from the file)",
            "timing": "one run each, warm page cache; MB = 10^6 bytes",
        },
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return results, table(results)


def measure(root: Path, runtime: Runtime, embedder: _StandIn, chunker_model: Path, chunks: int) -> dict:
    """One source home of about `chunks` chunks with memories by `runtime`; the four steps timed."""
    source_home, target_home = Home.at(root / "source"), Home.at(root / "target")
    setup = _fill(source_home, root / "docs", runtime, embedder, chunker_model, chunks)
    bank_file = root / "bench.m3bank"
    source = Engine.open(source_home, runtime=runtime, embedder=embedder)
    target = Engine.open(target_home, runtime=runtime, embedder=embedder)
    try:
        source.load()
        target.load()
        exported, export = _step(lambda on: source.export_bank(bank_file, on_progress=on))
        size = exported.bytes
        inspection, inspect = _step(lambda on: target.inspect_bank(bank_file, on_progress=on))
        imported, import_ = _step(lambda on: target.import_bank(bank_file, on_progress=on))
        again, reimport = _step(lambda on: target.import_bank(bank_file, on_progress=on))
        source_keys = set(source.bank.keys(source.profile.name))
        target_keys = set(target.bank.keys(target.profile.name))
        hashes = {r["hash"] for r in source.catalog.rows("SELECT DISTINCT hash FROM chunks")}
        config = runtime.model.config
        return {
            "model": {
                "file": chunker_model.name if runtime.path == chunker_model else "tiny random Gemma 3",
                "arch": config.arch,
                "n_layer": config.n_layer,
                "n_kv_head": config.n_kv_head,
                "head_dim": config.head_dim,
            },
            "profile": source.profile.name,
            "documents": exported.documents,
            "chunks": exported.chunks,
            "memories": exported.memories,
            "vectors": exported.vectors,
            "bytes_per_memory": source.bank_stats()["bytes_live"] / max(1, len(source_keys)),
            "setup_s": setup,
            "export": {
                **export,
                "bytes": size,
                "mb_s": size / MB / export["s"],
                "memories_s": exported.memories / export["s"],
            },
            "inspect": {
                **inspect,
                "mb_s": size / MB / inspect["s"],
                "compatible": inspection.verdict.compatible,
                "memories_import": inspection.plan.memories_import,
            },
            "import": {
                **import_,
                "mb_s": size / MB / import_["s"],
                "memories_s": imported.plan.memories_import / import_["s"],
                "memories_imported": imported.plan.memories_import,
                "pending": imported.pending,
            },
            "reimport": {
                **reimport,
                "mb_s": size / MB / reimport["s"],
                "memories_imported": again.plan.memories_import,
                "documents_unchanged": again.plan.documents_unchanged,
                "pending": again.pending,
            },
            "checks": {
                "source_memories": len(source_keys),
                "target_memories": len(target_keys),
                "same_memories": source_keys == target_keys,
                "same_chunks": hashes
                == {r["hash"] for r in target.catalog.rows("SELECT DISTINCT hash FROM chunks")},
                "target_vectors": len(target.retriever.stored(hashes)),
                "same_payloads": _same_payloads(
                    source, target, sorted(source_keys)[:: max(1, len(source_keys) // 50)]
                ),
            },
        }
    finally:
        source.close()
        target.close()


def _fill(
    home: Home, docs: Path, runtime: Runtime, embedder: _StandIn, chunker_model: Path, chunks: int
) -> dict:
    """Generate Markdown files until a scan of them gives at least `chunks` chunks, cut as the default
    model cuts them; then write their memories (and vectors) with `runtime`. Seconds of each part."""
    docs.mkdir(parents=True)
    rng = random.Random(chunks)
    scanner = Engine.open(home, model=chunker_model, embedder=embedder)  # its vocabulary only: no weights
    start = time.perf_counter()
    try:
        scanner.add_folder(docs)
        n, per_file = 0, None
        while (have := scanner.catalog.counts()["chunks"]) < chunks:
            if per_file is None:  # a tenth first, to learn how many chunks a file gives
                files = max(1, chunks // PARAGRAPHS // 10)
            else:
                files = max(1, int((chunks - have) / per_file))
            for _ in range(files):
                (docs / f"doc-{n:05d}.md").write_text(_document(rng, n))
                n += 1
            scanner.scan()
            per_file = scanner.catalog.counts()["chunks"] / n
    finally:
        scanner.close()
    scan_s = time.perf_counter() - start
    writer = Engine.open(home, runtime=runtime, embedder=embedder)
    start = time.perf_counter()
    try:
        writer.sync_memories(batch=WRITE_BATCH)
    finally:
        writer.close()
    return {"scan": scan_s, "write_memories": time.perf_counter() - start}


def _document(rng: random.Random, n: int) -> str:
    paragraphs = [text(rng, SENTENCES) for _ in range(PARAGRAPHS)]
    return f"# Notes {n}\n\n" + "\n\n".join(paragraphs) + "\n"


def _step(work: Callable[[Callable[[str, int, int], None]], object]) -> tuple[object, dict]:
    """Run work(on_progress), timed: its result, its seconds, the seconds of each progress stage (from the
    previous stage's last report to this one's last: reports follow the work they count, so the commit
    falls into the first applying stage; "finishing" is what follows the last report) and peak RSS in MiB."""
    _reset_peak()
    rss = _rss_mib()
    last: dict[str, float] = {}  # stage: its last report, in the order stages began
    start = time.perf_counter()

    def on_progress(stage: str, done: int, total: int) -> None:
        last[stage] = time.perf_counter() - start

    result = work(on_progress)
    seconds = time.perf_counter() - start
    marks = [0.0, *last.values(), seconds]
    stages = {stage: marks[i + 1] - marks[i] for i, stage in enumerate([*last, "finishing"])}
    return result, {"s": seconds, "stages_s": stages, "rss_mib": rss, "peak_rss_mib": _peak_mib()}


def _same_payloads(source: Engine, target: Engine, keys: list[str]) -> bool:
    """Whether the sampled memories' stored bytes are the same in both banks."""
    return all(source.bank.encoded(k) == target.bank.encoded(k) for k in keys)


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS, where Linux allows it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def _peak_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:  # no /proc: the whole process's peak (KiB on Linux)
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def table(r: dict) -> str:
    """One Markdown table with a column per run, then a line naming the machine."""
    runs = r["runs"]
    names = {"tiny": "tiny model", "default": "default model"}
    head = [
        f"{names.get(k, k)}: {v['memories']:,} memories of {v['bytes_per_memory'] / 1024:,.0f} KiB"
        for k, v in runs.items()
    ]
    rows = [
        ("bank file size", lambda v: f"{v['export']['bytes'] / MB:,.1f} MB"),
        ("export", lambda v: f"{_fmt(v['export']['s'])} s"),
        ("export MB/s", lambda v: _fmt(v["export"]["mb_s"])),
        ("export memories/s", lambda v: _fmt(v["export"]["memories_s"])),
        ("inspect (check only)", lambda v: f"{_fmt(v['inspect']['s'])} s"),
        ("inspect MB/s", lambda v: _fmt(v["inspect"]["mb_s"])),
        ("import into an empty home", lambda v: f"{_fmt(v['import']['s'])} s"),
        ("import MB/s", lambda v: _fmt(v["import"]["mb_s"])),
        ("import memories/s", lambda v: _fmt(v["import"]["memories_s"])),
        ("same file again (no-op merge)", lambda v: f"{_fmt(v['reimport']['s'])} s"),
        (
            "peak RSS: export / inspect / import",
            lambda v: (
                " / ".join(f"{v[step]['peak_rss_mib']:,.0f}" for step in ("export", "inspect", "import"))
                + " MiB"
            ),
        ),
    ]
    lines = ["| | " + " | ".join(head) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {name} | " + " | ".join(cell(v) for v in runs.values()) + " |" for name, cell in rows]
    m = r["machine"]
    lines += [
        "",
        "Chunks cut by the default model's tokenizer from generated Markdown; vectors of the real embedder's"
        " size, not computed;"
        f" the tiny model is a random-weight 6-layer Gemma 3 standing in for the default one. Machine:"
        f" {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; one run each, warm page cache;"
        f" MB = 10^6 bytes; {r['date']}.",
    ]
    return "\n".join(lines)
