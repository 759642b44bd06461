"""A small LRU of dequantized memories on the run device, bounded in bytes.

Retrieval every 64 tokens keeps returning mostly the same memories; dequantizing them (and moving them to
the GPU) once instead of at every chunk is what this cache is for.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace

import torch

from engine.memory.profiles import Memory, MemoryKV


def kv_nbytes(kv: MemoryKV) -> int:
    return sum(t.numel() * t.element_size() for t in (kv.k, kv.v, kv.index))


class MemoryCache:
    def __init__(self, dtype: torch.dtype, device: torch.device, max_bytes: int = 256 * 2**20):
        self.dtype, self.device, self.max_bytes = dtype, device, max_bytes
        self._items: OrderedDict[Hashable, MemoryKV] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0
        self._lock = threading.Lock()  # answers run side by side (engine/turns.py) and share the cache

    def get(self, key: Hashable, load: Callable[[], Memory | None]) -> MemoryKV | None:
        """The memory under `key`, dequantized; on a miss `load()` reads the stored form (None: there is
        none, and None is returned)."""
        with self._lock:
            if key in self._items:
                self.hits += 1
                self._items.move_to_end(key)
                return self._items[key]
        memory = load()
        if memory is None:
            return None
        kv = replace(memory.unpack(self.dtype, self.device), key=str(key))
        with self._lock:
            self.misses += 1
            if key not in self._items:
                self._items[key] = kv
                self.nbytes += kv_nbytes(kv)
            while self.nbytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.nbytes -= kv_nbytes(old)
        return kv

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
