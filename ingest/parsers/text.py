"""Plain text, markup sources and code, decoded exactly as written so that offsets map back to file lines."""

from __future__ import annotations

import codecs
import locale
import re
from dataclasses import dataclass
from functools import cache

from charset_normalizer import CharsetMatch, from_bytes
from charset_normalizer.md import mess_ratio

from ingest.document import ParsedText
from ingest.errors import ParseError
from ingest.parsers.orthography import likeliest

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
# The legacy code pages every text is also read in (Windows', KOI8-R): the ones people wrote in.
_CODE_PAGES = tuple(f"cp{page}" for page in range(1250, 1258)) + ("koi8-r",)
_HEAD_BYTES = 1 << 16  # what is read in every code page to tell which it is
UNSURE = 0.6  # a guessed encoding below this confidence is reported (two readings as good: 50% sure)
SNIFF_BYTES = 8192  # what is read of a file to tell text from binary when the whole is not decoded


@dataclass(frozen=True)
class Decoded:
    """Text and the encoding it was read in. confidence: 1.0 for a BOM or valid UTF-8 (ASCII included);
    for a guessed legacy encoding, (1 - charset_normalizer's chaos) / (1 + the other readings that are as
    plausible and give a different text): "Straße 12" in cp1252 reads as well in four other code pages."""

    text: str
    encoding: str  # Python's codec name
    confidence: float
    rivals: tuple[str, ...] = ()  # the encodings of those other readings: the text is ambiguous between them

    @property
    def meta(self) -> dict[str, object]:
        """What the catalog keeps of the decoding."""
        return {"encoding": self.encoding, "encoding_confidence": round(self.confidence, 2)}

    @property
    def warnings(self) -> tuple[str, ...]:
        """The doubt to show the user: a guess below UNSURE, and why when the text is ambiguous."""
        if self.confidence >= UNSURE:
            return ()
        guess = f"encoding guessed as {self.encoding} ({self.confidence:.0%} sure)"
        if not self.rivals:
            return (guess,)
        shown = ", ".join(self.rivals[:3]) + (
            f" and {len(self.rivals) - 3} more" if len(self.rivals) > 3 else ""
        )
        return (f"{guess}: ambiguous, it reads as well in {shown}",)


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
    """A text without NUL bytes (so never UTF-16/32) that is not UTF-8, read in the encoding whose reading
    looks most like writing (orthography.likeliest: Turkish in cp1252 reads `dýþarýda`, Hebrew read as
    Cyrillic has no final letters at word ends); among readings alike, in the first encoding people actually
    save in (the locale's, then cp1252, then latin-1), else in charset_normalizer's best guess. Short texts
    are ambiguous ("Straße" reads as "Straşe" in Mac Turkish): the other readings as alike and at least as
    plausible to charset_normalizer lower the confidence, and the warning names their encodings. Bytes
    charset_normalizer finds no reading for are binary."""
    matches = [m for m in from_bytes(data, cp_exclusion=_WIDE) if _keeps_ascii(m.encoding)]
    if not matches:
        raise ParseError("binary content")
    readings = _readings(data, matches)
    preferred = _preferred()
    order = [next((k for k, c in enumerate(preferred) if c in r.encodings), len(preferred)) for r in readings]
    i, alike = likeliest([r.head for r in readings], order)
    chosen = readings[i]
    rivals = {readings[j].head: readings[j].name for j in alike if readings[j].chaos <= chosen.chaos}
    rivals.pop(chosen.head, None)
    codec = next(codec for codec in [*preferred, chosen.name] if codec in chosen.encodings)
    confidence = (1.0 - chosen.chaos) / (1 + len(rivals))
    return Decoded(data.decode(codec), codec, confidence, tuple(dict.fromkeys(rivals.values())))


@dataclass(frozen=True)
class _Reading:
    """One way to read the bytes: its start (what is compared), the encodings that give it, how messy."""

    head: str
    encodings: frozenset[str]  # Python codec names
    name: str  # the one to name: charset_normalizer's pick, or the code page read
    chaos: float


def _readings(data: bytes, matches: list[CharsetMatch]) -> list[_Reading]:
    """charset_normalizer's readings, and those of the legacy code pages it did not offer: for a short text
    it offers some (`yürüyüş` in cp1254 came back as Big5 alone), the pages people wrote in may be missing."""
    head = data[:_HEAD_BYTES]
    readings = [
        _Reading(
            str(m)[: len(head)], frozenset(map(_codec, m.could_be_from_charset)), _codec(m.encoding), m.chaos
        )
        for m in matches
    ]
    offered = {codec for r in readings for codec in r.encodings}
    for page in _CODE_PAGES:
        if page not in offered:
            try:
                text = head.decode(page)
            except UnicodeDecodeError:
                continue
            chaos = mess_ratio(text)  # over its limit for its own readings, often, for a short Turkish text
            if chaos < 1:
                readings.append(_Reading(text, frozenset((page,)), page, chaos))
    return readings


@cache
def _keeps_ascii(encoding: str) -> bool:
    """Whether the code page reads printable ASCII as ASCII (not so EBCDIC's: cp037 reads "café" as "/X")."""
    printable = bytes(range(0x20, 0x7F))
    return printable.decode(encoding, errors="replace") == printable.decode("ascii")


def _preferred() -> list[str]:
    """Legacy encodings in the order to choose them between readings alike: the locale's (when it is not
    UTF-8), cp1252 (Windows in the West) and latin-1, which people save in most; then Windows' other pages,
    those whose reading is least often plausible by chance first (Hebrew and Greek: final letters and accents
    must fall right), the Latin ones by how many write in them (Turkish, Central European, Baltic), and last
    Cyrillic and Arabic, whose pages read almost any byte above 127 as a letter: all before DOS, Mac and ISO
    pages, which charset_normalizer offers as readily."""
    local = _codec(locale.getpreferredencoding(False))
    pages = ["cp1252", "iso8859-1", *(f"cp{page}" for page in (1255, 1253, 1254, 1250, 1257, 1251, 1256))]
    return list(dict.fromkeys([*([local] if local not in ("utf-8", "ascii") else []), *pages]))


def _codec(name: str) -> str:
    return codecs.lookup(name).name
