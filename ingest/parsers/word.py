"""Word documents (DOCX) with python-docx: paragraphs and tables in document order."""

from __future__ import annotations

import io
from collections.abc import Iterator

import docx
import olefile
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from ingest.document import ParsedText
from ingest.errors import EncryptedDocumentError, ParseError
from ingest.parsers.archive import open_zip

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def parse_docx(data: bytes) -> ParsedText:
    if data.startswith(OLE_MAGIC):
        raise _not_a_zip_reason(data)
    open_zip(data, "DOCX").close()  # only the checks: python-docx reads the archive itself
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(_blocks(document.iter_inner_content()))
    except Exception as exc:  # python-docx fails on a foreign or damaged package with many types
        raise ParseError(f"not a valid DOCX file ({exc})") from exc
    return ParsedText("\n\n".join(blocks))


def _not_a_zip_reason(data: bytes) -> ParseError:
    """Why an OLE compound file named .docx cannot be read. Word saves a password-protected DOCX as one (the
    zip, encrypted, in its EncryptedPackage stream), and a binary Word 97-2003 file renamed to .docx is one
    too: both would otherwise fail as a "bad zip", which tells the user nothing."""
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            encrypted = ole.exists("EncryptionInfo") and ole.exists("EncryptedPackage")
            old_word = ole.exists("WordDocument")
    except Exception as exc:  # olefile fails on a damaged compound file with many types
        return ParseError(f"not a valid DOCX file (damaged OLE compound file: {exc})")
    if encrypted:
        return EncryptedDocumentError("the document is encrypted with a password")
    if old_word:
        return ParseError("an old Word 97-2003 file (.doc), not .docx: save it as .docx to include it")
    return ParseError("not a valid DOCX file (an OLE compound file, not a zip)")


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
