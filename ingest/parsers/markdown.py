"""Markdown notes: front matter kept as the note's metadata, out of its text; tables as rows that carry
their column names (ingest/parsers/tables.py); everything else exactly as written, line for line.

A 12-line YAML block at the top of a note filled most of its first chunk, and an answer came from its
date: the block (YAML between `---` lines, or TOML between `+++` lines, as Jekyll, Hugo and Obsidian write
it) goes to `meta["front_matter"]` instead, where a citation can show the title.
"""

from __future__ import annotations

import json
import re
import tomllib

import yaml

from ingest.document import LINE_BREAK, ParsedText
from ingest.parsers.tables import CELL_SEPARATOR, render_row
from ingest.parsers.text import decode_text

_FENCES = {"---": ("---", "..."), "+++": ("+++",)}
MAX_FRONT_MATTER_LINES = 200  # a block that does not close by then is not front matter
_TABLE_DELIMITER = re.compile(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*")
_CODE_FENCE = re.compile(r"\s{0,3}(```|~~~)")
_CELL_BORDER = re.compile(r"(?<!\\)\|")
_DELIMITER_CHARS = frozenset("|:- \t")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_markdown(data: bytes) -> ParsedText:
    decoded = decode_text(data)
    lines = re.split(LINE_BREAK, decoded.text)
    front, body, warnings = _front_matter(lines)
    numbered = _with_tables(list(enumerate(lines, start=1))[body:])
    meta = {**decoded.meta, **({"front_matter": front} if front else {})}
    return ParsedText(
        "\n".join(text for _, text in numbered),
        line_map=tuple(line for line, _ in numbered),
        meta=meta,
        warnings=(*decoded.warnings, *warnings),
    )


def _front_matter(lines: list[str]) -> tuple[dict, int, tuple[str, ...]]:
    """(the front matter as JSON-safe values, the index of the first body line, warnings). A block that is
    not a mapping in valid YAML (or TOML) stays in the text, with a warning."""
    closers = _FENCES.get(lines[0].rstrip()) if lines else None
    if closers is None:
        return {}, 0, ()
    end = next(
        (i for i, line in enumerate(lines[1:MAX_FRONT_MATTER_LINES], 1) if line.rstrip() in closers), None
    )
    if end is None:
        return {}, 0, ()
    block = "\n".join(lines[1:end])
    try:
        values = tomllib.loads(block) if closers == ("+++",) else _yaml_mapping(block)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {}, 0, (f"front matter not read ({reason}): kept in the text",)
    # JSON-safe, and lone surrogates (undecodable bytes) made U+FFFD, as in the text: a citation is JSON
    safe = _SURROGATE.sub("\ufffd", json.dumps(values, default=str, skipkeys=True, ensure_ascii=False))
    return json.loads(safe), end + 1, ()


def _yaml_mapping(block: str) -> dict:
    """A YAML mapping, by the safe loader; aliases are refused (a few nested ones expand to gigabytes when
    the values are written out: the "billion laughs")."""
    if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(block, Loader=yaml.SafeLoader)):
        raise ValueError("YAML aliases are not accepted")
    values = yaml.safe_load(block)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError("not a mapping of names to values")
    return values


def _with_tables(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The lines with each GitHub-style table (a header row, a delimiter row `|---|---|`, rows) written as
    its header's names, then one `name: value` line per row; the delimiter row is left out. Tables inside
    fenced code blocks are code, not tables."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line, text = lines[i]
        if (opened := _CODE_FENCE.match(text)) is not None and (fence is None or opened.group(1) == fence):
            fence = opened.group(1) if fence is None else None
        header = _cells(text)
        if fence is None and i + 1 < len(lines) and _is_delimiter(lines[i + 1][1], len(header)):
            out.append((line, CELL_SEPARATOR.join(header)))
            i += 2
            while i < len(lines) and "|" in lines[i][1] and lines[i][1].strip():
                out.append((lines[i][0], render_row(header, _cells(lines[i][1]))))
                i += 1
            continue
        out.append((line, text))
        i += 1
    return out


def _cells(row: str) -> list[str]:
    inner = row.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip().replace("\\|", "|") for cell in _CELL_BORDER.split(inner)] if "|" in row else []


def _is_delimiter(row: str, columns: int) -> bool:
    """A GFM delimiter row of `columns` cells. Checked by its characters first: the pattern alone takes
    quadratic time on a long line of spaces."""
    row = row.strip()
    if columns == 0 or "-" not in row or not set(row) <= _DELIMITER_CHARS:
        return False
    return _TABLE_DELIMITER.fullmatch(row) is not None and len(_cells(row)) == columns
