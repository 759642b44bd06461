"""Whether an answer names something that none of what it read says.

A 270M model reading its memories sometimes answers from its own prior instead ("In which city are the
headquarters of Brizoufum Works?" → "Paris", while the memory it read says Staithusford): the memory
attached is a little weaker than the same text in the prompt, and a strong prior wins. Such an answer
names what no source says. Names and figures are the words that carry an answer's facts, so an answer
is checked by them: `unsupported` lists those found in neither the question nor any source it read.

Text is cut into runs of letters and runs of digits ("2024年" is 2024 and 年, "B52" is B and 52), so that a
figure inside text written without spaces is found. A name is a run of letters with a capital; a figure
a run of digits. Scripts without case (CJK, Thai...) have no names by this rule: only their figures
are checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_RUN = re.compile(r"\d+|[^\W\d_]+")  # digits, or letters (\w less digits and the underscore)


def unsupported(answer: str, read: Iterable[str]) -> list[str]:
    """The names and figures of `answer` (in order, each once) that appear, in any case, as a run in none
    of the texts `read` (the question and the sources)."""
    known = {run.casefold() for text in read for run in _RUN.findall(text)}
    names = dict.fromkeys(run for run in _RUN.findall(answer) if _is_name(run))
    return [run for run in names if run.casefold() not in known]


def _is_name(run: str) -> bool:
    return run[0].isdigit() or run != run.lower()  # digits, or a letter with case that is not lower
