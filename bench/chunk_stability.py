"""How many chunks (so memories to rewrite) a small edit costs: a 100-page document, one paragraph edited."""

from __future__ import annotations

import random
import re
import textwrap
from collections import Counter
from dataclasses import dataclass

from ingest.chunker import CountTokens, chunk_text
from ingest.document import ParsedText

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ber", "gan", "dol", "fen", "tor", "mas", "ion")


@dataclass(frozen=True)
class _Page:
    paragraphs: tuple[str, ...]
    joiner: str  # a blank line, or a line break alone as in text extracted from a PDF


def synthetic_pages(pages: int = 100, seed: int = 7) -> list[_Page]:
    """Deterministic pages of headings, lists, short, medium and long paragraphs; a third of them laid out
    like extracted PDF text, where only sentence ends and line ends can cut."""
    rnd = random.Random(seed)
    vocabulary = ["".join(rnd.choices(_SYLLABLES, k=rnd.randint(1, 4))) for _ in range(3000)]

    def words(low: int, high: int) -> str:
        return " ".join(rnd.choices(vocabulary, k=rnd.randint(low, high)))

    def paragraph() -> str:
        kind = rnd.random()
        if kind < 0.08:
            return "## " + words(2, 6).title()
        if kind < 0.18:
            return "\n".join("- " + words(2, 8) for _ in range(rnd.randint(3, 8)))
        low, high = (1, 2) if kind < 0.45 else (3, 6) if kind < 0.88 else (9, 20)
        sentences = (words(5, 22).capitalize() + rnd.choice(".....?!") for _ in range(rnd.randint(low, high)))
        return " ".join(sentences)

    result = []
    for _ in range(pages):
        paragraphs = [paragraph()]
        while sum(p.count(" ") for p in paragraphs) < 350:
            paragraphs.append(paragraph())
        if rnd.random() < 0.33:  # PDF-like: lines wrapped at 80 columns, no blank line between paragraphs
            wrapped = (p if p[0] in "#-" else textwrap.fill(p, 80) for p in paragraphs)
            result.append(_Page(tuple(wrapped), "\n"))
        else:
            result.append(_Page(tuple(paragraphs), "\n\n"))
    return result


def measure_edit_stability(count_tokens: CountTokens, paragraph: int | None = None) -> dict[str, int]:
    """Chunks the synthetic document, rewrites three neighbouring words of one paragraph (by default the
    middle one) and chunks it again. Chunks are compared by hash, as the catalog does: `chunks_changed` old
    chunks were replaced by new ones; `chunks_added` and `chunks_removed` are new or gone beyond those."""
    pages = synthetic_pages()
    prose = [
        (p, i) for p, page in enumerate(pages) for i, par in enumerate(page.paragraphs) if par[0] not in "#-"
    ]
    page_no, index = prose[len(prose) // 2 if paragraph is None else paragraph % len(prose)]
    page = pages[page_no]
    edited_paragraphs = list(page.paragraphs)
    edited_paragraphs[index] = _edit(page.paragraphs[index], random.Random(page_no * 1000 + index))
    edited = [*pages[:page_no], _Page(tuple(edited_paragraphs), page.joiner), *pages[page_no + 1 :]]
    before = Counter(c.hash for c in chunk_text(document(pages), count_tokens))
    after = Counter(c.hash for c in chunk_text(document(edited), count_tokens))
    removed, added = sum((before - after).values()), sum((after - before).values())
    changed = min(removed, added)
    return {
        "pages": len(pages),
        "chunks_total": sum(before.values()),
        "chunks_changed": changed,
        "chunks_added": added - changed,
        "chunks_removed": removed - changed,
    }


def document(pages: list[_Page]) -> ParsedText:
    return ParsedText.from_pages([page.joiner.join(page.paragraphs) for page in pages])


def _edit(text: str, rnd: random.Random) -> str:
    """Three neighbouring words rewritten in place (line breaks kept), as a small correction would."""
    words = list(re.finditer(r"\w+", text))
    first = rnd.randrange(max(1, len(words) - 2))
    for word in reversed(words[first : first + 3]):
        text = text[: word.start()] + "edited" + text[word.end() :]
    return text
