"""The grounding check that sends a memory answer back to be read as text (engine/chat/grounding.py)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from engine.chat.grounding import unsupported

WORDS = [
    "Paris",
    "paris",
    "1696",
    "1,200",
    "2.14.1",
    "Staifarkby",
    "the",
    "東京",
    "2024年",
    "ß",
    "SS",
    "İstanbul",
]
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
phrases = texts | st.lists(st.sampled_from(WORDS)).map(" ".join)


@given(phrases, st.lists(phrases, max_size=4), phrases)
def test_names_come_from_the_answer_and_reading_more_never_adds_one(answer: str, read: list[str], more: str):
    names = unsupported(answer, read)
    assert len(names) == len(set(names))
    assert all(name in unicodedata.normalize("NFKC", answer) for name in names)
    assert all(name[0].isdecimal() or name != name.lower() for name in names)  # a figure or a name
    assert set(unsupported(answer, [*read, more])) <= set(names)
    assert unsupported(answer, [*read, answer]) == []  # an answer copied from what it read is kept


def test_a_city_from_the_models_prior_is_caught_and_a_copied_one_is_not():
    source = "Brizoufum Works is a maker of clocks. Its headquarters are in the city of Staithusford."
    question = "In which city are the headquarters of Brizoufum Works?"
    assert unsupported("St. Petersburg, Russia", [question, source]) == ["St", "Petersburg", "Russia"]
    assert unsupported("in the city of Staithusford", [question, source]) == []
    assert unsupported("STAITHUSFORD", [question, source]) == []  # any case
    assert unsupported("Brizoufum Works", [question]) == []  # the question's own words count as read


def test_names_are_compared_as_the_keyword_index_folds_them():
    """Case, accents and marks: İstanbul (whose casefold keeps a combining dot) is Istanbul."""
    source = "In October Zoltan Aksoy flew to İstanbul; Renée Dubois met him at the Straße des 17. Juni."
    for kept in ("Istanbul", "İSTANBUL", "Renee", "RENÉE", "STRASSE", "Strasse"):
        assert unsupported(kept, [source]) == [], kept
    assert unsupported("Berlin", [source]) == ["Berlin"]
    assert unsupported("東京です", ["大阪"]) == []  # no case: only figures are checked


def test_figures_are_compared_in_one_form():
    assert unsupported("1.14.1", ["Version 2.14.1 shipped on 7 May 2025."]) == ["1.14.1"]
    assert unsupported("2024-05-03", ["It opened on 2024-03-05."]) == ["2024-05-03"]
    assert unsupported("1200 people", ["1,200 people came"]) == []
    assert unsupported("1,200,000", ["1200000 visitors"]) == []
    assert unsupported("3.5 litres", ["3,5 litres"]) == []
    assert unsupported("$3.5", ["it cost $3.50"]) == [] and unsupported("37", ["37.0 degrees"]) == []
    assert unsupported("9:30", ["the train leaves at 09:30"]) == []
    assert unsupported("15%", ["grew by 1.5%"]) == ["15"]  # a decimal point is not a thousands separator
    assert unsupported("5 mg", ["take 0.5 mg"]) == ["5"] and unsupported("0.5", ["0.05"]) == ["0.5"]
    assert unsupported("፩", ["0"]) == []  # a digit that is not decimal is no figure
    assert unsupported("2024年", ["２０２４年に開業した"]) == []  # full-width digits
    assert unsupported("2024", ["في عام ٢٠٢٤"]) == []  # Arabic-Indic digits
    assert unsupported("2025年", ["2024年に開業した"]) == ["2025"]
    source = "It was opened in the year 1697."
    assert unsupported("opened in 1696 by the Guild", [source]) == ["1696", "Guild"]


def test_a_part_of_a_source_figure_between_dashes_colons_or_slashes_is_vouched_for():
    assert unsupported("He was born in 1820.", ["Hollin (1820-1880) cast bells."]) == []
    assert unsupported("10:30", ["Open 10:30-18:00."]) == [] and unsupported("2024", ["03/05/2024"]) == []
    assert unsupported("192.168.1.1", ["at 192.168.1.1:8080"]) == []
    assert unsupported("1830", ["Hollin (1820-1880)"]) == ["1830"]
    table = "-".join(str(i) for i in range(20_000))  # runs of up to three groups, not all 200 million
    assert unsupported("7-8-9 and 19999", [table]) == [] and unsupported("7-8-9-10", [table]) == ["7-8-9-10"]


def test_english_openers_at_a_sentence_start_name_nothing():
    question, source = "Was the Hollin bell cast from bronze?", "The Hollin bell was cast from bronze."
    assert unsupported("Yes, it was cast from bronze.", [question, source]) == []
    assert unsupported("According to the notes, it is bronze. It rang.", [question, source]) == []
    assert unsupported("Paris. Yes.", [question, source]) == ["Paris"]  # a city at the start is a name
    assert unsupported("it said Yes", [source]) == ["Yes"]  # not at a sentence start
