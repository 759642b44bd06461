"""Text as shown and saved: no escape sequence, control or bidi control character gets through, and a title
is one line."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from ingest.printable import one_line, printable

BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def hidden(text: str) -> list[str]:
    return [c for c in text if (unicodedata.category(c) == "Cc" and c not in "\n\t") or c in BIDI_CONTROLS]


@given(st.text())
def test_nothing_hidden_gets_through_and_the_rest_is_kept(text):
    shown = printable(text)
    assert not hidden(shown) and printable(shown) == shown
    if "\x1b" not in text:  # without escape sequences only the hidden characters themselves go
        assert shown == "".join(c for c in text if not hidden(c))


@given(st.text())
def test_a_title_is_one_line(text):
    title = one_line(text)
    assert not hidden(title) and one_line(title) == title and title == title.strip()
    assert not [c for c in title if c.isspace() and c != " "] and "  " not in title


def test_escape_sequences_go_whole():
    assert printable("\x1b[31mred\x1b[0m \x1b]52;c;aGFjaw==\x07done \x1b]0;title\x1b\\") == "red done "
    assert one_line("a\u202egnp.exe\r\n\tb") == "agnp.exe b"
