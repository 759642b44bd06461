"""Text to chunks of at most 128 model tokens (one memory each), cut where the text cuts itself.

Cuts go at blank lines first, then sentence ends, then line ends, then between words, and only as a last
resort inside a word. Pieces are packed into chunks up to the budget, but a piece whose own text says so (a
heading, or a hash that falls on 0 mod ANCHOR_EVERY, once the chunk holds max_tokens // SHORT_SHARE tokens)
opens a new chunk in a text over the budget, and a fact (a paragraph of that many tokens or more, with the
short paragraphs that lead into it) opens one in any text once the chunk holds a fact: one fact of a note
per chunk, since a small model asked about one fact of a chunk often answers with its neighbour's (README
"Knowledge editing"); short paragraphs alone still pack. Those content-defined boundaries resynchronise the
chunking right after an edit, so editing one paragraph of a long document changes the chunk holding it and a
few neighbours, and every other chunk (and its memory) is kept. Whitespace stays with the text before it
(the text's leading whitespace with the text after it); a chunk of whitespace alone is left only where it is
over the budget with that text, and with either neighbour.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

from ingest.document import LINE_BREAK, ParsedText

MAX_TOKENS = 128
VERSION = 3  # bumped when the same text is cut differently (2: CR alone ends a line; 3: a paragraph of
# substance opens a chunk); bank files keep it
ANCHOR_EVERY = 6  # about one piece in this many opens a chunk whatever came before it
ANCHOR_WORDS = 8  # the words of a piece that decide whether it does
MAX_CHARS_PER_TOKEN = 32  # a chunk is never longer than max_tokens times this: bounds every count_tokens call
SHORT_SHARE = 8  # a paragraph under max_tokens // this many tokens is short: it packs with its neighbours

_BREAK = f"(?:{LINE_BREAK})"
_PARAGRAPH = re.compile(rf"{_BREAK}[^\S\r\n]*{_BREAK}\s*")
_SENTENCE = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+\s*")
_LINE = re.compile(rf"{_BREAK}\s*")
_SPACE = re.compile(r"\s+")
_CONTENT = re.compile(r"\S")
_HEADING = re.compile(rf"#{{1,6}}\s.*|[^\r\n]+{_BREAK}[=\-~^*+#]{{3,}}", re.DOTALL)
# A title: a heading with no text under it (a paragraph _HEADING matches may go on under its heading line).
_TITLE = re.compile(rf"#{{1,6}}\s[^\r\n]*|[^\r\n]+{_BREAK}[=\-~^*+#]{{3,}}")
# Every separator ends by eating all the whitespace after it, so each piece after a cut starts with content.
_LEVELS = (_SENTENCE, _LINE)  # inside a paragraph; paragraphs are always cut (chunk_text)

CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    """A span of the document: text == doc.text[start:end]. Lines and page are those of its content, so
    leading or trailing whitespace it carries does not move its citation onto a blank line."""

    text: str
    start: int
    end: int
    line_start: int  # 1-based, of the first non-space character
    line_end: int  # 1-based, inclusive, of the last non-space character
    page: int | None  # page of the first non-space character; None when the document is unpaged

    @property
    def hash(self) -> str:
        """The chunk's identity: unchanged text keeps its hash, so its memory is kept."""
        return text_hash(self.text)


