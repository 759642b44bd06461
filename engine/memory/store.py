"""Where a retrieved memory comes from: the RAM cache, the bank on disk, or the model right now.

Memories are written ahead of time into the bank while its budget allows; the rest are written on demand
at their first retrieval ("cold start", Memory³) and kept in the LRU cache. The text is always kept, so a
memory the bank lost or never had is only slower to get, never missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.memory.bank import MemoryBank
from engine.memory.cache import MemoryCache
from engine.memory.profiles import Memory, MemoryKV

# Compact once this share of the segment bytes is dropped memories, so the segments hold at most 1.25x the
# live records (at 0.25 they reached 1.33x, past the 1.3x `m3 bench soak` holds the data folder to).
COMPACT_AT = 0.2


class MemoryStore:
    """`write(texts)` encodes chunk texts into memories (a closure over the model); items are
    (chunk hash, chunk text) pairs."""

    def __init__(
        self,
        bank: MemoryBank,
        cache: MemoryCache,
        write: Callable[[list[str]], list[Memory]],
        batch_size: int = 16,
    ):
        self.bank, self.cache, self.write, self.batch_size = bank, cache, write, batch_size
        self.bank_reads = self.cold_writes = 0
        self._full = False  # the bank refused a put: writing more ahead of time would only be thrown away

    def store(self, items: Sequence[tuple[str, str]]) -> int:
        """Write memories into the bank, batch by batch, until its budget is full; how many were stored.
        Those left out are written at their first retrieval."""
        todo = list({h: t for h, t in items if h not in self.bank}.items())
        stored = 0
        for a in range(0, len(todo) if not self._full else 0, self.batch_size):
            batch = todo[a : a + self.batch_size]
            memories = self.write([t for _, t in batch])
            kept = self.bank.put_many([(h, m) for (h, _), m in zip(batch, memories, strict=True)])
            stored += kept
            if kept < len(batch):
                self._full = True
                break
        return stored

    def drop(self, hashes: Sequence[str]) -> None:
        """Forget these memories; compact the bank once enough of it is dead."""
        if self.bank.drop(hashes):
            self._full = False
        stats = self.bank.stats()
        if stats["dead_bytes"] > COMPACT_AT * stats["file_bytes"]:
            self.bank.compact()

    def get_many(self, items: Sequence[tuple[str, str]]) -> list[MemoryKV]:
        """The memories of these chunks, ready for attention, in order. Those neither cached nor in the
        bank (over budget, or damaged) are written now, in one batch."""
        out: dict[str, MemoryKV] = {}
        cold: dict[str, str] = {}
        for h, text in items:
            if h in out or h in cold:
                continue
            if (kv := self.cache.get(h, lambda h=h: self._read(h))) is not None:
                out[h] = kv
            else:
                cold[h] = text
        if cold:
            self.cold_writes += len(cold)
            written = list(zip(cold, self.write(list(cold.values())), strict=True))
            self.bank.put_many(written)  # kept on disk too as far as the budget allows
            for h, memory in written:
                out[h] = self.cache.get(h, lambda m=memory: m)
        return [out[h] for h, _ in items]

    def _read(self, key: str) -> Memory | None:
        memory = self.bank.get(key)
        self.bank_reads += memory is not None
        return memory

    def stats(self) -> dict:
        return {"cache_hits": self.cache.hits, "bank_reads": self.bank_reads, "cold_writes": self.cold_writes}
