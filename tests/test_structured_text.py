"""Tables and front matter, found by users of similar tools: a 400-row CSV whose rows were cited without
their column names, and a note whose YAML front matter filled its first chunk and answered for it."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chunker import chunk_text
from ingest.parsers import parse
from ingest.parsers.markdown import parse_markdown
from ingest.parsers.tables import parse_csv, parse_tsv


def count_words(text: str) -> int:
    return len(text.split())


def csv_bytes(rows: list[list[str]], **fmt) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, **fmt).writerows(rows)
    return out.getvalue().encode()


# --- CSV and TSV ------------------------------------------------------------------------------------------


def test_every_chunk_of_a_400_row_csv_names_its_columns_and_cites_its_rows():
    rows = [["Invoice", "Customer", "Amount", "Paid on"]]
    rows += [
        [f"INV-{i:04}", f"Customer {i % 37}", f"{i * 7.5:.2f}", f"2024-03-{i % 28 + 1:02}"]
        for i in range(400)
    ]
    doc = parse_csv(csv_bytes(rows))
    chunks = chunk_text(doc, count_words, 128)
    assert len(chunks) > 10
    for chunk in chunks:
        for line in chunk.text.strip().splitlines()[1 if chunk.start == 0 else 0 :]:
            assert line.startswith("Invoice: INV-") and "| Amount: " in line and "| Paid on: 2024-03-" in line
        first_invoice = int(chunk.text.split("Invoice: INV-")[1][:4])
        assert chunk.line_start == (
            1 if chunk.start == 0 else first_invoice + 2
        )  # the row's line in the file
    assert doc.meta["table"] is True


def test_quoted_cells_line_breaks_blank_rows_and_cr_endings_keep_their_lines():
    data = b'Name,Note\r"Ann","two\rlines"\r\r"Bob","one, with a comma"\r'
    doc = parse_csv(data)
    assert doc.text.splitlines() == [
        "Name | Note",
        "Name: Ann | Note: two lines",
        "",
        "Name: Bob | Note: one, with a comma",
    ]
    assert doc.line_at(doc.text.index("Bob")) == 5  # Ann's row takes lines 2-3, a blank line 4
    assert doc.line_at(doc.text.index("Ann")) == 2


def test_the_delimiter_is_sniffed_and_tsv_uses_tabs(tmp_path):
    assert parse_csv(b"Name;Amount\nAnn;5\n").text.splitlines()[1] == "Name: Ann | Amount: 5"
    assert parse_tsv(b"Name\tAmount\nAnn, Jr.\t5\n").text.splitlines()[1] == "Name: Ann, Jr. | Amount: 5"
    (tmp_path / "t.tsv").write_bytes(b"a\tb\n1\t2\n")
    assert parse(tmp_path / "t.tsv").text.splitlines()[1] == "a: 1 | b: 2"


def test_a_table_without_a_header_numbers_its_columns_and_empty_cells_are_left_out():
    doc = parse_csv(b"1,2,3\n4,,6\n")
    assert doc.text.splitlines() == ["column 1: 1 | column 2: 2 | column 3: 3", "column 1: 4 | column 3: 6"]
    assert (
        parse_csv(b"Name,Amount\nAnn,5,extra\n").text.splitlines()[1]
        == "Name: Ann | Amount: 5 | column 3: extra"
    )


def test_a_csv_the_module_cannot_read_is_kept_as_text_with_a_warning():
    data = b"Name,Note\n" + b'Ann,"' + b"x" * (csv.field_size_limit() + 10) + b"\n"
    doc = parse_csv(data)
    assert doc.text == data.decode() and doc.line_map == ()
    assert len(doc.warnings) == 1 and doc.warnings[0].startswith("not read as a table (")


_cell = st.text(
    st.one_of(st.characters(exclude_categories=("Cs", "Cc")), st.sampled_from('\n\r,;"\t ')), max_size=12
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(_cell, min_size=3, max_size=3), min_size=1, max_size=30),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_each_row_is_cited_on_the_line_where_it_begins(rows, eol):
    header = [["Alpha", "Beta", "Gamma"]]
    data = csv_bytes(header + rows, lineterminator=eol)
    doc = parse_csv(data)
    starts, line = [], 1  # where csv.reader says each record begins, counting the file's own lines
    reader = csv.reader(io.StringIO(data.decode(), newline=""))
    for _ in reader:
        starts.append(line)
        line = reader.line_num + 1
    assert list(doc.line_map) == starts  # one line of text per record, blank ones included
    for chunk in chunk_text(doc, count_words, 16):
        if chunk.text.strip():
            assert chunk.line_end - chunk.line_start <= len(chunk.text)  # the bank format's bound holds


def test_a_delimiter_inside_a_quoted_cell_is_not_taken_for_the_files():
    """csv.Sniffer took `|` for the delimiter of a comma file whose only `|` was quoted (hypothesis found
    it), and the file was read as one column; a semicolon file with commas in its cells stays semicolons."""
    doc = parse_csv(b'Alpha,Beta,Gamma\n"""|",,\n')
    assert doc.text.splitlines() == ["Alpha | Beta | Gamma", 'Alpha: "|'] and doc.line_map == (1, 2)
    doc = parse_csv(b"Name;Amount\nAnn, Jr;5,5\nBob;6\n")
    assert doc.text.splitlines()[1:] == ["Name: Ann, Jr | Amount: 5,5", "Name: Bob | Amount: 6"]


