"""How much a reading of legacy bytes looks like writing, to choose between code pages that all decode the
bytes: Turkish in cp1252 reads `dýþarýda` (Icelandic letters among Turkish ones), Hebrew in cp1255 reads as
Cyrillic or Greek in cp1251 or cp1253. charset_normalizer's language coherence needs more text than a note
has; what a wrong code page breaks even in a few words is how letters go together in words."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from charset_normalizer.constant import FREQUENCIES

# The letters beyond ASCII of the languages written in the Latin legacy code pages (cp1250, cp1252, cp1254,
# cp1257, latin-1, latin-2...), lower case: a text in one of them uses the letters of one of these.
_LATIN_ALPHABETS = tuple(
    frozenset(letters)
    for letters in (
        "äöüß",  # German
        "àâæçéèêëîïôœùûüÿ",  # French (and the accents English borrows: café, naïve)
        "áéíñóúü",  # Spanish
        "àáâãçéêíóôõú",  # Portuguese
        "àèéìíîòóùú",  # Italian
        "àçèéíïòóú",  # Catalan
        "áäéëíïóöúü",  # Dutch
        "åäæéöø",  # Danish, Norwegian, Swedish
        "áæðéíóöúýþ",  # Icelandic
        "äåöõšüž",  # Finnish, Estonian
        "âçğıîöşûü",  # Turkish
        "ąćęłńóśźż",  # Polish
        "áčďéěíňóřšťúůýž",  # Czech
        "áäčďéíĺľňóôŕšťúýž",  # Slovak
        "áéíóöőúüű",  # Hungarian
        "ăâîșşțţ",  # Romanian
        "čćđšž",  # Croatian, Bosnian, Serbian, Slovene
        "ąčęėįšųūž",  # Lithuanian
        "āčēģīķļņšūž",  # Latvian
    )
)
# Letters beyond ASCII that a language uses often: charset_normalizer's top 26 of each language it knows,
# Hebrew's whole alphabet (the cut at 26 left out two final letters, the ends of ארץ and כסף), and the Latin
# alphabets above (all of whose letters count: those are what tell Latin readings apart).
_FREQUENT = (
    *(frozenset(c for c in letters if not c.isascii()) for letters in FREQUENCIES.values()),
    frozenset("אבגדהוזחטיךכלםמןנסעףפץצקרשת"),
    *_LATIN_ALPHABETS,
)
# Scripts with letter forms for the end of a word (Hebrew's five, Greek's sigma): a reading that puts them
# elsewhere is another script's bytes. One that ends words with Hebrew's (two at least: one may be chance)
# and puts them nowhere else has evidence for cp1255; Greek's one sigma is matched by chance too easily
# (Hebrew's ע reads as ς in cp1253).
_FINAL_FORMS = {"ך": "כ", "ם": "מ", "ן": "נ", "ף": "פ", "ץ": "צ", "ς": "σ"}
_HEBREW_FINALS = frozenset("ךםןףץ")
# And letters that never end a word: those final forms' other forms, and Cyrillic's hard sign since the
# reforms of 1918 and 1945 (Hebrew read as Cyrillic ends its many words in ת with it).
_NOT_FINAL = frozenset((*_FINAL_FORMS.values(), "ъ"))
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
_IN_WORD = re.compile(r"(?<=[^\W\d_])[^\x00-\x7f](?=[^\W\d_])")  # a character beyond ASCII within a word
_MARKS = dict.fromkeys(c for c in range(0x80, 0x20000) if unicodedata.category(chr(c))[0] == "M")
_MARK = re.compile("[" + "".join(map(chr, _MARKS)) + "]")
_SAMPLE = 1 << 16  # characters looked at: enough to tell, and cheap for every reading of a long file
_CLOSE = 0.1  # readings whose letter frequencies are this close look as much like writing


@dataclass(frozen=True)
class Shape:
    """How a reading looks as writing."""

    plausible: bool  # words of one script and case, no symbol or stray mark in them, one language's letters
    frequency: float  # the share of its letters beyond ASCII that one language uses often (1.0: none)
    final_forms: bool  # Hebrew's final letters ending two words or more, and only at word ends


def likeliest(texts: Sequence[str], prior: Sequence[int]) -> tuple[int, list[int]]:
    """Which reading of the same bytes looks most like writing, and the others that look as much like it
    (the text is ambiguous between them). Plausible readings first; among them, those whose letters are
    about as frequent as the most frequent's (within _CLOSE: a few words' counts are coarse); of those, one
    with final forms in place, then the lowest `prior` (the order of preference), then the most frequent."""
    shapes = [shape(text) for text in texts]
    plausible = any(s.plausible for s in shapes)
    pool = [j for j, s in enumerate(shapes) if s.plausible == plausible]
    top = max(shapes[j].frequency for j in pool)
    close = [j for j in pool if shapes[j].frequency >= top - _CLOSE]
    i = min(close, key=lambda j: (not shapes[j].final_forms, prior[j], -shapes[j].frequency, j))
    alike = [j for j in close if j != i and shapes[j].final_forms == shapes[i].final_forms]
    return i, alike


def shape(text: str) -> Shape:
    """The shape of a reading (its first _SAMPLE characters). ASCII letters read the same in every code page
    people use, so the letters beyond them, and the words they stand in, tell readings apart."""
    sample = text[:_SAMPLE]
    bare = sample.translate(_MARKS)  # marks apart: a pointed Hebrew word is still one word
    words = [word for word in _WORD.findall(bare) if not word.isascii()]
    letters = Counter(c for word in words for c in word.lower() if not c.isascii() and c.isalpha())
    plausible = (
        not _stray_mark(sample)
        and not any(not c.isalpha() for c in _IN_WORD.findall(bare))  # `Se±or`, `G³nayd²n`
        and all(_one_script(word) and _finals_placed(word) and not _case_flip(word) for word in words)
        and _one_alphabet(set(letters))
    )
    total = sum(letters.values())
    frequency = max(sum(letters[c] for c in f) for f in _FREQUENT) / total if total else 1.0
    finals = plausible and sum(len(word) > 1 and word[-1] in _HEBREW_FINALS for word in words) >= 2
    return Shape(plausible, frequency, finals)


def _stray_mark(text: str) -> bool:
    """A combining mark (a Hebrew point, an accent) that follows no letter, or a letter of another script
    (an Arabic vowel sign on a Latin letter): another code page's letter."""
    for match in _MARK.finditer(text):
        start = match.start()
        while start and unicodedata.category(text[start - 1])[0] == "M":  # marks stack on one letter
            start -= 1
        base = text[start - 1] if start else ""
        if not base.isalpha() or _script(match.group()) not in (_script(base), "COMBINING"):
            return True
    return False


