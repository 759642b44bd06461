"""OpenDocument text (.odt, LibreOffice's own format): headings, paragraphs, lists and tables in document
order, read from the zip's content.xml with lxml (odfpy, the library for it, is unmaintained)."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator

from lxml import etree

from ingest.document import ParsedText
from ingest.errors import EncryptedDocumentError, ParseError
from ingest.parsers.archive import open_zip, read_xml

_KIND = "ODT"
_MANIFEST = "META-INF/manifest.xml"
_CONTENT = "content.xml"

_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_MANIFEST_NS = "{urn:oasis:names:tc:opendocument:xmlns:manifest:1.0}"

_PARAGRAPHS = frozenset((f"{_TEXT}p", f"{_TEXT}h"))
_ROW_GROUPS = frozenset((f"{_TABLE}table-header-rows", f"{_TABLE}table-rows", f"{_TABLE}table-row-group"))
# Text that is not the document's running text: deleted revisions, comments, footnotes (DOCX's are not read
# either), the declarations of numbered captions.
_HIDDEN = frozenset(
    (f"{_TEXT}tracked-changes", f"{_OFFICE}annotation", f"{_TEXT}note", f"{_TEXT}sequence-decls")
)
_CHARACTERS = {f"{_TEXT}tab": "\t", f"{_TEXT}line-break": "\n"}
_SPACE = re.compile(r"[ \t\r\n]+")  # ODF collapses XML white space to one space, as HTML does
# The most spaces one text:s stands for. A run wider than this is layout, not text; and so capped, a run is no
# longer than its own markup (`<text:s text:c="20"/>`), so the text is no larger than the XML it comes from,
# which open_zip caps (uncapped, a 6 KB file made 100 M spaces). The whole text is held to the size limit.
_MAX_SPACES = 20


def parse_odt(data: bytes) -> ParsedText:
    with open_zip(data, _KIND) as archive:
        if _encrypted(archive):
            raise EncryptedDocumentError("the document is encrypted with a password")
        body = read_xml(archive, _CONTENT, _KIND).find(f"{_OFFICE}body/{_OFFICE}text")
    if body is None:
        raise ParseError("not a valid ODT file (no text in content.xml: another OpenDocument kind?)")
    return ParsedText("\n\n".join(_blocks(body)))


def _encrypted(archive: zipfile.ZipFile) -> bool:
    """A password-protected ODT keeps its manifest readable and marks each encrypted member in it."""
    if _MANIFEST not in archive.namelist():
        return False
    return read_xml(archive, _MANIFEST, _KIND).find(f".//{_MANIFEST_NS}encryption-data") is not None


def _blocks(element: etree._Element) -> Iterator[str]:
    """One block per non-empty heading or paragraph; a table gives one line per row, cells joined by ' | ';
    lists, sections and the like are read through."""
    for child in element:
        if child.tag in _PARAGRAPHS:
            drawings: list[etree._Element] = []
            text = _inline(child, drawings).strip()
            if text:
                yield text
            for drawing in drawings:
                yield from _blocks(drawing)
        elif child.tag == f"{_TABLE}table":
            table = "\n".join(row for row in map(_row_text, _rows(child)) if row.strip(" |"))
            if table:
                yield table
        elif child.tag not in _HIDDEN:
            yield from _blocks(child)


def _inline(element: etree._Element, drawings: list[etree._Element]) -> str:
    """A paragraph's text, spans and links read through. The drawings anchored in it (text boxes, captioned
    images, shapes) are collected into `drawings`: their paragraphs are blocks of their own."""
    parts = [_SPACE.sub(" ", element.text or "")]
    for child in element:
        parts.append(_piece(child, drawings))
        parts.append(_SPACE.sub(" ", child.tail or ""))
    return "".join(parts)


def _piece(child: etree._Element, drawings: list[etree._Element]) -> str:
    """What an element inside a paragraph stands for: ODF's space, tab and line-break elements are the
    characters they stand for."""
    tag = child.tag if isinstance(child.tag, str) else None  # None: an entity reference, left unexpanded
    if tag == f"{_TEXT}s":
        return " " * _count(child.get(f"{_TEXT}c"))
    if tag in _CHARACTERS:
        return _CHARACTERS[tag]
    if tag is None or tag in _HIDDEN:
        return ""
    if tag.startswith(_DRAW):
        drawings.append(child)
        return ""
    return _inline(child, drawings)


def _count(value: str | None) -> int:
    """text:c, the number of spaces a text:s stands for, at most _MAX_SPACES: 1 when absent or not a positive
    whole number in ASCII digits (int() would take '²' or '٣', or fail on 5,000 digits)."""
    digits = value.lstrip("0") if value and value.isascii() and value.isdigit() else ""
    if not digits:
        return 1
    return _MAX_SPACES if len(digits) > 9 else min(int(digits), _MAX_SPACES)


def _rows(table: etree._Element) -> Iterator[etree._Element]:
    """The table's rows in order, through header and row groups, not those of tables nested in cells."""
    for child in table:
        if child.tag == f"{_TABLE}table-row":
            yield child
        elif child.tag in _ROW_GROUPS:
            yield from _rows(child)


def _row_text(row: etree._Element) -> str:
    """Cells joined by ' | '; a cell merged into its neighbour (covered-table-cell) is left out as in DOCX."""
    cells = (cell for cell in row if cell.tag == f"{_TABLE}table-cell")
    return " | ".join(" ".join(_blocks(cell)) for cell in cells)
