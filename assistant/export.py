"""A chat as Markdown: questions, answers with their mode, and each answer's sources as footnotes
(`[^n]: path:line`), numbered through the whole document so footnotes stay unique. A memory answer that
was withdrawn and read again as text is quoted under the answer that replaced it, with the names that
made it withdrawn; one whose re-read was stopped before its first word stands, with those names. Terminal
escapes, control and bidi control characters are left out (ingest/printable.py), a question is one line,
and an answer's line that would define a footnote is escaped: the text cannot forge the file's structure."""

from __future__ import annotations

import re

from assistant.units import some_of
from engine.service.client import Chat, Citation
from ingest.printable import one_line, printable

_FOOTNOTE = re.compile(r"^( {0,3})\[\^", re.MULTILINE)  # a line that would define a footnote


def chat_markdown(chat: Chat) -> str:
    """chat: as `Client.chat` returns it (GET /v1/chats/{id}, docs/api.md)."""
    out = [f"# {one_line(chat.title)}", ""]
    notes: list[str] = []
    for message in chat.messages:
        if message.role == "user":
            out += [f"**You:** {one_line(message.text)}", ""]  # as it was typed
            continue
        withdrawn, kept = message.withdrawn, message.reread_stopped
        state = (", read again as text" if withdrawn else "") + (", stopped" if message.stopped else "")
        if kept:
            state = ", withdrawn, stopped before its re-read as text"
        head = f"**memory3** ({message.mode or 'memory'}{state}):"
        marks = ""
        for c in message.citations:
            notes.append(f"[^{len(notes) + 1}]: {c.path}:{c.line_start}{_span(c)}")
            marks += f"[^{len(notes)}]"
        out += [head, "", _FOOTNOTE.sub(r"\1\\[^", message.text) + (f" {marks}" if marks else ""), ""]
        if kept:
            out += [f"> It named {some_of(withdrawn.names)}, in none of its sources.", ""]
        elif withdrawn:
            said = " ".join(withdrawn.text.split())  # one quoted line
            names = some_of(withdrawn.names)
            out += [f"> Withdrawn, from memory: {said} (it named {names}, in none of its sources)", ""]
    return printable("\n".join(out + notes) + "\n")


def _span(citation: Citation) -> str:
    end = f"-{citation.line_end}" if citation.line_end != citation.line_start else ""
    page = f" (page {citation.page})" if citation.page else ""
    title = f" “{citation.front_matter['title']}”" if "title" in citation.front_matter else ""
    return end + page + title
