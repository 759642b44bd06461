"""Word documents (DOCX) with python-docx: paragraphs and tables in document order."""

from __future__ import annotations

import io
from collections.abc import Iterator

import docx
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from ingest.document import ParsedText
from ingest.errors import ParseError
from ingest.parsers.archive import OLE_MAGIC, open_zip, refuse_ole


def parse_docx(data: bytes) -> ParsedText:
    if data.startswith(OLE_MAGIC):
        refuse_ole(data, "DOCX", old_stream="WordDocument", app="Word")
    open_zip(data, "DOCX").close()  # only the checks: python-docx reads the archive itself
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(_blocks(document.iter_inner_content()))
    except Exception as exc:  # python-docx fails on a foreign or damaged package with many types
        raise ParseError("not a valid DOCX file (damaged, or a zip of another kind)") from exc
    return ParsedText("\n\n".join(blocks))


def _blocks(content: Iterator[Paragraph | Table]) -> Iterator[str]:
    """One block per non-empty paragraph; a table gives one line per row, cells joined by ' | '."""
    for item in content:
        if isinstance(item, Paragraph):
            if item.text.strip():
                yield item.text
        else:
            rows = (_row_text(row.cells) for row in item.rows)
            table = "\n".join(row for row in rows if row.strip(" |"))
            if table:
                yield table


def _row_text(cells: list[_Cell]) -> str:
    unique: list[_Cell] = []  # a merged cell appears once per grid column it spans
    for cell in cells:
        if not unique or cell._tc is not unique[-1]._tc:
            unique.append(cell)
    return " | ".join(" ".join(_blocks(cell.iter_inner_content())) for cell in unique)
