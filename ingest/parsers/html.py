"""HTML to readable text: the title first, then one paragraph per block element, page furniture dropped."""

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


def parse_html(data: bytes) -> ParsedText:
    return ParsedText(html_to_text(data))


def html_to_text(markup: str | bytes, with_title: bool = True) -> str:
    """Blocks separated by blank lines; bytes let the parser honour the page's declared charset. Parts of a
    larger document (book chapters, an e-mail body) leave out their <title>, which only repeats a name."""
    soup = BeautifulSoup(markup, "lxml")
    title = " ".join(soup.title.get_text(" ").split()) if with_title and soup.title else ""
    return "\n\n".join([title, *_blocks(soup)] if title else _blocks(soup))


def _blocks(root: Tag) -> list[str]:
    """Walks the tree with an explicit stack (deeply nested pages must not hit the recursion limit)."""
    blocks: list[str] = []
    parts: list[str] = []

    def flush() -> None:
        lines = (" ".join(line.split()) for line in "".join(parts).split("\n"))
        block = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        if block:
            blocks.append(block)
        parts.clear()

    stack: list[tuple[object, bool]] = [(child, False) for child in reversed(root.contents)]
    while stack:
        node, leaving = stack.pop()
        if isinstance(node, NavigableString):
            if type(node) in (NavigableString, CData):  # not comments, doctypes, processing instructions
                parts.append(_WHITESPACE.sub(" ", str(node)))
            continue
        if not isinstance(node, Tag) or node.name in _DROP:
            continue
        if node.name == "br":
            parts.append("\n")
            continue
        if node.name in _CELLS and not leaving and any(not part.isspace() for part in parts):
            parts.append(" | ")  # a table row stays one line: its cells side by side
        if node.name == "pre":
            flush()
            code = node.get_text().strip("\n")  # preformatted: its spaces and line breaks are the content
            if code.strip():
                blocks.append(code)
        elif node.name in _BLOCKS:
            flush()
            if not leaving:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.contents))
        elif not leaving:
            stack.extend((child, False) for child in reversed(node.contents))
    flush()
    return blocks
