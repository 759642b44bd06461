"""Reciprocal rank fusion: one ranking from the vector and keyword rankings, by rank alone, so the two
searches' scores (cosine similarity, BM25) never need to be put on one scale."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

K_RRF = 60  # the usual constant: a first place is worth 1/61, a tenth 1/70


def fuse(
    vector_ids: Sequence[int], keyword_ids: Sequence[int], k: int, vector_weight: float = 1.0
) -> list[tuple[int, float, int | None, int | None]]:
    """Reciprocal rank fusion: (id, score, vector rank, keyword rank) of the top `k`, best first; a vector
    rank counts `vector_weight` times what the same keyword rank counts."""
    ranks: dict[int, list[int | None]] = {}
    for which, ids in enumerate((vector_ids, keyword_ids)):
        for rank, i in enumerate(ids, start=1):
            ranks.setdefault(i, [None, None])[which] = rank
    scored = [
        (i, sum(w / (K_RRF + r) for w, r in ((vector_weight, vr), (1.0, kr)) if r is not None), vr, kr)
        for i, (vr, kr) in ranks.items()
    ]
    scored.sort(key=lambda t: (-t[1], min(r for r in t[2:] if r is not None), t[0]))
    return scored[:k]


def latin_share(text: str) -> float:
    """The share of `text`'s letters that are Latin (1 when it has none): the vector ranking's weight in
    the fusion, since the bundled embedder (all-MiniLM-L6-v2) learnt English. On other scripts its ranking
    is little better than telling the languages apart, and fused at full weight it pushed keyword search's
    first hits down (README, "Other languages and scripts"); weighted so, keywords lead for a query in Greek,
    Arabic or Chinese, and the vectors fill in after them."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(unicodedata.name(c, "").startswith("LATIN") for c in letters) / len(letters)
