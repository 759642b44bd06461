"""Our one-call tokenizer gives exactly llama-cpp-python's tokens, for any text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(model_path) -> Tokenizer:
    return Tokenizer(model_path)


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=300), bos=st.booleans(), special=st.booleans())
def test_encode_equals_the_wrappers_tokenize(tok, text, bos, special):
    expected = list(tok._llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special))
    assert tok.encode(text, bos=bos, special=special) == expected


def test_long_and_special_texts(tok):
    for text in ["x" * 20000, "<start_of_turn>user\nhi<end_of_turn>", "\u2581" * 50, "\x00\x01 \ufffd"]:
        for special in (False, True):
            assert tok.encode(text, special=special) == list(
                tok._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            )
