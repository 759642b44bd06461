"""Reciprocal rank fusion: one ranking from the vector and keyword rankings, by rank alone, so the two
searches' scores (cosine similarity, BM25) never need to be put on one scale."""

from __future__ import annotations

from collections.abc import Sequence

K_RRF = 60  # the usual constant: a first place is worth 1/61, a tenth 1/70


def fuse(
    vector_ids: Sequence[int], keyword_ids: Sequence[int], k: int
) -> list[tuple[int, float, int | None, int | None]]:
    """Reciprocal rank fusion: (id, score, vector rank, keyword rank) of the top `k`, best first."""
    ranks: dict[int, list[int | None]] = {}
    for which, ids in enumerate((vector_ids, keyword_ids)):
        for rank, i in enumerate(ids, start=1):
            ranks.setdefault(i, [None, None])[which] = rank
    scored = [
        (i, sum(1.0 / (K_RRF + r) for r in (vr, kr) if r is not None), vr, kr)
        for i, (vr, kr) in ranks.items()
    ]
    scored.sort(key=lambda t: (-t[1], min(r for r in t[2:] if r is not None), t[0]))
    return scored[:k]
