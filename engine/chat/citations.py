"""Citations: the sources an answer attended to, ranked by the attention its tokens paid to each.

While the answer is generated, `SourceMass` (a probe the attention layers report their weights to) sums
the attention each source's keys receive: attached memories, in the slots `attach()` says it wrote them
to, or chunks read as text, at their spans of the prompt. Sources are ranked by attention per key token
and named by file, page and line span through their chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from engine.chat.sources import Chunk
from engine.memory.attach import Layout


@dataclass(frozen=True)
class Citation:
    n: int  # 1-based rank
    path: str
    page: int | None
    line_start: int
    line_end: int
    text: str
    share: float  # of the attention per key token the answer paid to its sources (they sum to 1)
    hash: str
    front_matter: dict = field(default_factory=dict)  # its note's title, date and tags, where it has them
    missing: bool = False  # its file was not on the disk when the answer was given

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "path": self.path,
            "page": self.page,
            "line_start": self.line_start,
            "line_end": self.line_end,
            "text": self.text,
            "share": round(self.share, 4),
            "hash": self.hash,
            "front_matter": self.front_matter,
            "missing": self.missing,
        }


class SourceMass:
    """The attention generated tokens pay to each source's keys, summed over layers, heads and tokens.

    Memory sources are slot ranges of the cache's memory region, as the last `attach()` laid them out (they
    change at every re-attachment); text sources are fixed ranges of the context region. Sources are ranked
    by attention per key token: attention spread without aim lands on every token alike, so a long passage
    collects a large total without being read (the e2e test's 124-token neighbour outweighed the 29-token
    fact by total, not per token).

    Only `layers` count: those attending to the whole context (Gemma 3's one global layer in six). A
    sliding-window layer sees the last 512 tokens, mostly the nearest ones, so its attention says where
    a source sits rather than what it says: counted with them, RAG's top citation was the gold passage
    for 25 of 60 XQuAD questions, without them 49 (memory mode: 51 either way; README "Citations").
    """

    def __init__(
        self, memory_slots: int, text_sources: Sequence[tuple[str, int, int]], layers: frozenset[int]
    ):
        """text_sources: (key, start, end) spans of the prompt read as sources (RAG); layers: those whose
        attention counts (the probe receives no other)."""
        self.layers = layers
        self.keys: list[str] = []
        self.mass: list[float] = []
        self.size: list[int] = []  # key tokens per source
        self.text = [(self._id(key, b - a), memory_slots + a, memory_slots + b) for key, a, b in text_sources]
        self.memory: dict[int, list[tuple[int, int, int]]] = {}  # layer -> (source, first slot, end slot)

    def _id(self, key: str, size: int) -> int:
        if key not in self.keys:
            self.keys.append(key)
            self.mass.append(0.0)
            self.size.append(size)
        return self.keys.index(key)

    def read(self, layout: Layout) -> None:
        """Follow the memories attached now: their keys sit where `layout` says, layer by layer."""
        self.memory = {
            layer: [(self._id(s.key, s.end - s.start), s.start, s.end) for s in slots]
            for layer, slots in enumerate(layout.layers)
        }

    def observe(self, layer: int, weights: torch.Tensor) -> None:
        """weights: (B, Hkv, G, T, N) attention of T query tokens over the N keys (memory slots first)."""
        per_key = weights.sum(dim=(0, 1, 2, 3)).cpu()  # (N,)
        for i, a, b in [*self.memory.get(layer, ()), *self.text]:
            self.mass[i] += float(per_key[a:b].sum())

    def shares(self) -> list[tuple[str, float]]:
        """(key, share of the attention per key token), largest first; the shares sum to 1 (none when
        nothing was generated)."""
        density = [m / max(n, 1) for m, n in zip(self.mass, self.size, strict=True)]
        total = sum(density)
        if not total:  # no token was generated (stopped at once): no source was attended to
            return []
        return sorted(((k, d / total) for k, d in zip(self.keys, density, strict=True)), key=lambda x: -x[1])


def cite(shares: Sequence[tuple[str, float]], chunks: Mapping[str, Chunk]) -> list[Citation]:
    """Citations in the order of `shares` ((key, share), largest first), named by the chunk of each key."""
    return [
        Citation(
            n, c.path, c.page, c.line_start, c.line_end, c.text, share, c.hash, c.front_matter, c.missing
        )
        for n, (c, share) in enumerate(((chunks[key], share) for key, share in shares), start=1)
    ]
