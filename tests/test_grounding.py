"""The grounding check that sends a memory answer back to be read as text (engine/chat/grounding.py)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from engine.chat.grounding import unsupported

RUN = re.compile(r"\d+|[^\W\d_]+")
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
WORDS = ["Paris", "paris", "1696", "Staifarkby", "the", "東京", "2024年", "ß", "SS"]
words = st.lists(st.sampled_from(WORDS))


def is_name(run: str) -> bool:
    return run[0].isdigit() or run != run.lower()


@given(texts | words.map(" ".join), st.lists(texts | words.map(" ".join), max_size=4))
def test_it_lists_exactly_the_names_and_figures_found_in_nothing_read(answer: str, read: list[str]):
    names = unsupported(answer, read)
    known = {run.casefold() for text in read for run in RUN.findall(text)}
    runs = RUN.findall(answer)
    assert len(names) == len(set(names))
    assert all(name in runs and is_name(name) and name.casefold() not in known for name in names)
    assert all(run in names for run in runs if is_name(run) and run.casefold() not in known)
    assert unsupported(answer, [*read, answer]) == []  # an answer copied from what it read is kept


def test_a_city_from_the_models_prior_is_caught_and_a_copied_one_is_not():
    source = "Brizoufum Works is a maker of clocks. Its headquarters are in the city of Staithusford."
    question = "In which city are the headquarters of Brizoufum Works?"
    assert unsupported("St. Petersburg, Russia", [question, source]) == ["St", "Petersburg", "Russia"]
    assert unsupported("in the city of Staithusford", [question, source]) == []
    assert unsupported("STAITHUSFORD", [question, source]) == []  # any case
    assert unsupported("Brizoufum Works", [question]) == []  # the question's own words count as read


def test_figures_are_found_inside_text_written_without_spaces_and_caseless_words_are_not_names():
    assert unsupported("2024年", ["2024年に開業した"]) == []
    assert unsupported("2025年", ["2024年に開業した"]) == ["2025"]
    assert unsupported("東京です", ["大阪"]) == []  # no case: only figures are checked
    assert unsupported("Straße 12", ["STRASSE 12"]) == []  # casefolded
    source = "It was opened in the year 1697."
    assert unsupported("opened in 1696 by the Guild", [source]) == ["1696", "Guild"]