def text_hash(text: str) -> str:
    """A chunk's hash, from its text alone (so that a citation's text names its chunk too)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    tokens: int


def chunk_text(doc: ParsedText, count_tokens: CountTokens, max_tokens: int = MAX_TOKENS) -> list[Chunk]:
    """Chunks that partition doc.text in order, each of at most max_tokens tokens by count_tokens.

    No chunk is whitespace only, except where whitespace is over the budget with the character it goes with
    (the one before it; the one after it for the text's leading whitespace), and joined to the chunk before
    it, or to the one after it, would be over too."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not doc.text.strip():
        return []
    splitter = _Splitter(doc.text, count_tokens, max_tokens)
    paragraphs = pairwise([0, *splitter.cuts(0, len(doc.text), _PARAGRAPH), len(doc.text)])
    pieces = [splitter.split(start, end) for start, end in paragraphs]
    fits = len(doc.text) <= splitter.max_chars and count_tokens(doc.text) <= max_tokens
    spans = _join_blanks(doc.text, _pack(doc.text, pieces, splitter, fits), splitter)
    return [_chunk(doc, start, end) for start, end in spans]


def opens_chunk(piece: str) -> bool:
    """Whether a piece starts a new chunk by its content alone: a heading, or one piece in ANCHOR_EVERY by
    the hash of its first words (not all of it: an edit further in does not move the boundary)."""
    body = piece.strip()
    if _HEADING.fullmatch(body):
        return True
    opening = " ".join(body.split(maxsplit=ANCHOR_WORDS)[:ANCHOR_WORDS])
    return zlib.crc32(opening.encode("utf-8", "surrogatepass")) % ANCHOR_EVERY == 0


class _Splitter:
    """Cuts a span into pieces that each fit the budget, at the coarsest separator that makes them fit."""

    def __init__(self, text: str, count_tokens: CountTokens, max_tokens: int):
        self.text = text
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.min_full = max_tokens - max_tokens // 8  # a greedy cut this full is good enough
        self.aim = (self.min_full + max_tokens + 1) // 2  # what a greedy probe aims for
        self.max_chars = max_tokens * MAX_CHARS_PER_TOKEN
        self.chars_hint = max_tokens * 4  # chars that gave `aim` tokens in the last greedy piece

    def count(self, start: int, end: int) -> int:
        return self.count_tokens(self.text[start:end])

    def split(self, start: int, end: int, level: int = 0) -> list[_Piece]:
        if end - start <= self.max_chars:  # longer spans cannot fit: not worth counting
            tokens = self.count(start, end)
            if tokens <= self.max_tokens:
                return [_Piece(start, end, tokens)]
        for depth in range(level, len(_LEVELS)):
            cuts = self.cuts(start, end, _LEVELS[depth])
            if cuts:
                spans = pairwise([start, *cuts, end])
                return [piece for a, b in spans for piece in self.split(a, b, depth + 1)]
        return self._greedy_words(start, end)

    def cuts(self, start: int, end: int, separator: re.Pattern[str]) -> list[int]:
        """Ends of separators inside the span; leading whitespace is not one: it stays in the first piece."""
        first = _CONTENT.search(self.text, start, end)
        begin = first.start() if first else end
        return [m.end() for m in separator.finditer(self.text, begin, end) if m.end() < end]

    def _greedy_words(self, start: int, end: int) -> list[_Piece]:
        """A sentence too long for the budget: the longest runs of whole words that fit, a word cut only if it
        alone is over the budget. The chars-per-token hint starts afresh, so that the cuts depend on this
        sentence alone: carried over from text far before it, an edit there moved every cut here."""
        self.chars_hint = self.max_tokens * 4
        word_ends = [*self.cuts(start, end, _SPACE), end]
        pieces: list[_Piece] = []
        pos, lo = start, 0
        while pos < end:
            lo = bisect_right(word_ends, pos, lo)
            found = self._fit(pos, word_ends, lo)
            if found is None:  # the next word alone is over the budget
                pieces += self._greedy_chars(pos, word_ends[lo])
                pos = word_ends[lo]
            else:
                pieces.append(found)
                pos = found.end
        return pieces

    def _greedy_chars(self, start: int, end: int) -> list[_Piece]:
        """A word over the budget, cut anywhere but inside the whitespace around it, which would then be a
        piece of its own: trailing whitespace goes with the word's last piece, leading whitespace (only the
        text's first word has any) with its first, unless that whitespace and the character next to it are
        over the budget."""
        span = self.text[start:end]
        content_start = start + len(span) - len(span.lstrip())
        content_end = start + len(span.rstrip())
        pieces: list[_Piece] = []
        pos = start
        while pos < end:
            if end - pos <= self.max_chars and (tokens := self.count(pos, end)) <= self.max_tokens:
                pieces.append(_Piece(pos, end, tokens))
                break
            found = self._fit(pos, range(pos + 1, content_end if pos + 1 < content_end else end), 0)
            if pos < content_start and (found is None or found.end <= content_start):
                # Leading whitespace alone: cut again to hold the first character, unless even that is over.
                # (Any cut first, so that texts this does not concern keep their chunks and memories.)
                first = content_start + 1
                found = self._fit(pos, range(first, content_end if first < content_end else end), 0) or found
            if found is None:  # not even one character fits a tiny budget: take it anyway, to move on
                found = _Piece(pos, pos + 1, self.count(pos, pos + 1))
            pieces.append(found)
            pos = found.end
        return pieces

    def _fit(self, start: int, ends: Sequence[int], lo: int) -> _Piece | None:
        """The longest piece from start to one of ends[lo:] that fits, or near enough (min_full tokens).

        Probes where the chars-per-token rate says the budget ends, then bisects: one or two count_tokens
        calls per piece on uniform text, so a 10 MB line is chunked in seconds."""
        hi = bisect_right(ends, start + self.max_chars, lo) - 1
        good: _Piece | None = None
        below, above = lo - 1, hi + 1  # ends[below] fits (or none), ends[above] does not (or none)
        target = start + self.chars_hint
        for step in range(64):
            if above - below <= 1:
                break
            probe = min(max(bisect_right(ends, target, lo, hi + 1) - 1, below + 1), above - 1)
            if step > 2:  # the rate guesses stall on uneven text: halve instead
                probe = (below + above) // 2
            tokens = self.count(start, ends[probe])
            if tokens <= self.max_tokens:
                below, good = probe, _Piece(start, ends[probe], tokens)
                if tokens >= self.min_full:
                    break
            else:
                above = probe
            target = start + (ends[probe] - start) * self.aim // max(tokens, 1)
        if good is not None:
            self.chars_hint = max(1, (good.end - good.start) * self.aim // max(good.tokens, 1))
        return good


def _pack(
    text: str, paragraphs: list[list[_Piece]], splitter: _Splitter, fits: bool
) -> list[tuple[int, int]]:
    """Spans of consecutive pieces (given by paragraph): filled up to the budget, closed early before a fact
    once the chunk holds one (_facts); and, in a text over the budget (fits: False), before a heading and
    before a piece that opens a chunk by its hash, unless that would leave the chunk under SHORT tokens or
    part a fact from the short paragraphs leading into it. A text that fits is cut between its facts only.

    The sum of the pieces' counts is an estimate (tokens can merge across a cut); the joined text is counted,
    and the last pieces go to the next chunk while it is over."""
    short = splitter.max_tokens // SHORT_SHARE
    pieces = [p for paragraph in paragraphs for p in paragraph]
    texts = [text[p.start : p.end] for p in pieces]
    headings = [not fits and _HEADING.fullmatch(t.strip()) is not None for t in texts]
    anchors = [not fits and opens_chunk(t) for t in texts]
    fact_starts, leading, in_fact = _facts(paragraphs, texts, splitter)
    spans = []
    i = 0
    while i < len(pieces):
        j, tokens, holds_fact = i + 1, pieces[i].tokens, in_fact[i]
        while (
            j < len(pieces)
            and not headings[j]
            and not (anchors[j] and tokens >= short and j not in leading)
            and not (holds_fact and j in fact_starts)
            and tokens + pieces[j].tokens <= splitter.max_tokens
            and pieces[j].end - pieces[i].start <= splitter.max_chars
        ):
            tokens += pieces[j].tokens
            holds_fact = holds_fact or in_fact[j]
            j += 1
        while j - i > 1 and splitter.count(pieces[i].start, pieces[j - 1].end) > splitter.max_tokens:
            j -= 1
        spans.append((pieces[i].start, pieces[j - 1].end))
        i = j
    return spans


def _facts(
    paragraphs: list[list[_Piece]], texts: list[str], splitter: _Splitter
) -> tuple[set[int], set[int], list[bool]]:
    """Where facts start; the pieces that lead into a fact after its start, up to its first piece of substance
    (no hash boundary there); which pieces belong to a paragraph of substance. Piece indexes.

    A paragraph of substance holds max_tokens // SHORT_SHARE tokens or more, the whitespace around it left
    out (so CRLF and LF notes cut alike), and is not a title (a heading line with no text under it); the
    others (a label, a question, a line of dialogue, a title) lead into the fact after them: a fact starts
    at the first of the short paragraphs just before it, or at the last title among them (those before a
    title close the section before it)."""
    short = splitter.max_tokens // SHORT_SHARE
    firsts = list(accumulate((len(ps) for ps in paragraphs), initial=0))  # each paragraph's first piece
    titles = [_TITLE.fullmatch(texts[first].strip()) is not None for first in firsts[:-1]]
    substantial = [
        len(ps) > 1  # cut in pieces: over the budget
        or (
            not titles[k]
            and ps[0].tokens >= short
            and splitter.count_tokens(texts[firsts[k]].strip()) >= short
        )
        for k, ps in enumerate(paragraphs)
    ]
    starts: set[int] = set()
    leading: set[int] = set()
    lead = 0  # the paragraph where a fact now would start
    for k, fact in enumerate(substantial):
        if titles[k]:
            lead = k
        if fact:
            starts.add(firsts[lead])
            leading.update(range(firsts[lead] + 1, firsts[k] + 1))
            lead = k + 1
    in_fact = [fact for ps, fact in zip(paragraphs, substantial, strict=True) for _ in ps]
    return starts, leading, in_fact


def _join_blanks(text: str, spans: list[tuple[int, int]], splitter: _Splitter) -> list[tuple[int, int]]:
    """Spans with each whitespace-only one joined to the span before it, or else to the one after it, where
    the two fit the budget together. A blank piece can open a chunk (the hash of no words is 0 mod
    ANCHOR_EVERY), and the pieces' count is only an estimate, so packing alone leaves some that fit.
    Repeated until nothing joins, so every blank span left is over the budget with either neighbour."""

    def fits(start: int, end: int) -> bool:
        return end - start <= splitter.max_chars and splitter.count(start, end) <= splitter.max_tokens

    while True:
        joined: list[tuple[int, int]] = []
        i = 0
        while i < len(spans):
            start, end = spans[i]
            if _CONTENT.search(text, start, end) is None:
                if joined and fits(joined[-1][0], end):
                    joined[-1] = (joined[-1][0], end)
                    i += 1
                    continue
                if i + 1 < len(spans) and fits(start, spans[i + 1][1]):
                    joined.append((start, spans[i + 1][1]))
                    i += 2
                    continue
            joined.append((start, end))
            i += 1
        if len(joined) == len(spans):
            return joined
        spans = joined


def _chunk(doc: ParsedText, start: int, end: int) -> Chunk:
    text = doc.text[start:end]
    first = start + len(text) - len(text.lstrip()) if text.strip() else start
    last = start + len(text.rstrip()) - 1 if text.strip() else end - 1
    line_start = doc.line_at(first)
    # A mapped text (a CSV row over many lines, a table's delimiter rows left out) can span more of the
    # file's lines than it has characters; the bank format bounds a span by its text (docs/bank-format.md).
    line_end = min(doc.line_at(last), line_start + len(text))
    return Chunk(text, start, end, line_start, line_end, doc.page_at(first))
