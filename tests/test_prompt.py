"""Prompt formats and where an answer stops."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.chat.chat import loop_start, stop_index
from engine.chat.prompt import BASE, prompt_format


def test_base_models_get_the_few_shot_body_and_instruct_models_their_turns():
    assert prompt_format("gemma3", instruct=False) is BASE
    body = BASE.body("  Who wrote it? ")
    assert body.endswith("Question: Who wrote it?\nAnswer:") and "Answer: Paris" in body
    chat = prompt_format("gemma3", instruct=True)
    assert chat.body("Hi?") == "\n\n<start_of_turn>user\nHi?<end_of_turn>\n<start_of_turn>model\n"
    assert chat.special and not BASE.special
    assert prompt_format("qwen3", instruct=True).body("x").endswith("<|im_start|>assistant\n")
    assert prompt_format("mamba", instruct=True) is BASE  # unknown family: the plain format


def test_an_answer_stops_at_the_first_stop_string_after_it_begins():
    assert stop_index(" Paris\nQuestion:", ("\n",)) == 6
    assert stop_index("\n\n Paris", ("\n",)) is None  # leading blank lines do not end an answer
    assert stop_index("Paris", ("\n",)) is None


@given(st.text(), st.text(alphabet="\n ", min_size=0, max_size=3))
def test_stop_index_is_inside_the_text_and_after_the_leading_space(text, lead):
    cut = stop_index(lead + text, ("\n",))
    if cut is not None:
        assert len(lead) <= cut < len(lead + text) and (lead + text)[cut] == "\n"
        assert (lead + text)[:cut].strip()


def test_a_degenerate_loop_ends_the_answer_after_its_first_copy():
    assert loop_start("$230, is 1" + "0" * 30) == len("$230, is 10")
    assert loop_start("yes " * 10) == len("yes ")
    assert loop_start("The year was 1900.") is None
    assert loop_start("     " * 10) is None  # whitespace alone is left to the stop strings


@given(st.text(max_size=40), st.text(min_size=1, max_size=12), st.integers(8, 20))
def test_loop_start_keeps_one_copy(prefix, unit, times):
    text = prefix + unit * times
    start = loop_start(text)
    if unit.strip():
        assert start is not None and start <= len(prefix) + len(unit)
    if start is not None:
        assert text[:start].strip()
