"""Whether an answer names something that none of what it read says.

A 270M model reading its memories sometimes answers from its own prior instead ("In which city are the
headquarters of Brizoufum Works?" → "Paris", while the memory it read says Staithusford): the memory
attached is a little weaker than the same text in the prompt, and a strong prior wins. Such an answer
names what no source says. Names and figures are the words that carry an answer's facts, so an answer
is checked by them: `unsupported` lists those found in neither the question nor any source it read.

A name is a run of letters with a capital, compared as the keyword index folds words (`keyword_form`: case,
accents and marks, so "Istanbul" is found in "İstanbul" and "Renee" in "Renée"). A figure is a run of
digits with the separators people write inside numbers, versions, times and dates (`1,200`, `2.14.1`,
`09:30`, `2024-03-05`), compared by its digits without leading zeros: `1,200` is `1200` and `3,5` is
`3.5`, but `1.14.1` is not `2.14.1`. Scripts without case (CJK, Thai...) have no names by this rule: only
their figures are checked.
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
    figures = {_digits(run) for run in runs if run[0].isdigit()}
    words = {word for run in runs if not run[0].isdigit() for word in keyword_form(run).split()}
    found = []
    for run in _RUN.findall(unicodedata.normalize("NFKC", answer)):
        if run[0].isdigit():
            missing = _digits(run) not in figures
        elif run != run.lower():  # a letter with case that is not lower: a name
            missing = not set(keyword_form(run).split()) <= words
        else:
            continue
        if missing:
            found.append(run)
    return list(dict.fromkeys(found))


def _digits(figure: str) -> str:
    """A figure's digits, made ASCII, without separators or leading zeros ("09:30" → "930")."""
    digits = "".join(str(unicodedata.decimal(c)) for c in figure if c.isdecimal())
    return digits.lstrip("0") or "0"