def _one_script(word: str) -> bool:
    """A word's letters are of one script: `Straпe` is a Latin word with a Cyrillic letter read into it."""
    return len({_script(c) for c in word}) == 1


def _case_flip(word: str) -> bool:
    """A small letter beyond ASCII followed by a capital one (`щРН`: cp1251 read as KOI8-R swaps cases)."""
    return any(a.islower() and b.isupper() and not b.isascii() for a, b in zip(word, word[1:], strict=False))


def _finals_placed(word: str) -> bool:
    """Final letter forms only at the end, and no letter that never ends a word there (a one-letter word
    aside)."""
    return not any(c in _FINAL_FORMS for c in word[:-1]) and not (
        len(word) > 1 and word[-1].lower() in _NOT_FINAL
    )


def _one_alphabet(letters: set[str]) -> bool:
    """The letters beyond ASCII are of one script besides Latin, and the Latin ones of one language."""
    latin = {c for c in letters if _script(c) == "LATIN"}
    return len({_script(c) for c in letters} - {"LATIN"}) <= 1 and (
        not latin or any(latin <= alphabet for alphabet in _LATIN_ALPHABETS)
    )


@cache
def _script(letter: str) -> str:
    """The script a letter belongs to, by its Unicode name (LATIN SMALL LETTER A: LATIN)."""
    return "LATIN" if letter.isascii() else unicodedata.name(letter, "?").split()[0]
