"""Files to text, by suffix (a file without one is text). Whatever a file holds, parse() returns text or
raises ParseError saying why."""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from ingest.document import MAX_DOCUMENT_CHARS, ParsedText
from ingest.errors import ParseError, TooLargeError, UnsupportedFormatError
from ingest.parsers.epub import parse_epub
from ingest.parsers.html import parse_html
from ingest.parsers.mail import parse_email
from ingest.parsers.markdown import parse_markdown
from ingest.parsers.mbox import parse_mbox
from ingest.parsers.odt import parse_odt
from ingest.parsers.pdf import parse_pdf
from ingest.parsers.slides import parse_pptx
from ingest.parsers.tables import parse_csv, parse_tsv
from ingest.parsers.text import SNIFF_BYTES, TEXT_SUFFIXES, looks_like_text, parse_text
from ingest.parsers.word import parse_docx

log = logging.getLogger(__name__)

MAX_FILE_BYTES = MAX_DOCUMENT_CHARS  # as many bytes as a document's text may have characters
# Bumped when a parser reads the same bytes into another text or other lines: documents read before are
# read again at the next scan (1: HTML lines, CSV delimiters and headers, Markdown front matter, encodings).
VERSION = 1

_PARSERS: dict[str, Callable[[bytes], ParsedText]] = {
    "": parse_text,  # README, Makefile, LICENSE; is_supported lets in only the ones that start as text
    **dict.fromkeys(TEXT_SUFFIXES, parse_text),
    **dict.fromkeys((".html", ".htm", ".xhtml"), parse_html),
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".odt": parse_odt,
    ".pptx": parse_pptx,
    ".epub": parse_epub,
    ".eml": parse_email,
    ".mbox": parse_mbox,
    **dict.fromkeys((".md", ".markdown"), parse_markdown),
    ".csv": parse_csv,
    ".tsv": parse_tsv,
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_PARSERS) - {""}

_SURROGATE = re.compile("[\ud800-\udfff]")
_OS_REASONS = {
    errno.ENOENT: "file vanished while reading",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ELOOP: "symbolic link loop",
    errno.EISDIR: "not a regular file",
}


def is_supported(path: Path) -> bool:
    """Whether the file is a document: one of a known type, or one without a suffix whose first bytes are
    text. A binary without a suffix (a program in bin/) is simply not a document, as a .exe is not, rather
    than a document failing as "binary content" for each program. Reads the file only then."""
    suffix = path.suffix.lower()
    return suffix in SUPPORTED_SUFFIXES or (not suffix and _starts_as_text(path))


def parse(path: Path) -> ParsedText:
    """The document's text. An empty file is an empty text, not an error: there is simply nothing in it."""
    parser = _PARSERS.get(path.suffix.lower())
    if parser is None:
        raise UnsupportedFormatError(f"unsupported file type {path.suffix}")
    try:
        return _parse(parser, path)
    except ParseError as exc:
        if exc.__cause__ is not None:  # what a library or the system said: for the log, not the user
            log.info("%s: %s (%s: %s)", path, exc, type(exc.__cause__).__name__, exc.__cause__)
        raise


def _parse(parser: Callable[[bytes], ParsedText], path: Path) -> ParsedText:
    """The text, or a ParseError in one sentence for whatever fails; the cause, if any, chained to it."""
    try:
        data = _read(path)
        return _valid_unicode(parser(data)).normalized() if data else ParsedText("")
    except ParseError:
        raise
    except OSError as exc:
        reason = _OS_REASONS.get(exc.errno or 0, f"could not read the file ({exc.strerror or exc})")
        raise ParseError(reason) from exc
    except RecursionError as exc:
        raise ParseError("the document is nested too deeply") from exc
    except MemoryError as exc:
        raise ParseError("the document is too large to parse") from exc
    except Exception as exc:  # a parser library failing in a way we did not foresee is still a bad document
        raise ParseError(
            "could not parse the file (damaged, or a variant its reader does not handle)"
        ) from exc


def _valid_unicode(doc: ParsedText) -> ParsedText:
    """Lone surrogates (pypdf makes them from broken font maps) cannot be encoded for the tokenizer or the
    catalog; each becomes U+FFFD, one character for one, so offsets and pages stay put."""
    if _SURROGATE.search(doc.text) is None:
        return doc
    return replace(doc, text=_SURROGATE.sub("\ufffd", doc.text))


def _starts_as_text(path: Path) -> bool:
    """Whether the file's first SNIFF_BYTES read as text (`looks_like_text`)."""
    try:
        with _open(path) as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return False
            head = file.read(SNIFF_BYTES)
    except OSError:
        return False
    return looks_like_text(head)


def _open(path: Path) -> BinaryIO:
    """The file opened non-blocking: a named pipe that has a document's name must not hang us."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    return os.fdopen(fd, "rb")


def _read(path: Path) -> bytes:
    """The file's bytes; one past MAX_FILE_BYTES is refused unread."""
    with _open(path) as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ParseError("not a regular file")
        data = b"" if info.st_size > MAX_FILE_BYTES else file.read(MAX_FILE_BYTES + 1)  # it may be growing
    size = max(info.st_size, len(data))
    if size > MAX_FILE_BYTES:
        raise TooLargeError(f"file too large ({size >> 20} MB; the limit is {MAX_FILE_BYTES >> 20} MB)")
    return data
