"""PowerPoint presentations (PPTX) with python-pptx: one page per slide, so that a citation's page is the
slide's number. A slide reads as its shapes' text in the slide's order, tables by row, then its notes."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import pptx
from pptx.shapes.base import BaseShape
from pptx.shapes.group import GroupShape
from pptx.slide import Slide
from pptx.table import Table, _Row

from ingest.document import ParsedText
from ingest.errors import ParseError
from ingest.parsers.archive import OLE_MAGIC, open_zip, refuse_ole

_KIND = "PPTX"


def parse_pptx(data: bytes) -> ParsedText:
    if data.startswith(OLE_MAGIC):
        refuse_ole(data, _KIND, old_stream="PowerPoint Document", app="PowerPoint")
    open_zip(data, _KIND).close()  # only the checks: python-pptx reads the archive itself
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
        pages = ["\n\n".join(_slide_blocks(slide)) for slide in presentation.slides]
    except Exception as exc:  # python-pptx fails on a foreign or damaged package with many types
        raise ParseError("not a valid PPTX file (damaged, or a zip of another kind)") from exc
    return ParsedText.from_pages(pages)


def _slide_blocks(slide: Slide) -> Iterator[str]:
    """The slide's shapes, then its speaker notes: what the presenter says is often the slide's meaning."""
    yield from _shape_blocks(slide.shapes)
    frame = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
    notes = _lines(frame.text) if frame is not None else ""
    if notes.strip():
        yield "Notes: " + notes


def _shape_blocks(shapes: Iterable[BaseShape]) -> Iterator[str]:
    """One block per shape with text, in the slide's order (its z-order: titles come first in layouts);
    a table gives one line per row, cells joined by ' | '; a group is read through."""
    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shape_blocks(shape.shapes)
        elif shape.has_text_frame and (text := _lines(shape.text_frame.text)).strip():
            yield text
        elif shape.has_table and (table := _table_text(shape.table)):
            yield table


def _table_text(table: Table) -> str:
    rows = (_row_text(row) for row in table.rows)
    return "\n".join(row for row in rows if row.strip(" |"))


def _row_text(row: _Row) -> str:
    """Cells merged into another (spanned) are left out, as in DOCX; a cell's paragraphs share its line."""
    cells = (cell for cell in row.cells if not cell.is_spanned)
    return " | ".join(" ".join(cell.text.split()) for cell in cells)


def _lines(text: str) -> str:
    """python-pptx gives a line break inside a paragraph as a vertical tab, as PowerPoint copies it."""
    return text.replace("\v", "\n")
