"""Mailboxes (.mbox, as mail clients and mail exports write them): each message read as an .eml is, in the
order of the file, one after another."""

from __future__ import annotations

import re

from ingest.document import ParsedText
from ingest.errors import ParseError
from ingest.parsers.mail import render_message
from ingest.parsers.text import SNIFF_BYTES, looks_like_text

# A message begins at a line starting "From " (the envelope line), as the stdlib's mailbox.mbox reads it.
# The mailbox module wants a file; parsers get the bytes, so they are split here, a message at a time.
_ENVELOPE = re.compile(rb"^From ", re.MULTILINE)
# Writers quote a body line starting "From " as ">From " (and ">From " as ">>From ": mboxrd); reading
# undoes one level, which mailbox.mbox leaves to its caller.
_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)


def parse_mbox(data: bytes) -> ParsedText:
    if not looks_like_text(data[:SNIFF_BYTES]):  # a mailbox is text, whatever each message's charset
        raise ParseError("binary content")
    starts = [match.start() for match in _ENVELOPE.finditer(data)]
    if not starts:
        raise ParseError("not a valid MBOX file (no message begins with a 'From ' line)")
    texts: list[str] = []
    unreadable = 0
    for start, end in zip(starts, [*starts[1:], len(data)], strict=True):
        try:
            text = render_message(_message(data, start, end))
        except Exception:  # the stdlib's e-mail package fails on some malformed messages with many types
            unreadable += 1  # one bad message loses itself, not the mailbox
            continue
        if text:
            texts.append(text)
    warnings = (f"{unreadable} of {len(starts)} messages could not be read",) if unreadable else ()
    return ParsedText("\n\n".join(texts), warnings=warnings)


def _message(data: bytes, start: int, end: int) -> bytes:
    """The message's bytes without the mbox format's envelope line and quoting."""
    newline = data.find(b"\n", start, end)
    return _QUOTED.sub(rb"\1", data[newline + 1 : end]) if newline != -1 else b""
