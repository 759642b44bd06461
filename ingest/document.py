"""The text of a parsed document, with what is needed to map a character offset back to a page and a line."""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import accumulate

from ingest.errors import TooLargeError

LINE_BREAK = r"\r\n|\r(?!\n)|\n"  # a line break as editors count them: LF, CRLF, or CR alone (old Mac files)
_BREAK = re.compile(LINE_BREAK)
# The most characters a document's text may have, as many as its file may have bytes (parsers.MAX_FILE_BYTES):
# a text can outgrow its file (NFKC makes 18 characters of U+FDFA; an ODT's text:s, a run of spaces).
MAX_DOCUMENT_CHARS = 256 * 1024 * 1024
_NFKC_PIECE = 1 << 20  # characters normalised at a time, so that a text over the limit is not built whole
_ASCII = re.compile(r"[\x00-\x7f]")


def check_size(chars: int) -> None:
    """TooLargeError when a text of `chars` characters is over MAX_DOCUMENT_CHARS: the document fails as a
    file over its limit does."""
    if chars > MAX_DOCUMENT_CHARS:
        limit = MAX_DOCUMENT_CHARS >> 20
        raise TooLargeError(f"text too large ({chars >> 20} M characters; the limit is {limit} M characters)")


@dataclass(frozen=True)
class ParsedText:
    """A document as one string. Paged formats (PDF) record where pages begin, so citations can name one.
    A text that is not the file's own (a CSV's rows with their column names, a note without its front
    matter) maps each of its lines to the file's line, so citations show where the text sits in an editor."""

    text: str = field(repr=False)
    page_starts: tuple[int, ...] = ()  # char offset where each page begins (page 1 first); () when unpaged
    line_map: tuple[
        int, ...
    ] = ()  # the file's 1-based line of each line of `text`; () when they are the same
    meta: Mapping[str, object] = field(default_factory=dict)  # what the catalog keeps (JSON): the encoding...
    warnings: tuple[str, ...] = ()  # readable doubts about the text (a guessed encoding), shown in the status

    @classmethod
    def from_pages(cls, pages: list[str], separator: str = "\n\n") -> ParsedText:
        """Pages joined by a blank line (a paragraph break for the chunker), each page's start recorded."""
        starts, offset = [], 0
        for page in pages:
            starts.append(offset)
            offset += len(page) + len(separator)
        return cls(separator.join(pages), tuple(starts))

    def normalized(self) -> ParsedText:
        """The text in Unicode NFKC, so that what a user types finds what the document shows: a PDF's
        ligature `ﬁ` is `fi`, full-width `Ｔｅｓｌａ` is `Tesla`, a macOS name's `e` + accent is `é`
        (superscripts flatten too: `x²` is `x2`). Each page is normalised alone so its start is known
        again; no character's normal form holds a line break, so lines stay where they were. The normal
        form is held to MAX_DOCUMENT_CHARS (TooLargeError): it can be many times longer than the text."""
        if self.text.isascii():  # its own normal form
            check_size(len(self.text))
            return self
        bounds = [*self.page_starts, len(self.text)] if self.page_starts else [0, len(self.text)]
        pages, total = [], 0
        for a, b in zip(bounds, bounds[1:], strict=False):
            page = []
            for piece in _nfkc_pieces(self.text, a, b):
                total += len(piece)
                if total <= MAX_DOCUMENT_CHARS:  # past the limit only counted, for the failure to say
                    page.append(piece)
            pages.append("".join(page))
        check_size(total)
        starts = tuple(accumulate((len(p) for p in pages[:-1]), initial=0)) if self.page_starts else ()
        return replace(self, text="".join(pages), page_starts=starts)

    def page_at(self, offset: int) -> int | None:
        """1-based page of a char offset, None when the document has no pages."""
        if not self.page_starts:
            return None
        return max(1, bisect_right(self.page_starts, offset))

    def line_at(self, offset: int) -> int:
        """1-based line of a char offset in the file, counting line breaks as editors do (LF, CRLF, or CR
        alone); a line break belongs to the line it ends."""
        line = bisect_left(self._breaks, offset) + 1
        return self.line_map[line - 1] if self.line_map else line

    @cached_property
    def _breaks(self) -> list[int]:
        """The offset of each line break's last character, in order (computed once: chunking asks for two
        lines per chunk)."""
        return [m.end() - 1 for m in _BREAK.finditer(self.text)]


def _nfkc_pieces(text: str, start: int, end: int) -> Iterator[str]:
    """NFKC of text[start:end], about _NFKC_PIECE characters at a time. A piece ends before an ASCII
    character: none composes with what precedes it or lets marks reorder across it, so the pieces
    normalise as the whole does."""
    while start < end:
        cut = _ASCII.search(text, min(start + _NFKC_PIECE, end), end)
        stop = cut.start() if cut else end
        yield unicodedata.normalize("NFKC", text[start:stop])
        start = stop
