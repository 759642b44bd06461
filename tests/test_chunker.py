"""The chunker's contract as properties: a partition of the text, within budget, mapped back, and stable."""

from __future__ import annotations

import hashlib
import random
import time
from itertools import pairwise

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bench.chunk_stability import measure_edit_stability
from ingest.chunker import (
    _PARAGRAPH,
    _TITLE,
    MAX_CHARS_PER_TOKEN,
    SHORT_SHARE,
    Chunk,
    chunk_text,
    opens_chunk,
)
from ingest.document import ParsedText


def count_words(text: str) -> int:
    """A fast stand-in for the model's count: whitespace costs nothing, a huge word costs one."""
    return len(text.split())


_words = st.text("abcdéfg日本😀", min_size=1, max_size=12)
_long_words = st.text("xyz", min_size=40, max_size=400)
_separators = st.sampled_from(
    [" ", " ", " ", "  ", "\n", "\n\n", "\n \n\t", ". ", "! ", "? ", "\r\n", "\r", "\r\r", "。"]
)
texts = st.lists(st.one_of(_words, _words, _separators, _long_words), max_size=120).map("".join)
paged = texts.flatmap(
    lambda t: st.lists(st.integers(0, len(t)), max_size=4).map(lambda cuts: ParsedText(t, (0, *sorted(cuts))))
)


def check_contract(doc: ParsedText, chunks: list[Chunk], count, budget: int) -> None:
    text = doc.text
    if not text.strip():
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.end == after.start
    for i, chunk in enumerate(chunks):
        assert chunk.start < chunk.end and chunk.text == text[chunk.start : chunk.end]
        assert count(chunk.text) <= budget
        assert chunk.hash == hashlib.sha256(chunk.text.encode()).hexdigest()
        if not chunk.text.strip():
            assert whitespace_over_budget(text, chunk, count, budget)
            for other in (*chunks[max(0, i - 1) : i], *chunks[i + 1 : i + 2]):  # it could join neither
                joined = text[min(chunk.start, other.start) : max(chunk.end, other.end)]
                assert over_budget(joined, count, budget), (chunk, other)
            continue
        first = chunk.start + len(chunk.text) - len(chunk.text.lstrip())
        last = chunk.start + len(chunk.text.rstrip()) - 1
        assert chunk.line_start == editor_line(text, first)
        assert chunk.line_end == editor_line(text, last)
        assert chunk.page == (sum(start <= first for start in doc.page_starts) or None)


def editor_line(text: str, offset: int) -> int:
    """The line an editor shows `offset` on: every CRLF, CR or LF before it ends one line."""
    return text[:offset].replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1


def whitespace_over_budget(text: str, chunk: Chunk, count, budget: int) -> bool:
    """Whether the whitespace run holding a chunk is over the budget with the character it goes with: the one
    before it (and the text's leading whitespace too, where that is the first character that is not space),
    or for the text's leading whitespace the one after it."""
    run_start = len(text[: chunk.start].rstrip())
    run_end = len(text) - len(text[chunk.start :].lstrip())
    if run_start == 0:
        return over_budget(text[: run_end + 1], count, budget)
    before = run_start - 1 if text[: run_start - 1].strip() else 0
    return over_budget(text[before:run_end], count, budget)


def over_budget(span: str, count, budget: int) -> bool:
    return count(span) > budget or len(span) > budget * MAX_CHARS_PER_TOKEN


@settings(max_examples=400, deadline=None)
@given(paged, st.integers(1, 40))
def test_contract_with_a_word_counter(doc, budget):
    chunks = chunk_text(doc, count_words, budget)
    check_contract(doc, chunks, count_words, budget)
    check_paragraphs(doc.text, chunks, count_words, budget)
    assert chunk_text(doc, count_words, budget) == chunks  # deterministic


