"""Tables as rows that carry their column names: CSV and TSV files, and the tables of Markdown notes.

A row cut off from its header is a row of values nobody can read (a 400-row CSV put its header in 1 chunk
of 109; rows were cited without their column names and the answer was wrong). So each row is written
`Name: Ann | Amount: 5`: every chunk of a table, wherever it is cut, says what its values are. Each row is
one line of the text, mapped to the file's line where the row begins, so a citation shows the row's line.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Sequence

from ingest.document import LINE_BREAK, ParsedText
from ingest.parsers.text import decode_text

CELL_SEPARATOR = " | "
_DELIMITERS = ",;\t|"
_SNIFF_CHARS = 64 * 1024
_NUMBER = re.compile(r"[-+]?[\d.,]+%?")
_BREAK = re.compile(LINE_BREAK)


def parse_csv(data: bytes) -> ParsedText:
    return _parse_table(data, None)


def parse_tsv(data: bytes) -> ParsedText:
    return _parse_table(data, "\t")


def _parse_table(data: bytes, delimiter: str | None) -> ParsedText:
    """Rows read by the standard `csv` module (quoted fields, line breaks inside them, the delimiter
    sniffed from `,;<tab>|` unless given). A file `csv` cannot read (a quote never closed, a field over the
    module's limit) is kept as plain text, with a warning: nothing is lost."""
    decoded = decode_text(data)
    lines: list[tuple[int, str]] = []
    try:
        reader = csv.reader(
            io.StringIO(decoded.text, newline=""),
            delimiter=delimiter or _delimiter(decoded.text),
            strict=True,
        )
        header: list[str] | None = None
        first = 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                text = ""  # a blank row stays a blank line: a chunk's lines never outnumber its characters
            elif header is None:
                header = [] if all(_NUMBER.fullmatch(c.strip()) for c in row if c.strip()) else row
                text = CELL_SEPARATOR.join(_one_line(c) for c in row) if header else render_row([], row)
            else:
                text = render_row(header, row)
            lines.append((first, text))
            first = reader.line_num + 1
    except csv.Error as exc:
        warning = f"not read as a table ({exc}): kept as plain text"
        return ParsedText(decoded.text, meta=decoded.meta, warnings=(*decoded.warnings, warning))
    return ParsedText(
        "\n".join(text for _, text in lines),
        line_map=tuple(line for line, _ in lines),
        meta={**decoded.meta, "table": True},
        warnings=decoded.warnings,
    )


def _delimiter(text: str) -> str:
    """The candidate that splits the rows most consistently into two columns or more (the share of rows
    at the commonest width, then the width; ties to the earlier of `,;<tab>|`), read as `csv` reads them:
    quoting is the spreadsheets' (doubled quotes), so a `|` inside a quoted cell is no delimiter, which
    `csv.Sniffer` took it for. One column, or nothing to tell apart: commas."""
    sample = text[:_SNIFF_CHARS]
    best, best_score = ",", (0.0, 1)
    for candidate in _DELIMITERS:
        try:
            rows = [row for row in csv.reader(io.StringIO(sample, newline=""), delimiter=candidate) if row]
        except csv.Error:
            continue
        if len(text) > len(sample):
            rows = rows[:-1]  # the sample may cut its last row short
        if not rows:
            continue
        width, count = Counter(len(row) for row in rows).most_common(1)[0]
        if width > 1 and (score := (count / len(rows), width)) > best_score:
            best, best_score = candidate, score
    return best


def render_row(header: Sequence[str], row: Sequence[str]) -> str:
    """One row as `name: value` pairs (empty cells left out); a cell past the header's, or under an empty
    header cell, is named by its column's number. Each line break inside a cell becomes a space."""
    names = [_one_line(name) or f"column {i + 1}" for i, name in enumerate(header)]
    names += [f"column {i + 1}" for i in range(len(names), len(row))]
    return CELL_SEPARATOR.join(
        f"{name}: {_one_line(value)}" for name, value in zip(names, row, strict=False) if value.strip()
    )


def _one_line(cell: str) -> str:
    return _BREAK.sub(" ", cell.strip())
