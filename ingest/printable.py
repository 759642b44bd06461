"""Text as it is shown and saved in a file: without the characters that hide or disguise it. Kept free of
heavy imports: the app and the `m3` client use it too."""

from __future__ import annotations

import re

# terminal escape sequences whole (CSI: colours, cursor moves; OSC: window titles, clipboard writes), then
# any other C0 or C1 control character but tab and newline (a CR of CRLF too), and the bidi embeddings,
# overrides and isolates that make a text show as another
_UNSHOWN = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
    """`text` without escape sequences, control characters (but tab and newline) and bidi controls."""
    return _UNSHOWN.sub("", text)


def one_line(text: str) -> str:
    """`printable(text)` on one line: each run of whitespace, line breaks included, one space; stripped."""
    return " ".join(printable(text).split())