def check_paragraphs(text: str, chunks: list[Chunk], count, budget: int) -> None:
    """A chunk holding a fact (a paragraph of budget // SHORT_SHARE tokens or more, or one cut in pieces)
    does not go on into the next fact, which starts at the short paragraphs leading into it (back to a
    heading): each would hold two facts of a note."""
    short = budget // SHORT_SHARE
    first = len(text) - len(text.lstrip())
    starts = [first, *(m.end() for m in _PARAGRAPH.finditer(text, first) if m.end() < len(text))]
    spans = list(pairwise([*starts, len(text)]))

    def is_fact(start: int, end: int) -> bool:
        body = text[start:end].strip()
        if count(text[start:end]) > budget or end - start > budget * 32:
            return True  # cut in pieces
        return count(body) >= short and not _TITLE.fullmatch(body)

    facts = [is_fact(*span) for span in spans]
    fact_starts, lead = set(), 0
    for k, fact in enumerate(facts):
        if _TITLE.fullmatch(text[slice(*spans[k])].strip()):
            lead = k  # the short paragraphs before a heading close the section before it
        if fact:
            fact_starts.add(spans[lead][0])
            lead = k + 1
    for chunk in chunks:
        for at in sorted(a for a in fact_starts if chunk.start < a < chunk.end):
            before = [
                k
                for k, (start, end) in enumerate(spans)
                if start < at and text[max(start, chunk.start) : min(end, at)].strip()
            ]
            assert not any(facts[k] for k in before), (chunk.text, at)


@settings(max_examples=200, deadline=None)
@given(paged, st.sampled_from([8, 32, 128]))
@example(ParsedText(" a \r\n \n \n\t", (0,)), 8)  # leading whitespace was cut off on its own
@example(ParsedText("\n\r\n. \n \n\t", (0,)), 8)  # and here all of it, though it fits with the "."
@example(ParsedText("?\n\t\r\n \n\t 。", (0,)), 8)  # a blank piece opens a chunk: " " was left alone
@example(ParsedText("\n \n\tb\n \n\t", (0,)), 8)  # "b" with either run fits, with both does not
def test_contract_with_the_model_tokenizer(count_tokens, doc, budget):
    check_contract(doc, chunk_text(doc, count_tokens, budget), count_tokens, budget)


def test_whitespace_gives_no_chunks(count_tokens):
    assert chunk_text(ParsedText(""), count_tokens) == []
    assert chunk_text(ParsedText(" \n\n\t \r\n"), count_tokens) == []