def test_found_by_review_header_breaks_open_quotes_and_long_spans():
    """A header cell with a line break (Excel writes them) failed the file; a quote never closed swallowed
    the rest into one cell without a word; a cell of 50 line breaks made a chunk span more lines than it
    has characters, which the bank format refuses on import."""
    doc = parse_csv(b'Name,"Amount\n(USD)"\nAnn,5\nBob,6\n')
    assert doc.text.splitlines() == [
        "Name | Amount (USD)",
        "Name: Ann | Amount (USD): 5",
        "Name: Bob | Amount (USD): 6",
    ]
    assert doc.line_map == (1, 3, 4)
    broken = b'a,b\n1,"2\n3,4\n5,6\n'
    doc = parse_csv(broken)
    assert doc.text == broken.decode() and doc.warnings[0].startswith("not read as a table (")
    doc = parse_csv(b'name,notes\nann,"' + b"\n" * 50 + b'"\nbob,x\n')
    for chunk in chunk_text(doc, count_words, 128):
        assert chunk.line_end - chunk.line_start <= len(chunk.text)


# --- Markdown ---------------------------------------------------------------------------------------------

NOTE = """---
title: Trip to Italy
date: 2024-05-01
tags: [travel, italy]
draft: false
---
# Trip

We paid for the hotel on the second day.

| Day | City | Cost |
|-----|:----:|-----:|
| 1 | Rome | 120 |
| 2 | Florence | 95 |

```
| not | a table |
|---|---|
```
"""


def test_front_matter_is_metadata_not_text_and_lines_stay_the_files():
    doc = parse_markdown(NOTE.encode())
    assert "2024-05-01" not in doc.text and "title:" not in doc.text
    assert doc.meta["front_matter"] == {
        "title": "Trip to Italy",
        "date": "2024-05-01",
        "tags": ["travel", "italy"],
        "draft": False,
    }
    assert doc.text.startswith("# Trip\n")
    assert doc.line_at(doc.text.index("# Trip")) == 7
    assert doc.line_at(doc.text.index("We paid")) == 9
    json.dumps(doc.meta)  # the catalog keeps it as JSON


def test_markdown_tables_name_their_columns_and_code_is_left_alone():
    doc = parse_markdown(NOTE.encode())
    lines = doc.text.splitlines()
    assert "Day | City | Cost" in lines
    assert "Day: 2 | City: Florence | Cost: 95" in lines
    assert doc.line_at(doc.text.index("City: Florence")) == 14
    assert "| not | a table |" in lines and "|---|---|" in lines  # inside a code fence: as written


def test_toml_front_matter_and_a_file_without_any():
    doc = parse_markdown(b'+++\ntitle = "Hugo note"\n+++\nBody.\n')
    assert doc.meta["front_matter"] == {"title": "Hugo note"} and doc.text == "Body.\n"
    plain = parse_markdown(b"# Just a note\n\n---\n\nA rule above.\n")
    assert "front_matter" not in plain.meta and plain.text == "# Just a note\n\n---\n\nA rule above.\n"


def test_front_matter_that_is_not_valid_stays_in_the_text_with_a_warning():
    for block, reason in (
        (b"---\ntitle: [unclosed\n---\nBody.\n", "front matter not read ("),
        (b"---\n- a list\n- not a mapping\n---\nBody.\n", "front matter not read (not a mapping"),
        (b"---\na: &x [1, 2]\nb: [*x, *x]\n---\nBody.\n", "front matter not read (YAML aliases"),
    ):
        doc = parse_markdown(block)
        assert doc.text == block.decode() and "front_matter" not in doc.meta
        assert len(doc.warnings) == 1 and doc.warnings[0].startswith(reason), doc.warnings


def test_found_by_review_hostile_front_matter_and_tables():
    """Undecodable bytes in front matter made citations unencodable as JSON; YAML nested 3,000 deep failed
    the whole note; a table delimiter check took quadratic time on a long line of spaces."""
    note = parse_markdown('---\ntitle: "Budget \udce9 2024"\n---\nBody.\n'.encode("utf-8", "surrogateescape"))
    json.dumps(note.meta, ensure_ascii=False).encode("utf-8")  # no lone surrogate left
    deep = parse_markdown(b"---\na: " + b"[" * 3000 + b"]" * 3000 + b"\n---\nBody.\n")
    assert deep.text.endswith("Body.\n") and deep.warnings[0].startswith("front matter not read (")
    wide = parse_markdown(b"| a |\n" + b" " * 200_000 + b"-x\n")  # returns at once (it took hours)
    assert wide.text.startswith("| a |")
