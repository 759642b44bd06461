"""HTML to readable text: the title first, then one paragraph per block element, page furniture dropped.

Each line of the text keeps the line of the file where it begins, so a citation of a page names the lines an
editor shows (Python's html.parser records where each tag starts; lxml's tree builder does not).
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, CData, NavigableString, Tag

from ingest.document import ParsedText

_DROPPED = "head script style nav noscript template svg iframe object embed select button"
_BLOCK_ELEMENTS = (
    "address article aside blockquote body caption dd details dialog div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hgroup hr html li main ol p pre section summary table tbody "
    "tfoot thead tr ul"
)
_DROP = frozenset(_DROPPED.split())
_BLOCKS = frozenset(_BLOCK_ELEMENTS.split())
_WHITESPACE = re.compile(r"\s+")
_CELLS = frozenset(("td", "th"))

Line = tuple[int, str]  # (the file's 1-based line where the text's line begins, the text's line)


def parse_html(data: bytes) -> ParsedText:
    lines = _lines(data, with_title=True)
    return ParsedText("\n".join(text for _, text in lines), line_map=tuple(line for line, _ in lines))


def html_to_text(markup: str | bytes, with_title: bool = True) -> str:
    """Blocks separated by blank lines; bytes let the parser honour the page's declared charset. Parts of a
    larger document (book chapters, an e-mail body) leave out their <title>, which only repeats a name."""
    return "\n".join(text for _, text in _lines(markup, with_title))


def _lines(markup: str | bytes, with_title: bool) -> list[Line]:
    """The text's lines with their file lines; a blank line between blocks has the line above it."""
    soup = BeautifulSoup(markup, "html.parser")
    title = " ".join(soup.title.get_text(" ").split()) if with_title and soup.title else ""
    blocks = [[(soup.title.sourceline or 1, title)]] if title else []
    lines: list[Line] = []
    for block in blocks + _blocks(soup):
        if lines:
            lines.append((lines[-1][0], ""))
        lines.extend(block)
    return lines


def _blocks(root: Tag) -> list[list[Line]]:
    """Walks the tree in document order with an explicit stack (deeply nested pages must not hit the
    recursion limit). The file line follows the walk: each tag's start line, then the line breaks of the
    strings after it."""
    blocks: list[list[Line]] = []
    parts: list[Line] = []  # the pieces of the block being read, each with the file line it begins on
    line = 1

    def flush() -> None:
        block: list[Line] = []
        start, text = line, ""  # the text line being read and the file line its first word is on
        for at, piece in [*parts, (line, "\n")]:
            if piece == "\n":  # a <br>, or the block's end
                words = " ".join(text.split())
                if words or (block and block[-1][1]):  # at most one blank line in a row
                    block.append((start, words))
                start, text = at, ""
                continue
            if piece.strip() and not text.strip():
                start = at
            text += piece
        while block and not block[-1][1]:
            block.pop()
        if block:
            blocks.append(block)
        parts.clear()

    stack: list[tuple[object, bool]] = [(child, False) for child in reversed(root.contents)]
    while stack:
        node, leaving = stack.pop()
        if isinstance(node, NavigableString):
            raw = str(node)
            if type(node) in (NavigableString, CData):  # not comments, doctypes, processing instructions
                first = line + raw[: len(raw) - len(raw.lstrip())].count("\n")
                parts.append((first, _WHITESPACE.sub(" ", raw)))
            line += raw.count("\n")
            continue
        if not isinstance(node, Tag):
            continue
        if not leaving and node.sourceline is not None:
            line = node.sourceline
        if node.name in _DROP:
            continue
        if node.name == "br":
            parts.append((line, "\n"))
            continue
        if node.name in _CELLS and not leaving and any(piece.strip() for _, piece in parts):
            parts.append((line, " | "))  # a table row stays one line: its cells side by side
        if node.name == "pre":
            flush()
            raw = node.get_text()
            code = raw.strip("\n")  # preformatted: its spaces and line breaks are the content
            if code.strip():
                first = line + len(raw) - len(raw.lstrip("\n"))
                blocks.append([(first + i, text) for i, text in enumerate(code.split("\n"))])
            line += raw.count("\n")
        elif node.name in _BLOCKS:
            flush()
            if not leaving:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.contents))
        elif not leaving:
            stack.extend((child, False) for child in reversed(node.contents))
    flush()
    return blocks