def test_cuts_prefer_paragraphs_then_sentences():
    paragraphs = [" ".join(["w"] * n) for n in (5, 7, 6, 3, 8, 4)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(ParsedText(text), count_words, 10)
    assert all(c.text.endswith("\n\n") for c in chunks[:-1])  # every paragraph fits: cuts only between them
    sentences = "First one here. Then a second sentence! And a third? Yes, four sentences in all."
    chunks = chunk_text(ParsedText(sentences), count_words, 5)
    assert [c.text for c in chunks] == [
        "First one here. ",
        "Then a second sentence! ",
        "And a third? ",
        "Yes, four sentences in all.",
    ]


def test_a_paragraph_of_substance_is_a_chunk_of_its_own(count_tokens):
    """A note of one-paragraph facts: each fact its own chunk, though two fit the budget together (the
    small model asked about one answered with the other's value); the title goes with the first fact; short
    paragraphs (lines of a dialogue) still pack together."""
    facts = [
        "The Griadipou Bridge crosses the river Aldwen. It was opened in the year 1696.",
        "Vevi Works is a company that makes barrels. Its headquarters are in the city of Stovirholm.",
        "The ship Morning Quill was captained by Edda Thorsby on her first voyage to the south.",
    ]
    note = "# Gazetteer notes, part 1\n\n" + "\n\n".join(facts) + "\n"
    assert count_tokens(note) <= 128  # all of it would fit one chunk
    chunks = chunk_text(ParsedText(note), count_tokens)
    assert [c.text.strip() for c in chunks] == ["# Gazetteer notes, part 1\n\n" + facts[0], *facts[1:]]
    assert [(c.line_start, c.line_end) for c in chunks] == [(1, 3), (5, 5), (7, 7)]
    for eol in ("\r\n", "\r"):  # the same cuts whatever ends the lines
        again = chunk_text(ParsedText(note.replace("\n", eol)), count_tokens)
        assert [c.text.strip().replace(eol, "\n") for c in again] == [c.text.strip() for c in chunks]
    dialogue = "\n\n".join(f"{name}: Yes." for name in ("Ann", "Bob") * 10)
    assert len(chunk_text(ParsedText(dialogue), count_tokens)) == 1
    # A label (or a question, a heading) goes with the fact after it, even where the fact's own words make
    # it open a chunk (one piece in ANCHOR_EVERY); a long paragraph's tail is not packed with one.
    anchored = next(
        f"The pond in the garden holds {n} goldfish, and a grey heron visits it every morning."
        for n in range(99)
        if opens_chunk(
            f"The pond in the garden holds {n} goldfish, and a grey heron visits it every morning."
        )
    )
    assert len(chunk_text(ParsedText(f"# Garden log\n\n{anchored}\n"), count_tokens)) == 1
    assert len(chunk_text(ParsedText(f"# Garden log\n\n{anchored.split(',')[0]}.\n"), count_tokens)) == 1
    # Short paragraphs before a heading close the section before it, not lead into the next one.
    sections = f"{facts[0]}\n\nSee also the ferry.\n\n## Companies\n\n{facts[1]}\n"
    cut = [c.text.strip() for c in chunk_text(ParsedText(sections), count_tokens)]
    assert cut == [f"{facts[0]}\n\nSee also the ferry.", f"## Companies\n\n{facts[1]}"]
    labelled = (
        "Population\n\nThe city of Aldwen has about three thousand people, most of whom work at the harbour."
        "\n\nArea\n\nThe city covers five square kilometres of land on the north bank of the river Aldwen.\n"
    )
    cut = [c.text.strip() for c in chunk_text(ParsedText(labelled), count_tokens)]
    assert [c.split("\n\n")[0] for c in cut] == ["Population", "Area"]
    long = " ".join(f"Sentence {i} of the first paragraph has ten words." for i in range(15))
    chunks = chunk_text(ParsedText(long + "\n\n" + facts[1]), count_words)
    assert chunks[-1].text == facts[1] and len(long.split()) > 128
    assert chunks[-2].text.endswith("14 of the first paragraph has ten words.\n\n")


def test_a_note_that_fits_is_cut_between_its_facts_only(count_tokens):
    """Headings and hash boundaries cut only texts over the budget, as before chunker 3: a short note's code
    block, FAQ or titles stay whole; a heading with its text under it is a fact like any paragraph."""
    code = (
        "## Backup\n\n# where to\nDEST=/mnt/backup\n\n# what\nSRC=$HOME/docs\n\n# go\nrsync -a $SRC $DEST\n"
    )
    faq = "Q: Is there parking?\n\nA: Yes, behind it.\n\nQ: Is there wifi?\n\nA: Ask the staff.\n"
    fact = (
        "The museum opens at nine in the morning and closes at six in the evening, every day except Monday."
    )
    for note in (code, faq, f"# Project Apollo\n\n## Budget\n\n{fact}\n"):
        assert len(chunk_text(ParsedText(note), count_tokens)) == 1, note
    other = "The cafe on the second floor serves lunch from noon to three, with a view over the old harbour."
    cut = chunk_text(ParsedText(f"## Opening hours\n{fact}\n\n{other}\n"), count_tokens)
    assert [c.text.strip() for c in cut] == [f"## Opening hours\n{fact}", other]


def test_a_hash_boundary_does_not_part_a_fact_from_its_lead_in():
    """In a text over the budget, a short paragraph that opens a chunk by its hash, between a title and the
    fact it leads into, stays with them."""
    line = next(f"Updated in May {n}." for n in range(99) if opens_chunk(f"Updated in May {n}."))
    lead = ["## Visiting hours", " ".join(["checked"] * 10), " ".join(["noted"] * 10), line]
    fact = " ".join(["open"] * 20)
    before = "\n\n".join(" ".join([f"w{i}"] * 30) for i in range(6))  # the text is over the budget
    chunks = chunk_text(ParsedText(before + "\n\n" + "\n\n".join([*lead, fact])), count_words)
    assert chunks[-1].text == "\n\n".join([*lead, fact])


def test_lines_ending_in_cr_or_crlf_are_cut_and_cited_as_with_lf():
    """Old Mac files and some spreadsheet exports end lines in CR alone; Windows in CRLF: the same note is
    cut in the same places and cited on the same lines as with LF (each chunk was cited as line 1-1)."""
    lines = [f"Line {i} of the note says {i}" for i in range(1, 13)]
    cut = {}
    for eol in ("\n", "\r", "\r\n"):
        paragraphs = [eol.join(lines[i : i + 3]) for i in range(0, 12, 3)]  # 3 lines each, a blank between
        chunks = chunk_text(ParsedText((eol * 2).join(paragraphs)), count_words, 20)
        cut[eol] = [(c.text.strip().replace(eol, "\n"), c.line_start, c.line_end) for c in chunks]
    assert cut["\r"] == cut["\r\n"] == cut["\n"]
    assert _PARAGRAPH.search("one\r\ntwo") is None  # CRLF is one break, not CR then LF: not a paragraph
    assert cut["\n"][-1][2] == 15 and len(cut["\n"]) > 1


def test_a_huge_word_is_cut_quickly(count_tokens):
    rnd = random.Random(0)
    line = "".join(
        rnd.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/", k=1_000_000)
    )
    began = time.perf_counter()
    chunks = chunk_text(ParsedText(line + "\n"), count_tokens)
    elapsed = time.perf_counter() - began
    assert elapsed < 10, elapsed
    assert "".join(c.text for c in chunks) == line + "\n"
    sample = chunks[: len(chunks) - 1 : 50]
    assert all(112 <= count_tokens(c.text) <= 128 for c in sample)  # near full, not crumbs


def test_a_huge_word_without_a_model_count_still_respects_the_char_cap():
    chunks = chunk_text(ParsedText("y" * 100_000), count_words, 4)
    assert max(len(c.text) for c in chunks) <= 4 * MAX_CHARS_PER_TOKEN


_paragraph = st.lists(
    st.sampled_from(["alpha", "beta", "gamma", "delta", "eps", "zeta"]), min_size=1, max_size=6
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_paragraph.map(" ".join), min_size=2, max_size=40), st.data())
def test_an_edit_keeps_the_chunks_far_from_it(paragraphs, data):
    """Chunks that end before the edited paragraph are kept as they were; so is everything from the first
    paragraph after it that opens a chunk by its content (shifted by the change in length). Paragraphs are
    the pieces here: each fits the budget, and the whole text does not."""
    k = data.draw(st.integers(0, len(paragraphs) - 1))
    edited = [*paragraphs[:k], data.draw(_paragraph.map(" ".join)), *paragraphs[k + 1 :]]
    old_text, new_text = "\n\n".join(paragraphs), "\n\n".join(edited)
    assume(count_words(old_text) > 8 and count_words(new_text) > 8)
    old = chunk_text(ParsedText(old_text), count_words, 8)
    new = {(c.start, c.text) for c in chunk_text(ParsedText(new_text), count_words, 8)}
    edit_at = len("\n\n".join(paragraphs[:k]))
    kept_before = [c for c in old if c.end < edit_at]
    assert all((c.start, c.text) in new for c in kept_before)
    anchor = next((i for i in range(k + 1, len(paragraphs)) if opens_chunk(paragraphs[i])), None)
    if anchor is not None:
        resync_at = len("\n\n".join(paragraphs[:anchor])) + 2
        shift = len(new_text) - len(old_text)
        assert all((c.start + shift, c.text) in new for c in old if c.start >= resync_at)


