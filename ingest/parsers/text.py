"""Plain text, markup sources and code, decoded exactly as written so that offsets map back to file lines."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

from ingest.document import ParsedText
from ingest.errors import ParseError

_PROSE = ".txt .md .markdown .rst .org .tex .csv .log .ini .cfg"
_CODE = (
    ".py .js .ts .tsx .jsx .c .h .cpp .hpp .rs .go .java .kt .rb .php .sh .sql .toml .yaml .yml .json "
    ".css .scss .swift .lua .r .jl .scala .cs .m"
)
TEXT_SUFFIXES = frozenset(_PROSE.split() + _CODE.split())

_BOMS = (  # longest first: the UTF-32 LE BOM begins with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# control characters that do not occur in text (tab, newlines, form feed and ESC of coloured logs do)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_COMMON = frozenset(("cp1252", "latin_1"))
_SAMPLE = 1 << 20
_MAX_CONTROL_RATIO = 0.01


def parse_text(data: bytes) -> ParsedText:
    return ParsedText(decode_text(data))


def decode_text(data: bytes) -> str:
    """Text of bytes in whatever encoding they use (BOM, UTF-8, else detected); binary data is refused."""
    text = _decode(data)
    sample = text[:_SAMPLE]
    if "\x00" in text or len(_CONTROL.findall(sample)) > _MAX_CONTROL_RATIO * len(sample):
        raise ParseError("binary content")
    return text


def _decode(data: bytes) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ParseError("binary content") from exc
    if b"\x00" not in data:  # NUL bytes: binary, or UTF-16/32 without a BOM, which only detection can tell
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise ParseError("binary content")
    # equally plausible code pages (French in cp1250 or cp1252 scores the same): the common one wins
    ties = (m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence))
    return str(next((m for m in ties if m.encoding in _COMMON), best))
