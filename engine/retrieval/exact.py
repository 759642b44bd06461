"""Exact nearest-neighbour search over the stored vectors, while they are few.

An HNSW graph is approximate: inserts prune old nodes' in-links, and a node can end with none, so that no
search reaches it, however wide. The million-event soak found one (README "A million updates"): a
sentinel whose vector was the nearest of all to its question, not in the index's top 50. A personal
folder holds thousands to tens of thousands of chunks, where one matrix product over all of them costs
about as much as the embedding of the query or less (0.16 ms for 4,600 vectors of 384 dimensions, 26 ms
for 100,000, on one core here): up to EXACT_UP_TO live vectors, `Retriever.vector_search` answers from
here and is never wrong; above it, from the graph.
"""

from __future__ import annotations

import numpy as np

EXACT_UP_TO = 20_000  # live vectors searched exactly (about 5 ms a query here); beyond, the HNSW index


class ExactVectors:
    """The live vectors as unit rows of one float32 matrix, with their ids; grown by doubling."""

    def __init__(self, dim: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids: (n,) int64; vectors: (n, dim), any length (normalised here)."""
        self.dim = dim
        self._ids = np.empty(0, np.int64)
        self._rows = np.empty((0, dim), np.float32)
        self._n = 0
        self.add(ids, vectors)

    def __len__(self) -> int:
        return self._n

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (n, dim) under new `ids` (n,)."""
        n = len(ids)
        if self._n + n > len(self._ids):
            size = max(self._n + n, 2 * len(self._ids), 1024)
            self._ids = np.resize(self._ids, size)
            self._rows = np.resize(self._rows, (size, self.dim))
        self._ids[self._n : self._n + n] = ids
        self._rows[self._n : self._n + n] = _unit(np.asarray(vectors, np.float32).reshape(n, self.dim))
        self._n += n

    def delete(self, ids: list[int]) -> None:
        """Drop the vectors of `ids` (absent ones are ignored), keeping the others' order."""
        keep = ~np.isin(self._ids[: self._n], np.asarray(ids, np.int64))
        n = int(keep.sum())
        self._ids[:n] = self._ids[: self._n][keep]
        self._rows[:n] = self._rows[: self._n][keep]
        self._n = n

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The `k` nearest vectors to `vector` as (id, cosine similarity), most similar first (ties: the
        earlier added first)."""
        if k <= 0 or not self._n:
            return []
        scores = self._rows[: self._n] @ _unit(np.asarray(vector, np.float32).reshape(1, self.dim))[0]
        top = np.argsort(-scores, kind="stable")[:k]  # 20,000 rows: about a millisecond
        return [(int(self._ids[i]), float(scores[i])) for i in top]


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
