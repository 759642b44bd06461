"""PDF text page by page with pypdf, keeping where each page begins so chunks can cite their page."""

from __future__ import annotations

import io
from dataclasses import replace

from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError
from pypdf.generic import ContentStream, DictionaryObject, PdfObject, StreamObject

from ingest.document import ParsedText
from ingest.errors import EncryptedDocumentError, ParseError

NEEDS_OCR = "no text layer: needs OCR"


def parse_pdf(data: bytes) -> ParsedText:
    """The text of every page. Scanned pages (an image, no text layer) give no text: a document of only those
    fails, so the user sees it needs OCR; a few of them among text pages are a warning naming the pages."""
    reader = _open(data)
    try:
        pages = reader.pages
        count = len(pages)
    except Exception as exc:  # a damaged page tree fails in pypdf with any of many types
        raise ParseError("not a valid PDF file (damaged or cut short)") from exc
    texts = [_page_text(pages, i) for i in range(count)]
    scanned = [i + 1 for i, text in enumerate(texts) if not text.strip() and _draws_an_image(pages, i)]
    if scanned and not any(text.strip() for text in texts):
        raise ParseError(NEEDS_OCR)
    return replace(ParsedText.from_pages(texts), warnings=_scanned_warning(scanned))


def _open(data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data))
    except Exception as exc:  # garbage fails in pypdf with any of many types
        raise ParseError("not a valid PDF file (damaged or cut short)") from exc
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


def _draws_an_image(pages, index: int) -> bool:
    """Whether the page's content draws an image, which makes a page without text a scan rather than a blank
    page. The content is walked, not the resources: pages often inherit one resource dictionary listing
    every image of the document, blank pages included. A page that cannot be walked is not called a scan."""
    try:
        page: PageObject = pages[index]
        return _stream_draws_an_image(page.get_contents(), page.get("/Resources"), page.pdf, set())
    except Exception:  # pypdf raises many types on damaged content streams and resources
        return False


def _stream_draws_an_image(
    content: ContentStream | None, resources: PdfObject | None, pdf: PdfReader | None, seen: set[int]
) -> bool:
    """Whether a content stream shows an inline image or paints an image XObject, directly or through the
    Form XObjects it paints. seen holds the forms already walked: each is walked once, so a form that paints
    itself, or a tree of forms painting each other many times over, costs no more than its size."""
    if content is None:
        return False
    xobjects = _xobjects(resources)
    for operands, operator in content.operations:
        if operator == b"INLINE IMAGE":
            return True
        if operator != b"Do" or not operands:
            continue
        xobject = xobjects.get(operands[0])
        xobject = xobject.get_object() if xobject is not None else None
        if not isinstance(xobject, StreamObject):
            continue
        if xobject.get("/Subtype") == "/Image":
            return True
        if xobject.get("/Subtype") == "/Form" and id(xobject) not in seen:
            seen.add(id(xobject))
            form = ContentStream(xobject, pdf)
            if _stream_draws_an_image(form, xobject.get("/Resources", resources), pdf, seen):
                return True
    return False


def _xobjects(resources: PdfObject | None) -> DictionaryObject:
    """The /XObject dictionary of a resource dictionary; empty when there is none or it is no dictionary."""
    resources = resources.get_object() if resources is not None else None
    xobjects = resources.get("/XObject") if isinstance(resources, DictionaryObject) else None
    xobjects = xobjects.get_object() if xobjects is not None else None
    return xobjects if isinstance(xobjects, DictionaryObject) else DictionaryObject()


def _scanned_warning(pages: list[int]) -> tuple[str, ...]:
    """One sentence naming the scanned pages (1-based), none when there are none."""
    if not pages:
        return ()
    if len(pages) == 1:
        return (f"page {pages[0]} has {NEEDS_OCR}",)
    return (f"pages {', '.join(map(str, pages))} have {NEEDS_OCR}",)
