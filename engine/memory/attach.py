"""Place memories at positions and write their roped keys into a cache's memory region."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.memory.profiles import MemoryKV
from engine.memory.reader import MemoryReader
from engine.models.kv_cache import KVCache
from engine.models.transformer import Transformer


@dataclass(frozen=True)
class Slots:
    """One memory's keys in one layer's memory region of the cache: slots [start, end)."""

    key: str  # the memory's key (a chunk hash)
    start: int
    end: int


@dataclass(frozen=True)
class Layout:
    """What attach() wrote: layers[l] lists, in attach order, the slots each memory present in layer l fills
    (a memory outside the layers of its profile has none there)."""

    layers: tuple[tuple[Slots, ...], ...]


def span(memories: Sequence[MemoryKV]) -> int:
    """Positions the memories occupy: packed one after another, or all sharing the same interval."""
    if not memories:
        return 0
    if memories[0].positions == "parallel":
        return max(m.length for m in memories)
    return sum(m.length for m in memories)


def place(memories: Sequence[MemoryKV], end: int, floor: int) -> list[int]:
    """Start positions so that the memories end right before `end` (never before the sink's end)."""
    first = max(floor, end - span(memories))
    if memories and memories[0].positions == "parallel":
        return [first] * len(memories)
    starts, at = [], first
    for m in memories:
        starts.append(at)
        at += m.length
    return starts


def attach(
    model: Transformer,
    cache: KVCache,
    memories: Sequence[MemoryKV],
    starts: Sequence[int],
    reader: MemoryReader | None = None,
) -> Layout:
    """Rope each memory layer's keys at their placed positions and load them into the cache, packed in the
    order given, read through `reader` (None: as the model reads text); returns where each memory's keys
    went."""
    B = cache.k[0].shape[0]
    layers = []
    for layer, block in enumerate(model.blocks):
        placed = zip(memories, starts, strict=True)
        parts = [(m, s, m.layers.index(layer)) for m, s in placed if layer in m.layers]
        slots, at = [], 0
        for m, _, _ in parts:
            slots.append(Slots(m.key, at, at + m.kept))
            at += m.kept
        layers.append(tuple(slots))
        if not parts:
            cache.set_memory(layer, *_empty(cache))
            continue
        k = torch.cat([m.k[i] for m, _, i in parts], dim=1)  # (Hkv, M, D)
        v = torch.cat([m.v[i] for m, _, i in parts], dim=1)
        pos = torch.cat([s + m.index[i] for m, s, i in parts], dim=1)  # (Hkv, M)
        k = block.attn.rotary(k, pos)
        bias = None
        if reader is not None:
            k = (k.float() * reader.key_factor(layer).to(k.device)).to(k.dtype)
            bias = reader.bias(layer)
        cache.set_memory(layer, k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1), pos.expand(B, -1, -1), bias)
    return Layout(tuple(layers))


def _empty(cache: KVCache):
    B, H, _, D = cache.k[0].shape
    z = cache.k[0].new_zeros(B, H, 0, D)
    return z, z, cache.pos[0].new_zeros(B, H, 0)
