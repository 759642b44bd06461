"""Whether an answer names something that none of what it read says.

A 270M model reading its memories sometimes answers from its own prior instead ("In which city are the
headquarters of Brizoufum Works?" → "Paris", while the memory it read says Staithusford): the memory
attached is a little weaker than the same text in the prompt, and a strong prior wins. Such an answer
names what no source says. Names and figures are the words that carry an answer's facts, so an answer
is checked by them: `unsupported` lists those found in neither the question nor any source it read.

A name is a run of letters with a capital, compared as the keyword index folds words (`keyword_form`:
case, accents and marks, so "Istanbul" is found in "İstanbul" and "Renee" in "Renée"; letters it does not
fold, such as Ł or ø, are other letters). A sentence's first word is no name when it is one of the English
words that open answers ("Yes", "The", "According..."): the prompt is English. A figure is a run of
digits with the separators people write inside numbers, versions, times and dates (`1,200`, `2.14.1`,
`09:30`, `2024-03-05`), compared in one form: a comma or dot before three digits is a thousands
separator, else a decimal point; leading zeros of a group and trailing zeros of decimals go. So `1,200` is
`1200`, `3,5` is `3.5` and `09:30` is `9:30`, but `1.5` is not `15` and `1.14.1` is not `2.14.1`. A
source's figure vouches for its runs of up to three groups between `:`, `/` and `-` too (1820 in
"1820-1880"). Scripts without case (CJK, Thai...) have no names by this rule: only their figures are
checked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from engine.retrieval.keyword import keyword_form

_RUN = re.compile(r"\d+(?:[.,:/-]\d+)*|[^\W\d_]+")  # a figure, or a run of letters (\w less digits and _)


def unsupported(answer: str, read: Iterable[str]) -> list[str]:
    """The names and figures of `answer` (as written there, in order, each once) that none of the texts
    `read` (the question and the sources) holds, compared as the module's doc says."""
    runs = [run for text in read for run in _RUN.findall(unicodedata.normalize("NFKC", text))]
    figures = {form for run in runs if run[0].isdecimal() for form in _vouched(_figure(run))}
    words = {word for run in runs if not run[0].isdecimal() for word in keyword_form(run).split()}
    found, end = [], None  # end: where the run before ended (None: no run yet)
    for match in _RUN.finditer(answer := unicodedata.normalize("NFKC", answer)):
        run, opens = match[0], end is None or _SENTENCE_END.search(answer, end, match.start()) is not None
        end = match.end()
        if run[0].isdecimal():
            missing = _figure(run) not in figures
        elif run != run.lower() and not (opens and run.casefold() in _OPENERS):  # a letter with case: a name
            missing = not set(keyword_form(run).split()) <= words
        else:
            continue
        if missing:
            found.append(run)
    return list(dict.fromkeys(found))


# English words that open a sentence of an answer without naming anything
_OPENER_WORDS = (
    "yes no i the a an it its he she they we you this that these those there here in on at by for from to of"
    " with as according based because since after before during about around approximately nearly over"
    " under one"
)
_OPENERS = frozenset(_OPENER_WORDS.split())
_SENTENCE_END = re.compile(r"[.!?:;]\s|\n")  # between two runs: the second opens a sentence


def _figure(run: str) -> str:
    """A figure in one form (the module's doc): "1,200" → "1200", "3,50" → "3.5", "09:30" → "9:30"."""
    form = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in run)
    form = re.sub(r"[.,](?=\d{3}(?!\d))", "", form).replace(",", ".")  # thousands go, decimals are "."
    form = re.sub(r"(?<![\d.])0+(?=\d)", "", form)  # leading zeros of a group (not of decimals)
    form = re.sub(r"(\.\d*?)0+(?=$|[:/-])", r"\1", form)  # trailing zeros of decimals
    return re.sub(r"\.(?=$|[:/-])", "", form)


VOUCHED_GROUPS = 3  # a date's groups: runs of up to this many are vouched for (not every run of a long one)


def _vouched(form: str) -> set[str]:
    """The figures a source's figure vouches for: itself and its runs of up to VOUCHED_GROUPS groups
    between ':', '/' and '-' ("2024", "3-5" and "2024-3" of "2024-3-5")."""
    parts = re.split(r"([:/-])", form)
    n = len(parts) // 2 + 1
    runs = ("".join(parts[2 * i : 2 * j + 1]) for i in range(n) for j in range(i, min(i + VOUCHED_GROUPS, n)))
    return {form, *runs}
