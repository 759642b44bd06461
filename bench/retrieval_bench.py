"""`m3 bench retrieval`: embedding throughput, index build time and query latency at 10k and 100k chunks,
and recall in thirteen languages (bench/multilingual.py, the JSON's `multilingual`).

Embedding 100k chunks on a CPU takes an hour, so only a sample is embedded for real (that gives the
throughput); every other chunk gets a random mix of three sampled vectors plus a little noise,
renormalised, so that neighbourhoods look like real ones rather than clusters of copies. Texts are drawn
word by word from a Zipf law over the embedder's English vocabulary (in frequency order), which gives
keyword search the common and rare words of real text. Queries are 64-token passages, as chat retrieves
with its last 64 tokens. Latencies are medians over the queries, each part timed on its own (embed,
vector search, keyword search, fusion) and the whole `search` apart.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench import multilingual
from bench.machine import machine_info
from engine.retrieval.embedder import Embedder
from engine.retrieval.fusion import fuse
from engine.retrieval.retriever import Retriever
from ingest.paths import Home

SIZES = (10_000, 100_000)
EMBEDDED = 512  # chunks embedded for real
MIX = 3  # sampled vectors mixed into each of the others
NOISE = 0.02  # per dimension, added to each mix
QUERIES = 50
K = 5
BATCH = 1_000  # chunks per Retriever.add, as an ingest would send them
CHUNK_WORDS = 126  # 128 word pieces with [CLS] and [SEP]: a memory chunk is at most 128 tokens
QUERY_WORDS = 62  # 64 word pieces: chat retrieves with its last 64 tokens


class _Replay:
    """Stands in for the embedder while building: hands back the vector prepared for each text."""

    def __init__(self, embedder: Embedder, vectors: dict[str, np.ndarray]) -> None:
        self.name, self.dim, self.vectors = embedder.name, embedder.dim, vectors

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def _vectors(sample: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unit vectors: the sample first, then random mixes of sampled vectors plus noise."""
    count, dim = n - len(sample), sample.shape[1]
    picks = rng.integers(0, len(sample), (count, MIX))
    weights = rng.dirichlet(np.ones(MIX), count).astype(np.float32)  # (count, MIX)
    mixed = (rng.standard_normal((count, dim)) * NOISE).astype(np.float32)
    for j in range(MIX):
        mixed += weights[:, j, None] * sample[picks[:, j]]
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.concatenate([sample, mixed])


def _texts(embedder: Embedder, rng: np.random.Generator, count: int, words: int) -> list[str]:
    """`count` texts of `words` words drawn from a Zipf law over the embedder's whole English words."""
    by_id = sorted(embedder.tokenizer.get_vocab().items(), key=lambda kv: kv[1])  # roughly by frequency
    vocab = np.array([w for w, _ in by_id if w.isascii() and w.isalpha() and len(w) > 1])
    p = 1.0 / np.arange(1, len(vocab) + 1)
    drawn = vocab[rng.choice(len(vocab), (count, words), p=p / p.sum())]
    return [" ".join(row) for row in drawn]


