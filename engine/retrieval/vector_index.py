"""The approximate nearest-neighbour index over chunk vectors: hnswlib (cosine), persisted in a folder.

The folder holds `index.bin` (hnswlib's own format) and `meta.json`, which names the embedder and the
dimension, counts the live vectors, and records the size and CRC-32 of index.bin: hnswlib trusts the
bytes it loads, so a damaged file is caught here before it reaches hnswlib. The index is never the only
copy of a vector, so a damaged or foreign folder is an error for the caller to answer by rebuilding.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import hnswlib
import numpy as np

from engine.errors import IndexDamagedError, IndexMismatchError
from ingest.atomic import replacing, write_atomic

FORMAT = 1
M = 16
EF_CONSTRUCTION = 200
EF_SEARCH = 256  # recall@5 on the bench's synthetic 100k vectors: 0.43 at 64, 0.70 at 256, for ~1 ms
INITIAL_CAPACITY = 1024
# Deleted vectors stay in the graph, still routing searches, until they pass this share of the live ones;
# then the owner rebuilds (Retriever.compact). Reusing their slots instead (allow_replace_deleted) lost
# recall@5 at once on the soak's churn (bench/soak_bench.py: 17-19 of 20 sentinels against 20 of 20 kept
# this way): a reused slot keeps its old in-links (nmslib/hnswlib#308; valkey-io/valkey-search#35).
REBUILD_AT = 0.25


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


class VectorIndex:
    """Unit vectors under int64 ids; `search` returns (id, cosine similarity), best first.

    Ids given to `add` must not be in the index already (deleted ones included): callers use ids that
    are never reused, such as SQLite AUTOINCREMENT keys. Deleted vectors are only marked; once `worn`,
    the owner rebuilds the index from its stored copy.
    """

    def __init__(
        self, folder: Path, embedder: str, dim: int, generation: int = 0, index: hnswlib.Index | None = None
    ) -> None:
        self.folder = Path(folder)
        self.embedder = embedder
        self.dim = dim
        self.generation = generation  # the caller's version of its data that this index reflects
        self._index = index if index is not None else self._empty(INITIAL_CAPACITY)
        self._deleted = 0

    def _empty(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space="cosine", dim=self.dim)
        index.init_index(capacity, M=M, ef_construction=EF_CONSTRUCTION)
        index.set_ef(EF_SEARCH)
        return index

    @classmethod
    def open(cls, folder: Path, embedder: str, dim: int) -> VectorIndex:
        """The index saved in `folder`, or a new empty one if the folder holds none.

        Raises IndexMismatchError for another embedder or dimension, IndexDamagedError for damage.
        """
        folder = Path(folder)
        meta_path, bin_path = folder / "meta.json", folder / "index.bin"
        if not meta_path.exists() and not bin_path.exists():
            return cls(folder, embedder, dim)
        try:
            meta = json.loads(meta_path.read_text())
            fmt, count, generation = meta["format"], meta["count"], meta["generation"]
            size, crc, their_embedder, their_dim = meta["size"], meta["crc32"], meta["embedder"], meta["dim"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexDamagedError(f"The vector index in {folder} has no readable meta.json.") from exc
        if (their_embedder, their_dim) != (embedder, dim):
            raise IndexMismatchError(
                f"The vector index in {folder} was made by {their_embedder} ({their_dim} dimensions), "
                f"not {embedder} ({dim})."
            )
        if fmt != FORMAT:
            raise IndexDamagedError(f"The vector index in {folder} has format {fmt}, not {FORMAT}.")
        try:
            intact = bin_path.stat().st_size == size and _crc32(bin_path) == crc
        except OSError:
            intact = False
        if not intact:
            raise IndexDamagedError(f"The vector index file {bin_path} is missing or damaged.")
        index = hnswlib.Index(space="cosine", dim=dim)
        try:
            index.load_index(str(bin_path))
        except (RuntimeError, MemoryError) as exc:
            raise IndexDamagedError(f"hnswlib cannot read {bin_path}: {exc}") from exc
        index.set_ef(EF_SEARCH)
        self = cls(folder, embedder, dim, generation, index)
        self._deleted = index.get_current_count() - count
        if self._deleted < 0:
            raise IndexDamagedError(f"The vector index file {bin_path} does not match its meta.json.")
        return self

    def __len__(self) -> int:
        """The number of live (not deleted) vectors."""
        return self._index.get_current_count() - self._deleted

    @property
    def worn(self) -> bool:
        """Whether the deleted vectors are more than REBUILD_AT of the live ones: time to `rebuild`."""
        return self._deleted > REBUILD_AT * len(self)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (n, dim) under new `ids` (n,), growing the index when it is full."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        needed = self._index.get_current_count() + len(ids)
        if needed > self._index.get_max_elements():
            self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
        self._index.add_items(vectors, ids)

    def delete(self, ids: Iterable[int]) -> None:
        """Mark `ids` deleted; ids that are absent or already deleted are ignored."""
        for i in ids:
            try:
                self._index.mark_deleted(int(i))
            except RuntimeError:  # "Label not found" or "already deleted"
                continue
            self._deleted += 1

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The `k` nearest live vectors to `vector` as (id, cosine similarity), most similar first."""
        k = min(k, len(self))
        ef = max(EF_SEARCH, k)
        while k > 0:
            self._index.set_ef(ef)
            try:
                labels, distances = self._index.knn_query(np.asarray(vector, np.float32), k=k, num_threads=1)
            except RuntimeError:  # fewer than k reachable: widen the search, then settle for fewer
                if ef < len(self):
                    ef = min(4 * ef, len(self))
                else:
                    k //= 2
                continue
            return [(int(i), 1.0 - float(d)) for i, d in zip(labels[0], distances[0], strict=True)]
        return []

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the whole index by `vectors` under `ids` (the stored copy is the truth)."""
        self._index = self._empty(max(INITIAL_CAPACITY, len(ids)))
        self._deleted = 0
        self.add(ids, vectors)

    def save(self) -> None:
        """Write index.bin, then meta.json, each atomically; a crash between them reads as damage."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with replacing(self.folder / "index.bin") as tmp:
            self._index.save_index(str(tmp))
            meta = {
                "embedder": self.embedder,
                "dim": self.dim,
                "count": len(self),
                "format": FORMAT,
                "generation": self.generation,
                "size": os.path.getsize(tmp),
                "crc32": _crc32(tmp),
            }
        write_atomic(self.folder / "meta.json", json.dumps(meta, indent=2) + "\n")
