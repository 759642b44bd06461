"""The dequantized-memory LRU: hits skip loading, the byte budget evicts the least recently used."""

from __future__ import annotations

import torch

from engine.memory.cache import MemoryCache, kv_nbytes
from engine.memory.profiles import PROFILES
from engine.memory.writer import write_memories


def test_cache_hits_evicts_least_recent_and_stays_in_budget(rt):
    refs = [rt.tokenizer.encode(f" Fact number {i}: the box holds {i * 7} marbles.") for i in range(4)]
    memories = write_memories(rt.model, rt.sink, refs, PROFILES["dense"])
    one = kv_nbytes(memories[0].unpack(rt.model.dtype, rt.model.device))
    cache = MemoryCache(rt.model.dtype, rt.model.device, max_bytes=int(2.5 * one))
    loads: list[int] = []

    def get(i: int):
        return cache.get(i, lambda: loads.append(i) or memories[i])

    first = get(0)
    assert get(0) is first and loads == [0]
    assert torch.equal(first.k, memories[0].unpack(rt.model.dtype, rt.model.device).k)
    get(1)
    get(0)  # 0 is now the most recent
    get(2)  # over budget: 1 goes
    assert 1 not in cache and 0 in cache and 2 in cache
    assert cache.nbytes <= cache.max_bytes and len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 3)
