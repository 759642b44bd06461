"""Plain text, markup sources and code, decoded exactly as written so that offsets map back to file lines."""

from __future__ import annotations

import codecs
import locale
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes

from ingest.document import ParsedText
from ingest.errors import ParseError

_PROSE = ".txt .rst .org .tex .log .ini .cfg"  # Markdown and CSV have parsers of their own
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
_WIDE = ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le"]
_SAMPLE = 1 << 20
_MAX_CONTROL_RATIO = 0.01
UNSURE = 0.5  # a guessed encoding below this confidence is reported to the user
SNIFF_BYTES = 8192  # what is read of a file to tell text from binary when the whole is not decoded


@dataclass(frozen=True)
class Decoded:
    """Text and the encoding it was read in. confidence: 1.0 for a BOM or valid UTF-8 (ASCII included);
    for a guessed legacy encoding, (1 - charset_normalizer's chaos) / (1 + the other readings that are as
    plausible and give a different text): "Straße 12" in cp1252 reads as well in four other code pages."""

    text: str
    encoding: str  # Python's codec name
    confidence: float

    @property
    def meta(self) -> dict[str, object]:
        """What the catalog keeps of the decoding."""
        return {"encoding": self.encoding, "encoding_confidence": round(self.confidence, 2)}

    @property
    def warnings(self) -> tuple[str, ...]:
        """The doubt to show the user: a guess below UNSURE."""
        if self.confidence >= UNSURE:
            return ()
        return (f"encoding guessed as {self.encoding} ({self.confidence:.0%} sure)",)


def parse_text(data: bytes) -> ParsedText:
    decoded = decode_text(data)
    return ParsedText(decoded.text, meta=decoded.meta, warnings=decoded.warnings)


def decode_text(data: bytes) -> Decoded:
    """Bytes in whatever encoding they use (BOM, UTF-8, else guessed); binary data is refused (ParseError)."""
    decoded = _decode(data)
    sample = decoded.text[:_SAMPLE]
    if "\x00" in decoded.text or len(_CONTROL.findall(sample)) > _MAX_CONTROL_RATIO * len(sample):
        raise ParseError("binary content")
    return decoded


def looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes (SNIFF_BYTES of them) read as text, by the test that decode_text applies
    to a whole text: for files not read as one text (a suffixless file, a mailbox), to tell binary apart."""
    try:
        decode_text(_whole_utf8(head))
    except ParseError:
        return False
    return True


def _whole_utf8(head: bytes) -> bytes:
    """The head without a UTF-8 character that the cut split: the part of it that was read is not UTF-8,
    and would make the head look like a legacy encoding, or like binary."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return head[: exc.start]
    return head


def _decode(data: bytes) -> Decoded:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return Decoded(data.decode(encoding), encoding, 1.0)
            except UnicodeDecodeError as exc:
                raise ParseError("binary content") from exc
    if b"\x00" in data:  # binary, or UTF-16/32 without a BOM, which only detection can tell
        best = from_bytes(data).best()
        if best is None:
            raise ParseError("binary content")
        return Decoded(str(best), _codec(best.encoding), 1.0 - best.chaos)
    try:
        return Decoded(data.decode("utf-8"), "utf-8", 1.0)
    except UnicodeDecodeError:
        return _legacy(data)


def _legacy(data: bytes) -> Decoded:
    """A text without NUL bytes (so never UTF-16/32) that is not UTF-8: read in the first encoding people
    actually save in (the locale's, then cp1252, then latin-1) that charset_normalizer finds plausible, else
    in its best guess. Short texts are ambiguous (cp437 reads "Señor" as "Se±or" with less chaos than
    cp1252): the other readings at least as plausible lower the confidence."""
    matches = list(from_bytes(data, cp_exclusion=_WIDE))
    if not matches:
        raise ParseError("binary content")
    readings = [{_codec(name) for name in m.could_be_from_charset} for m in matches]
    i = next((i for codec in _preferred() for i, r in enumerate(readings) if codec in r), 0)
    chosen, text = matches[i], str(matches[i])
    rivals = {str(m) for m in matches if m.chaos <= chosen.chaos} - {text}
    codec = next(codec for codec in [*_preferred(), _codec(chosen.encoding)] if codec in readings[i])
    return Decoded(text, codec, (1.0 - chosen.chaos) / (1 + len(rivals)))


def _preferred() -> list[str]:
    """Legacy encodings by how often people save in them: the locale's (when it is not UTF-8), cp1252
    (Windows in the West), latin-1."""
    local = _codec(locale.getpreferredencoding(False))
    return list(dict.fromkeys([*([local] if local not in ("utf-8", "ascii") else []), "cp1252", "iso8859-1"]))


def _codec(name: str) -> str:
    return codecs.lookup(name).name
