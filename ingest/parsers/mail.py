"""E-mails (.eml) with the stdlib: who, when and what about, the body as text, the attachments by name."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

from ingest.document import ParsedText
from ingest.parsers.html import html_to_text

_HEADERS = ("Subject", "From", "To", "Date")


def parse_email(data: bytes) -> ParsedText:
    return ParsedText(render_message(data))


def render_message(data: bytes) -> str:
    """One message as the reader should see it: headers, the body as text, the attachments by name. Shared
    with mailboxes, whose messages read as a run of these."""
    message = email.message_from_bytes(data, policy=policy.default)
    blocks = ["\n".join(f"{name}: {value}" for name in _HEADERS if (value := _header(message, name)))]
    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        text = _content(body)
        html = body.get_content_subtype() == "html"
        blocks.append(html_to_text(text, with_title=False) if html else text.strip("\n"))
    names = [name for part in message.iter_attachments() if (name := part.get_filename())]
    if names:
        blocks.append("Attachments: " + ", ".join(names))
    return "\n\n".join(block for block in blocks if block.strip())


def _header(message: EmailMessage, name: str) -> str:
    """The decoded header; a malformed one (which the stdlib may fail to parse) is kept as raw text."""
    try:
        value = message[name]
    except Exception:  # the stdlib's structured header parsers raise on some malformed headers
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), None)
    return " ".join(str(value).split()) if value is not None else ""


def _content(part: EmailMessage) -> str:
    """The part's text; an unknown or lying charset falls back to UTF-8 with replacement characters."""
    try:
        return part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", errors="replace")