def test_an_edit_does_not_move_the_cuts_of_a_long_line_far_below():
    """A long line with no sentence ends is cut between words where the budget ends: those cuts once
    depended on the lines before it (a speed hint carried over), so one word edited far above rewrote
    every chunk of the line."""
    rnd = random.Random(3)
    vocabulary = [
        "".join(rnd.choices(["ka", "lo", "mi", "ber", "gan", "dol", "ion"], k=rnd.randint(1, 4)))
        for _ in range(500)
    ]
    first, far = rnd.choices(vocabulary, k=400), " ".join(rnd.choices(vocabulary, k=1500))
    middle = "\n\n".join(" ".join(rnd.choices(vocabulary, k=10)) + "." for _ in range(30))
    before = {
        c.text for c in chunk_text(ParsedText(f"{' '.join(first)}\n\n{middle}\n\n{far}\n"), count_words)
    }
    for at in range(0, 400, 40):
        edited = [*first[:at], "supercalifragilisticexpialidocious", *first[at + 1 :]]
        after = {
            c.text for c in chunk_text(ParsedText(f"{' '.join(edited)}\n\n{middle}\n\n{far}\n"), count_words)
        }
        assert {t for t in before if t.strip() in far} <= after


def test_editing_a_paragraph_of_100_pages_rewrites_few_chunks(count_tokens):
    result = measure_edit_stability(count_tokens)
    assert result["pages"] == 100 and result["chunks_total"] > 500
    assert 1 <= result["chunks_changed"] + result["chunks_added"] <= 4


def test_edits_anywhere_rewrite_few_chunks_on_average():
    rewritten = []
    for paragraph in range(0, 2000, 97):
        result = measure_edit_stability(count_words, paragraph)
        rewritten.append(result["chunks_changed"] + result["chunks_added"])
    assert max(rewritten) <= 6 and sum(rewritten) / len(rewritten) <= 2.5
