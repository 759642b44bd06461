"""EPUB books: the XHTML documents of the OPF spine in reading order (stdlib zip and lxml; no ebooklib)."""

from __future__ import annotations

import posixpath
import zipfile
from urllib.parse import unquote

from ingest.document import ParsedText
from ingest.errors import ParseError
from ingest.parsers.archive import open_zip, read_member, read_xml
from ingest.parsers.html import html_to_text

_KIND = "EPUB"
_CONTAINER = "META-INF/container.xml"
_HTML_TYPES = frozenset(("application/xhtml+xml", "text/html"))


def parse_epub(data: bytes) -> ParsedText:
    with open_zip(data, _KIND) as archive:
        chapters = (read_member(archive, name, _KIND) for name in _spine(archive))
        texts = (html_to_text(chapter, with_title=False) for chapter in chapters)
        return ParsedText("\n\n".join(text for text in texts if text))


def _spine(archive: zipfile.ZipFile) -> list[str]:
    """Member names of the spine's (X)HTML documents in reading order; items not in the zip are skipped."""
    container = read_xml(archive, _CONTAINER, _KIND)
    rootfiles = container.xpath("//*[local-name()='rootfile']/@full-path")
    if not rootfiles:
        raise ParseError("not a valid EPUB file (no package document)")
    opf_path = unquote(str(rootfiles[0]))
    opf = read_xml(archive, opf_path, _KIND)
    base = posixpath.dirname(opf_path)
    manifest = {
        item.get("id"): item
        for item in opf.xpath("//*[local-name()='manifest']/*[local-name()='item']")
        if item.get("href")
    }
    present = set(archive.namelist())
    names = []
    for ref in opf.xpath("//*[local-name()='spine']/*[local-name()='itemref']/@idref"):
        item = manifest.get(str(ref))
        if item is None or item.get("media-type") not in _HTML_TYPES:
            continue
        name = posixpath.normpath(posixpath.join(base, unquote(item.get("href").split("#")[0])))
        if name in present:
            names.append(name)
    return names
