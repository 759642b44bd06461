"""Prompt formats and where an answer stops."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.chat import stop_index
from engine.prompt import BASE, prompt_format


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