def _ms(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000, out


def _latency(r: Retriever, embedder: Embedder, queries: list[str], vectors: np.ndarray) -> tuple[dict, float]:
    """Median milliseconds of each part of a search over `queries`, and the vector search's recall@K."""
    n = max(50, 4 * K)
    times: dict[str, list[float]] = {part: [] for part in ("embed", "vector", "keyword", "fuse", "total")}
    recall = []
    r.search(queries[0], K)  # warm-up
    for q in queries:
        t, v = _ms(lambda q=q: embedder.embed([q])[0])
        times["embed"].append(t)
        t, vector_ids = _ms(lambda v=v: r.vector_search(v, n))
        times["vector"].append(t)
        t, keyword_ids = _ms(lambda q=q: r.keyword_search(q, n))
        times["keyword"].append(t)
        t, _ = _ms(lambda a=vector_ids, b=keyword_ids: r.hashes([i for i, *_ in fuse(a, b, K)]))
        times["fuse"].append(t)
        times["total"].append(_ms(lambda q=q: r.search(q, K))[0])
        exact = np.argsort(-(vectors @ v))[:K] + 1  # ids are 1.. in insertion order
        recall.append(len(set(exact.tolist()) & set(vector_ids[:K])) / K)
    return {part: statistics.median(ts) for part, ts in times.items()}, statistics.mean(recall)


def run(
    home: Home, model_path: Path, device: str | None, output_dir: Path, quick: bool = False
) -> tuple[dict, str]:
    """Measure everything (quick: 10k chunks only); `model_path` is unused (retrieval needs no chat model)."""
    sizes = SIZES[:1] if quick else SIZES
    embedder = Embedder.load(home.cache / "embedder", device=device)
    rng = np.random.default_rng(0)
    texts = _texts(embedder, rng, max(sizes), CHUNK_WORDS)
    queries = _texts(embedder, rng, QUERIES, QUERY_WORDS)

    embedder.embed(texts[:16])  # warm-up
    start = time.perf_counter()
    sample = embedder.embed(texts[:EMBEDDED])
    embed_s = time.perf_counter() - start
    vectors = _vectors(sample, max(sizes), rng)
    pieces = statistics.mean(len(e.ids) for e in embedder.tokenizer.encode_batch(texts[:EMBEDDED]))

    build_s, latency, recall = {}, {}, {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="m3-retrieval-bench-") as tmp:
            replay = _Replay(embedder, dict(zip(texts[:size], vectors[:size], strict=True)))
            start = time.perf_counter()
            with Retriever(Path(tmp), replay) as r:
                for i in range(0, size, BATCH):
                    r.add([(f"chunk-{j}", texts[j]) for j in range(i, min(i + BATCH, size))])
            build_s[size] = time.perf_counter() - start
            with Retriever(Path(tmp), embedder) as r:
                latency[size], recall[size] = _latency(r, embedder, queries, vectors[:size])

    results = {
        "latency_ms": latency,
        "embed_chunks_s": EMBEDDED / embed_s,
        "build_s": build_s,
        "vector_recall_at_k": recall,
        "setup": {
            "embedded_chunks": EMBEDDED,
            "word_pieces_per_chunk": pieces,
            "other_chunks": f"Dirichlet mix of {MIX} sampled vectors + N(0, {NOISE}^2) noise, renormalised",
            "texts": f"{CHUNK_WORDS} words each, Zipf over the embedder's English words",
            "queries": f"{QUERIES} texts of {QUERY_WORDS} words, drawn like the chunks",
            "k": K,
            "add_batch": BATCH,
            "build": "Retriever.add in batches (SQLite rows, FTS5, hnswlib; no embedding) and the final save",
        },
        "embedder": {"name": embedder.name, "device": embedder.device},
        "multilingual": multilingual.measure(embedder),
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return results, table(results)


def table(r: dict) -> str:
    """The results as a Markdown table per corpus size and a line naming the machine, then the multilingual
    recall table."""
    lines = [
        "| chunks | build (s) | embed | vector | keyword | fuse | total (ms) | recall@5 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, ms in r["latency_ms"].items():
        parts = " | ".join(f"{ms[part]:.2f}" for part in ("embed", "vector", "keyword", "fuse", "total"))
        lines.append(
            f"| {size:,} | {r['build_s'][size]:.1f} | {parts} | {r['vector_recall_at_k'][size]:.2f} |"
        )
    m, setup = r["machine"], r["setup"]
    lines += [
        "",
        f"Embedding: {r['embed_chunks_s']:.1f} chunks/s ({setup['word_pieces_per_chunk']:.0f} word pieces "
        f"each) on {r['embedder']['device']}. Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['ram_gib']} GiB RAM, GPU: {m['gpu'] or 'none'}; {r['date']}.",
        "",
        "Recall by language (multilingual):",
        "",
        multilingual.table(r["multilingual"]),
    ]
    return "\n".join(lines)
