"""Saved chats in the catalog: listed newest first, searched literally ignoring case, a match shown in its
context, and no message saved into a chat deleted meanwhile."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ingest.catalog import Catalog
from ingest.chats import Chats, snippet
from ingest.errors import NotFoundError


@pytest.fixture
def chats(catalog: Catalog) -> Chats:
    return Chats(catalog)


def chat(chats: Chats, *texts: str) -> int:
    chat_id = chats.new(texts[0][:80])
    for i, text in enumerate(texts):
        chats.add_message(chat_id, "user" if i % 2 == 0 else "assistant", text, "rag")
    return chat_id


def test_search_takes_the_text_literally_and_ignores_case(chats):
    sale = chat(chats, "Is 100% of the STOCK_ITEM sold?", "Yes.")
    near = chat(chats, "Is 100 of the stock item sold?", "No.")  # LIKE '%100%_item%' would match it
    greek = chat(chats, "Where is ΣΟΦΊΑ?", "In Athens.")
    assert [c.id for c in chats.search("100%")] == [sale]
    assert [c.id for c in chats.search("stock_item")] == [sale]
    assert [c.id for c in chats.search("σοφία")] == [greek]
    assert [c.id for c in chats.search("ATHENS")] == [greek]
    assert {c.id for c in chats.search("100")} == {sale, near}
    assert [c.id for c in chats.search()] == [greek, near, sale]  # newest first
    assert [c.id for c in chats.search(limit=2)] == [greek, near]


def test_a_match_is_shown_around_it_on_one_line():
    text = "word " * 40 + "the Blue Vault\nis here " + "more " * 40
    shown = snippet(text, "blue vault")
    assert "Blue Vault is here" in shown and shown.startswith("…") and shown.endswith("…")
    assert 70 <= len(shown) <= 82 and "\n" not in shown
    assert snippet("Short text.", "text") == "Short text."
    assert snippet("x" * 200, "x" * 150) == "x" * 150 + "…"  # a match longer than the width is whole


def test_a_chat_deleted_meanwhile_takes_no_message(chats):
    chat_id = chat(chats, "Question?")
    chats.delete(chat_id)
    with pytest.raises(NotFoundError, match=f"There is no chat {chat_id}."):
        chats.add_message(chat_id, "assistant", "Answer.")
    with pytest.raises(NotFoundError):
        chats.delete(chat_id)
    with pytest.raises(NotFoundError):
        chats.rename(chat_id, "x")


def test_a_withdrawn_answer_is_kept_with_what_was_withdrawn(chats):
    chat_id = chats.new("capital")
    chats.add_message(chat_id, "user", "What is the capital of Japan?", "memory")
    taken_back = {"text": "Tokyo", "names": ["Tokyo"]}
    chats.add_message(chat_id, "assistant", "unknown", "memory", withdrawn=json.dumps(taken_back))
    question, answer = chats.messages(chat_id)
    assert question.withdrawn is None and answer.text == "unknown"
    assert json.loads(answer.withdrawn) == taken_back  # the service reads it (routes_chats.py)


def test_another_constraint_failing_is_not_called_a_missing_chat(chats, catalog):
    chat_id = chat(chats, "Question?")
    with catalog.atomic():  # as a damaged or hand-edited catalog might hold
        catalog.db.execute(
            "CREATE TRIGGER no_answers BEFORE INSERT ON messages WHEN NEW.role = 'assistant'"
            " BEGIN SELECT RAISE(ABORT, 'constraint failed: no answers'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="no answers"):
        chats.add_message(chat_id, "assistant", "Answer.")
