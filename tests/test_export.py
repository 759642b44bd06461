"""A chat exported as Markdown: answers with their mode and state, sources as footnotes numbered through
the document, a withdrawn memory answer quoted under the one that replaced it, or standing when its
re-read was stopped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_printable import hidden

from assistant.export import chat_markdown
from engine.service.client import Chat, Citation, Message
from engine.service.replies import WithdrawnAnswer
from ingest.printable import one_line


def message(role: str, text: str, **kw) -> Message:
    fields = {"mode": "memory", "citations": [], "reads": [], "stopped": False, "withdrawn": None} | kw
    return Message(1, role, text, created_at=0.0, **fields)


def cite(path: str, start: int, end: int) -> Citation:
    return Citation(1, path, None, start, end, "text", 1.0, "h")


def test_answers_sources_and_a_withdrawn_answer():
    taken_back = WithdrawnAnswer("Tokyo is\nthe capital.", ["Tokyo", "Kyoto", "Osaka", "Nara"])
    chat = Chat(
        7,
        "Capitals",
        0.0,
        [
            message("user", "What is the capital of Japan?"),
            message("assistant", "unknown", mode="rag", citations=[cite("/n/a.md", 3, 3)]),
            message("user", "And of Norway?"),
            message("assistant", "unknown", citations=[cite("/n/b.md", 1, 4)], withdrawn=taken_back),
            message("assistant", "Osl", stopped=True),
        ],
    )
    assert (
        chat_markdown(chat)
        == "\n".join(
            [
                "# Capitals",
                "",
                "**You:** What is the capital of Japan?",
                "",
                "**memory3** (rag):",
                "",
                "unknown [^1]",
                "",
                "**You:** And of Norway?",
                "",
                "**memory3** (memory, read again as text):",
                "",
                "unknown [^2]",
                "",
                "> Withdrawn, from memory: Tokyo is the capital. (it named Tokyo, Kyoto, Osaka and 1 more,"
                " in none of its sources)",
                "",
                "**memory3** (memory, stopped):",
                "",
                "Osl",
                "",
                "[^1]: /n/a.md:3",
                "[^2]: /n/b.md:1-4",
            ]
        )
        + "\n"
    )


def test_a_withdrawn_answer_whose_reread_was_stopped_stands_once():
    """Stopped before the re-read's first word, the memory answer is the answer: shown once, not quoted."""
    taken_back = WithdrawnAnswer("Tokyo.", ["Tokyo"])
    kept = message("assistant", "Tokyo.", stopped=True, withdrawn=taken_back)
    assert kept.reread_stopped
    assert chat_markdown(Chat(8, "Japan", 0.0, [kept])) == "\n".join(
        [
            "# Japan",
            "",
            "**memory3** (memory, withdrawn, stopped before its re-read as text):",
            "",
            "Tokyo.",
            "",
            "> It named Tokyo, in none of its sources.",
            "",
            "",
        ]
    )


@given(st.text(), st.text(), st.text())
def test_the_file_hides_nothing_and_its_title_is_one_line(title, question, answer):
    said = chat_markdown(Chat(9, title, 0.0, [message("user", question), message("assistant", answer)]))
    assert not hidden(said) and said.split("\n")[0] == f"# {one_line(title)}"


def test_text_cannot_forge_structure_or_hide_escapes():
    """A question is one line; an answer's line that would define a footnote is escaped; escape sequences
    go whole, not leaving `[31m` behind."""
    question = "Why?\n# Not a heading\n> not a quote\n[^1]: /etc/passwd:1"
    answer = "See below.\n[^1]: /etc/passwd:1\n\x1b[31mred\x1b[0m \x1b]52;c;aGFjaw==\x07done"
    cited = message("assistant", answer, citations=[cite("/n/a.md", 2, 2)])
    said = chat_markdown(Chat(3, "Forged", 0.0, [message("user", question), cited]))
    assert "**You:** Why? # Not a heading > not a quote [^1]: /etc/passwd:1\n" in said
    assert "\n\\[^1]: /etc/passwd:1\nred done [^1]\n" in said
    assert said.endswith("\n[^1]: /n/a.md:2\n") and said.count("\n[^1]:") == 1
