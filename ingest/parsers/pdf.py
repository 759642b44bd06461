"""PDF text page by page with pypdf, keeping where each page begins so chunks can cite their page."""

from __future__ import annotations

import io

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from ingest.document import ParsedText
from ingest.errors import EncryptedDocumentError, ParseError


def parse_pdf(data: bytes) -> ParsedText:
    reader = _open(data)
    try:
        pages = reader.pages
        count = len(pages)
    except Exception as exc:  # a damaged page tree fails in pypdf with any of many types
        raise ParseError(f"not a valid PDF file ({exc})") from exc
    return ParsedText.from_pages([_page_text(pages, i) for i in range(count)])


def _open(data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data))
    except Exception as exc:  # garbage fails in pypdf with any of many types
        raise ParseError(f"not a valid PDF file ({exc})") from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except DependencyError as exc:  # AES without a crypto package: unreadable to us either way
            raise EncryptedDocumentError("the PDF is encrypted (AES, and no decryption library)") from exc
        if not opened:
            raise EncryptedDocumentError("the PDF is encrypted")
    return reader


def _page_text(pages, index: int) -> str:
    """A page that fails on its own is left empty, so one broken page does not lose the whole document."""
    try:
        return pages[index].extract_text() or ""
    except Exception:  # pypdf raises many types on damaged content streams
        return ""
