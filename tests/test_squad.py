"""SQuAD scoring: the official normalisation, EM and F1, and abstention on unanswerable questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import squad

FIXTURE = Path(__file__).parent / "data" / "qa"
words = st.lists(st.text(alphabet="abcdefghij XYZ,.!'", min_size=1, max_size=8), min_size=1, max_size=6)


def test_normalisation_drops_case_punctuation_and_articles():
    assert squad.normalize("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert squad.normalize("an apple a day") == "apple day"
    assert squad.normalize("Theatre") == "theatre"  # 'the' only as a word


def test_scores_of_known_pairs():
    assert squad.exact_match("the Denver Broncos", ("Denver Broncos",)) == 1.0
    assert squad.f1("Denver Broncos won", ("Denver Broncos",)) == 0.8  # P 2/3, R 1
    assert squad.f1("Carolina", ("Denver Broncos",)) == 0.0
    assert squad.f1("x", ("Denver", "x y")) == 2 / 3  # the best of the gold answers


def test_unanswerable_questions_score_only_abstentions():
    assert squad.f1("unknown", ()) == squad.exact_match("Unknown.", ()) == 1.0
    assert squad.f1("", ()) == 1.0
    assert squad.f1("Paris", ()) == squad.exact_match("Paris", ()) == 0.0
    assert not squad.abstains("unknown soldier")


@given(words, words)
def test_f1_is_symmetric_bounded_and_one_on_itself(a, b):
    x, y = " ".join(a), " ".join(b)
    assert 0.0 <= squad.f1(x, (y,)) <= 1.0
    assert squad.f1(x, (y,)) == squad.f1(y, (x,))
    if squad.normalize(x):
        assert squad.f1(x, (x,)) == squad.exact_match(x, (x,)) == 1.0


@given(words, words)
def test_exact_match_implies_full_f1(a, b):
    x, y = " ".join(a), " ".join(b)
    if squad.exact_match(x, (y,)) == 1.0 and squad.normalize(y):
        assert squad.f1(x, (y,)) == 1.0


def test_load_reads_passages_questions_and_unanswerables():
    v1 = squad.load(FIXTURE / "xquad-en" / "xquad.en.json")
    raw = json.loads((FIXTURE / "xquad-en" / "xquad.en.json").read_text())["data"]
    assert [a.title for a in v1.articles] == [a["title"] for a in raw]
    q = v1.questions[0]
    assert q.answers[0] in v1.articles[q.article].passages[q.passage]
    v2 = squad.load(FIXTURE / "squad-v2-dev-subset" / "dev-v2.0-subset.json")
    assert sum(not q.answers for q in v2.questions) == 2
    assert sum(bool(q.answers) for q in v2.questions) == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"data": [{"title": "t"', "truncated"),
        ('{"version": "1.1"}', "missing required field `data`"),
        ('{"data": [{"title": "t"}]}', "missing required field `paragraphs` - at `$.data[0]`"),
        ('{"data": [{"title": 7, "paragraphs": []}]}', "Expected `str`, got `int` - at `$.data[0].title`"),
        ("\udcff", "malformed"),
        ("", "truncated"),
    ],
)
def test_a_damaged_file_is_one_clear_error_saying_where(tmp_path, text, why):
    path = tmp_path / "xquad.en.json"
    path.write_text(text, errors="surrogateescape")
    with pytest.raises(squad.QADataError, match="not a readable SQuAD JSON file") as error:
        squad.load(path)
    assert why in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(squad.QADataError, match="Cannot read the QA data .*missing.json: No such file"):
        squad.load(tmp_path / "missing.json")
