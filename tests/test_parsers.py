"""Parsers on real files of every format, and on broken ones: text or ParseError, never another exception."""

from __future__ import annotations

import locale
import logging
import os
import random
import re
import unicodedata
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from malformed_files import (
    OPF,
    SHOW_FORM,
    SHOW_IMAGE,
    SHOW_INLINE_IMAGE,
    docx_bytes,
    eml_bytes,
    eml_message,
    encrypted_ooxml_bytes,
    encrypted_pdf_bytes,
    epub_bytes,
    image_pdf_bytes,
    mbox_bytes,
    odt_bytes,
    ole_bytes,
    pdf_bytes,
    pptx_bytes,
    reply_message,
    scanned_pdf_bytes,
    zip_bomb_bytes,
)

import ingest.document
import ingest.parsers.html
import ingest.parsers.mbox
from ingest.document import ParsedText
from ingest.errors import EncryptedDocumentError, ParseError, TooLargeError, UnsupportedFormatError
from ingest.parsers import SUPPORTED_SUFFIXES, is_supported, parse
from ingest.parsers.text import UNSURE, decode_text

PAGES = [["First page, first line.", "Second line (with parentheses)."], [], ["Third page here."]]


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- the document model ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(st.sampled_from("aé\u0301ﬁＴ²\n\r ½한\u1100\u1161"), max_size=12), min_size=1, max_size=5
    )
)
def test_normalised_text_keeps_its_pages_and_lines(pages):
    def pieces(doc: ParsedText) -> list[str]:
        bounds = [*doc.page_starts, len(doc.text)]
        return [doc.text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

    doc = ParsedText.from_pages(pages)
    norm = doc.normalized()
    assert len(norm.page_starts) == len(pages)
    bounds = [*norm.page_starts, len(norm.text)]
    parts = [norm.text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    originals = [
        doc.text[a:b] for a, b in zip(doc.page_starts, [*doc.page_starts[1:], len(doc.text)], strict=False)
    ]
    assert parts == [unicodedata.normalize("NFKC", p) for p in originals]
    assert [norm.line_at(s) for s in norm.page_starts] == [doc.line_at(s) for s in doc.page_starts]


NORMALISABLE = st.sampled_from("ae \n\u0301\u0327é²ﬁＴﷺ\u1100\u1161\u11a8한")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(NORMALISABLE, max_size=40), min_size=1, max_size=4), st.integers(0, 200))
def test_normalised_text_is_held_to_the_size_limit(pages, limit):
    """NFKC can make a text many times longer (U+FDFA is 18 characters): the limit holds for the normal form.
    It is built in pieces (here of 3 characters, cut as often as can be) that make the whole's normal form."""
    doc = ParsedText.from_pages(pages)
    whole = unicodedata.normalize("NFKC", doc.text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest.document, "MAX_DOCUMENT_CHARS", limit)
        patch.setattr(ingest.document, "_NFKC_PIECE", 3)
        if len(whole) > limit:
            with pytest.raises(TooLargeError, match="^text too large"):
                doc.normalized()
        else:
            assert doc.normalized().text == whole


def test_a_file_whose_normal_form_is_over_the_limit_fails_as_too_large(tmp_path, monkeypatch):
    """6 KB of U+FDFA is 2,000 characters, 36,000 once normalised: it fails as a file over the limit does."""
    monkeypatch.setattr(ingest.document, "MAX_DOCUMENT_CHARS", 10_000)
    path = write(tmp_path, "prayer.txt", "\ufdfa" * 2000)
    with pytest.raises(TooLargeError) as failure:
        parse(path)
    assert str(failure.value) == "text too large (0 M characters; the limit is 0 M characters)"
    monkeypatch.setattr(ingest.document, "MAX_DOCUMENT_CHARS", 36_000)
    assert parse(path).text == unicodedata.normalize("NFKC", "\ufdfa") * 2000


def test_line_and_page_of_an_offset():
    doc = ParsedText.from_pages(["a\nb", "", "c"])
    assert doc.text == "a\nb\n\n\n\nc" and doc.page_starts == (0, 5, 7)
    assert [doc.line_at(i) for i in range(len(doc.text))] == [1, 1, 2, 2, 3, 4, 5, 6]
    assert [doc.page_at(i) for i in (0, 3, 4, 5, 6, 7)] == [1, 1, 1, 2, 2, 3]
    assert ParsedText("x").page_at(0) is None


# --- text and source code -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, encoding",
    [
        ("Héllo wörld\nline 2 日本語\n", "utf-16"),
        ("Héllo wörld\nline 2 日本語\n", "utf-8-sig"),
        ("Ceci est un texte en français: le garçon a mangé une crème brûlée à midi. " * 3, "latin-1"),
        ("“Smart quotes” cost €5 — a naïve café. " * 3, "cp1252"),
        ("Это текст на русском языке, проверка кодировки.", "cp1251"),
        ("def f():\r\n    return 1\r\n", "ascii"),
    ],
)
def test_text_is_decoded_exactly(tmp_path, text, encoding):
    assert parse(write(tmp_path, "doc.txt", text.encode(encoding))).text == text


def test_lines_map_back_to_the_file(tmp_path):
    source = "import os\n\n\ndef main():\n    print(os.getcwd())\n"
    doc = parse(write(tmp_path, "main.py", source))
    assert doc.text == source and doc.page_starts == ()
    assert doc.line_at(source.index("print")) == 5


@pytest.mark.parametrize(
    "text", ["Straße 12", "Señor Muñoz paid 5€", "Le cœur a ses raisons. Éléphant à Noël.", "café"]
)
def test_a_short_windows_1252_file_reads_as_cp1252_and_says_it_guessed(tmp_path, text):
    """Found by users of similar tools: "Straße 12" came out as CJK (read as UTF-16), "Señor" as "Se±or"
    (cp437), and both were ok. People save in cp1252; a short text is ambiguous, so the guess is reported."""
    doc = parse(write(tmp_path, "note.txt", text.encode("cp1252")))
    assert doc.text == text
    assert doc.meta["encoding"] == "cp1252" and 0 < doc.meta["encoding_confidence"] <= 1
    if doc.meta["encoding_confidence"] < UNSURE:  # ambiguous: the warning says so, and with what
        (warning,) = doc.warnings
        sure = f"{doc.meta['encoding_confidence']:.0%} sure"
        assert warning.startswith(f"encoding guessed as cp1252 ({sure}): ambiguous, it reads as well in ")


TURKISH = (  # words, one space apart
    "bugün hava çok güzel dışarıda yürüyüş yapmak istiyorum şirketin yıllık raporu Çarşamba günü öğrenciler "
    "sınavlara ağaç kışın gideceğiz öğretmen çocuklara şarkı söyledi İstanbul'da İzmir'e ılık dağ göl kitap "
    "okul ev su bir ve için değil teşekkürler güneş ışık çiçek Şubat Ağustos çay"
)
HEBREW = (
    "שלום עולם מה שלומך היום הפגישה תתקיים ביום שלישי בשעה עשר בבוקר ספר תודה רבה על העזרה שלך בפרויקט הזה "
    "אני אוהב ללמוד שפות חדשות הילדים משחקים בגן ארץ עץ כסף מלך לחם בית ספרים שבוע יום לילה ירושלים"
)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Bugün hava çok güzel, dışarıda yürüyüş yapmak istiyorum.", "cp1254"),
        ("Şirketin yıllık raporu Çarşamba günü yayımlanacak.", "cp1254"),
        ("Öğretmen çocuklara şarkı söyledi.", "cp1254"),
        ("שלום עולם, מה שלומך היום?", "cp1255"),
        ("הפגישה תתקיים ביום שלישי בשעה עשר בבוקר.", "cp1255"),
        ("הילדים משחקים בגן עם החברים שלהם.", "cp1255"),
    ],
)
def test_turkish_and_hebrew_legacy_texts_are_read_as_written(tmp_path, monkeypatch, text, encoding):
    """Turkish in cp1254 was read as cp1252 (`dýþarýda`), Hebrew in cp1255 as Cyrillic (`їьхэ Ґхьэ`) on a
    machine whose own encoding is UTF-8: the letters and words of a sentence tell, and it is sure."""
    monkeypatch.setattr(locale, "getpreferredencoding", lambda do_setlocale=True: "UTF-8")
    doc = parse(write(tmp_path, "note.txt", text.encode(encoding)))
    assert doc.text == text and doc.meta == {"encoding": encoding, "encoding_confidence": 1.0}
    assert doc.warnings == ()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([("cp1254", TURKISH), ("cp1255", HEBREW)]).flatmap(
        lambda pair: st.tuples(
            st.just(pair[0]), st.lists(st.sampled_from(pair[1].split()), min_size=2, max_size=8)
        )
    )
)
def test_turkish_and_hebrew_are_read_right_or_said_to_be_ambiguous(sample):
    """Any few words: the right reading, or a warning that the text is ambiguous, naming the right encoding
    among the others it reads as well in (Turkish without ç or ü spells Icelandic in cp1252: `Kýþýn`)."""
    encoding, words = sample
    text = " ".join(words) + "."
    decoded = decode_text(text.encode(encoding))
    if decoded.text != text:
        assert decoded.confidence < UNSURE and encoding in decoded.rivals
        assert "ambiguous, it reads as well in" in decoded.warnings[0]


def test_a_long_legacy_text_is_read_without_doubt(tmp_path):
    text = "Die Größe der Straße ist für Fußgänger übermäßig, sagte die Behörde. " * 5
    doc = parse(write(tmp_path, "brief.txt", text.encode("cp1252")))
    assert doc.text == text and doc.meta == {"encoding": "cp1252", "encoding_confidence": 1.0}
    assert doc.warnings == ()


def test_utf8_and_bom_texts_are_certain(tmp_path):
    assert parse(write(tmp_path, "a.txt", "Straße 12".encode())).meta == {
        "encoding": "utf-8",
        "encoding_confidence": 1.0,
    }
    assert parse(write(tmp_path, "b.txt", "Straße 12".encode("utf-16"))).meta["encoding"] == "utf-16"


def test_the_locales_legacy_encoding_is_preferred(tmp_path, monkeypatch):
    """A Russian Windows user's file with a few Cyrillic words is ambiguous to detection: the locale says."""
    text = "Name: Иван Петров, age 30, city Moscow, phone 555-1234."
    path = write(tmp_path, "contact.txt", text.encode("cp1251"))
    monkeypatch.setattr(locale, "getpreferredencoding", lambda do_setlocale=True: "cp1251")
    assert parse(path).text == text and parse(path).meta["encoding"] == "cp1251"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=200).filter(lambda b: b"\x00" not in b))
def test_bytes_without_nul_are_never_read_as_utf16_or_utf32(tmp_path, data):
    try:
        doc = parse(write(tmp_path, "x.txt", data))
    except ParseError:
        return
    assert not doc.meta["encoding"].startswith(("utf-16", "utf-32"))
    assert 0 < doc.meta["encoding_confidence"] <= 1


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_lines_are_counted_as_editors_count_them(tmp_path, eol):
    source = eol.join(["Name,Amount", "Ann,5", "", "Bob,7", "Cy,9", ""])  # CR alone: old Mac, some exports
    doc = parse(write(tmp_path, "sheet.txt", source.encode()))
    assert [doc.line_at(source.index(name)) for name in ("Ann", "Bob", "Cy")] == [2, 4, 5]
    assert doc.line_at(source.index(eol, source.index("Cy"))) == 5  # a line break ends its own line


def test_a_10_mb_single_line_parses(tmp_path):
    """No line-based step may be quadratic in a line's length (a timing bound failed on a busy machine)."""
    path = write(tmp_path, "big.txt", b"x" * 10_000_000)
    doc = parse(path)
    assert len(doc.text) == 10_000_000 and doc.line_at(9_999_999) == 1


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, bytes(64)])
def test_binary_content_is_refused(tmp_path, data):
    with pytest.raises(ParseError, match="binary content"):
        parse(write(tmp_path, "image.txt", data))


# --- markup and documents -------------------------------------------------------------------------------


def test_html_blocks_title_first_furniture_dropped(tmp_path):
    page = """<html><head><title>The  Page</title><style>p {}</style></head><body>
      <nav><a href="/">Home</a></nav><h1>Heading</h1>
      <p>Some <b>bold</b>
         text<br>on two lines</p><script>alert(1)</script><!-- a comment -->
      <table><tr><th>Name</th><th>Age</th></tr><tr><td>Ann</td><td>31</td></tr></table>
      <pre>  indented
    code</pre></body></html>"""
    text = parse(write(tmp_path, "page.html", page)).text
    blocks = [
        "The Page",
        "Heading",
        "Some bold text\non two lines",
        "Name | Age",
        "Ann | 31",
        "  indented\n    code",
    ]
    assert text == "\n\n".join(blocks)


HTML_WORD = st.text(alphabet="abcdefghij", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p", "h2", "li", "div", "blockquote"]),
            st.lists(
                st.tuples(HTML_WORD, st.sampled_from([" ", "\n  ", "<br>\n", " <b>x</b> "])), min_size=1
            ),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_html_lines_are_cited_on_the_file_lines_where_they_begin(blocks):
    """Each line of a page's text maps to the file line holding its first word, wherever the markup
    breaks the source lines (paragraphs over several lines, <br>, blank lines between blocks)."""
    source, n = ["<html><head><title>T0</title></head><body>"], 0
    for tag, words, gap in blocks:
        body = ""
        for word, after in words:
            n += 1
            body += f"{word}{n}{after}"
        source.append("\n" * gap + f"<{tag}>{body}</{tag}>")
    file_lines = "\n".join(source + ["</body></html>"]).split("\n")
    doc = ingest.parsers.html.parse_html("\n".join(file_lines).encode())
    lines = doc.text.split("\n")
    assert len(doc.line_map) == len(lines)
    for i, text in enumerate(lines):
        if text:
            assert text.split()[0] in file_lines[doc.line_map[i] - 1], (i, text)
    assert list(doc.line_map) == sorted(doc.line_map)


def test_html_preformatted_lines_keep_their_file_lines():
    page = "<html><body>\n<p>Intro\nline</p>\n\n<pre>\nfirst\n  second\n</pre>\n<p>after</p></body></html>"
    doc = ingest.parsers.html.parse_html(page.encode())
    assert doc.text == "Intro line\n\nfirst\n  second\n\nafter"
    assert [doc.line_at(doc.text.index(w)) for w in ("Intro", "first", "second", "after")] == [2, 6, 7, 9]


def test_html_honours_its_declared_charset(tmp_path):
    page = '<html><head><meta charset="windows-1252"></head><body><p>caf\xe9</p></body></html>'
    assert parse(write(tmp_path, "old.htm", page.encode("latin-1"))).text == "café"


def test_pdf_text_and_pages(tmp_path):
    doc = parse(write(tmp_path, "doc.pdf", pdf_bytes(PAGES)))
    assert len(doc.page_starts) == 3
    assert doc.page_at(doc.text.index("Second line (with parentheses).")) == 1
    assert doc.page_at(doc.text.index("Third page here.")) == 3
    assert doc.text.index("First page") < doc.text.index("Third page")


def test_pdf_with_a_broken_font_map_gives_valid_unicode(tmp_path):
    doc = parse(write(tmp_path, "odd.pdf", pdf_bytes([["ABA"]], unicode_of={"A": "D800"})))
    assert doc.text.startswith("\ufffdB\ufffd")


def test_encrypted_pdf(tmp_path):
    with pytest.raises(EncryptedDocumentError, match="encrypted"):
        parse(write(tmp_path, "locked.pdf", encrypted_pdf_bytes(PAGES, user_password="secret")))


def test_pdf_locked_only_against_editing_opens(tmp_path):
    doc = parse(write(tmp_path, "owner.pdf", encrypted_pdf_bytes(PAGES, user_password="")))
    assert "Third page here." in doc.text


@pytest.mark.parametrize("plan", ["s", "sss", "bsb"])
def test_pdf_of_scanned_pages_only_fails_needing_ocr(tmp_path, plan):
    with pytest.raises(ParseError) as failure:
        parse(write(tmp_path, "scan.pdf", scanned_pdf_bytes(plan)))
    assert str(failure.value) == "no text layer: needs OCR"


@pytest.mark.parametrize(
    "content", [SHOW_IMAGE, SHOW_FORM, SHOW_INLINE_IMAGE], ids=["xobject", "form", "inline"]
)
def test_pdf_page_painting_an_image_any_way_is_a_scan(tmp_path, content):
    with pytest.raises(ParseError, match="^no text layer: needs OCR$"):
        parse(write(tmp_path, "scan.pdf", image_pdf_bytes(content)))


@pytest.mark.parametrize(
    ("plan", "warning"),
    [
        ("tsttsb", "pages 2, 5 have no text layer: needs OCR"),
        ("st", "page 1 has no text layer: needs OCR"),
        ("tbts", "page 4 has no text layer: needs OCR"),
    ],
)
def test_pdf_with_some_scanned_pages_is_read_with_a_warning_naming_them(tmp_path, plan, warning):
    doc = parse(write(tmp_path, "mixed.pdf", scanned_pdf_bytes(plan)))
    assert doc.warnings == (warning,)
    assert len(doc.page_starts) == len(plan)
    for number, kind in enumerate(plan, 1):
        if kind == "t":
            assert doc.page_at(doc.text.index(f"Text on page {number}.")) == number


@pytest.mark.parametrize(
    "data", [scanned_pdf_bytes("bb"), image_pdf_bytes(b"")], ids=["no-image", "image-listed-not-painted"]
)
def test_pdf_of_blank_pages_is_empty_text_not_a_scan(tmp_path, data):
    doc = parse(write(tmp_path, "blank.pdf", data))
    assert doc.text.strip() == "" and doc.warnings == ()


@pytest.mark.parametrize("data", [scanned_pdf_bytes("tbt"), pdf_bytes(PAGES)], ids=["tbt", "PAGES"])
def test_blank_pages_among_text_pages_are_not_flagged(tmp_path, data):
    assert parse(write(tmp_path, "doc.pdf", data)).warnings == ()


def test_docx_paragraphs_and_tables_in_order(tmp_path):
    text = parse(write(tmp_path, "report.docx", docx_bytes())).text
    blocks = [
        "Quarterly report",
        "Revenue grew in every region.",
        "Region | Growth\nNorth | 12%",
        "The outlook is stable.",
    ]
    assert text == "\n\n".join(blocks)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("locked.docx", encrypted_ooxml_bytes(docx_bytes())),
        ("locked.pptx", encrypted_ooxml_bytes(pptx_bytes())),
        ("locked.odt", odt_bytes(encrypted=True)),
    ],
    ids=["docx", "pptx", "odt"],
)
def test_encrypted_office_documents(tmp_path, name, data):
    with pytest.raises(EncryptedDocumentError) as failure:
        parse(write(tmp_path, name, data))
    assert str(failure.value) == "the document is encrypted with a password"


OLD_WORD = "an old Word 97-2003 file (.doc), not .docx: save it as .docx to include it"
OLD_POWERPOINT = "an old PowerPoint 97-2003 file (.ppt), not .pptx: save it as .pptx to include it"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("old.docx", ole_bytes("WordDocument"), OLD_WORD),
        ("old.pptx", ole_bytes("PowerPoint Document"), OLD_POWERPOINT),
        (
            "sheet.docx",
            ole_bytes("Workbook"),
            "not a valid DOCX file (an old Office file, but not a Word one)",
        ),
        (
            "sheet.pptx",
            ole_bytes("Workbook"),
            "not a valid PPTX file (an old Office file, but not a PowerPoint one)",
        ),
        ("cut.docx", ole_bytes("WordDocument")[:600], "not a valid DOCX file (a damaged Office file)"),
        ("cut.pptx", ole_bytes("PowerPoint Document")[:600], "not a valid PPTX file (a damaged Office file)"),
        ("book.docx", epub_bytes(), "not a valid DOCX file (damaged, or a zip of another kind)"),
        ("report.pptx", docx_bytes(), "not a valid PPTX file (damaged, or a zip of another kind)"),
    ],
    ids=["doc", "ppt", "xls-docx", "xls-pptx", "cut-doc", "cut-ppt", "epub-docx", "docx-pptx"],
)
def test_an_office_file_of_another_kind_says_what_it_is(tmp_path, name, data, reason):
    """Old binary Office files renamed, other Office files, damaged ones: each says what it is in words (not
    in the library's), and none is taken for an encrypted one."""
    with pytest.raises(ParseError) as failure:
        parse(write(tmp_path, name, data))
    assert str(failure.value) == reason and not isinstance(failure.value, EncryptedDocumentError)


def test_epub_follows_the_spine(tmp_path):
    text = parse(write(tmp_path, "book.epub", epub_bytes())).text
    assert text == "Chapter One\n\nIt begins.\n\nChapter Two\n\nThe end."


def test_email_headers_body_and_attachments(tmp_path):
    text = parse(write(tmp_path, "mail.eml", eml_bytes())).text
    assert text == (
        "Subject: Lunch on Friday?\nFrom: Ana Lima <ana@example.org>\nTo: bo@example.org\n"
        "Date: Fri, 01 Mar 2024 10:00:00 +0000\n\nShall we meet at noon?\n\nAttachments: menu.pdf"
    )


def test_email_with_only_html(tmp_path):
    text = parse(write(tmp_path, "mail.eml", eml_bytes(html_only=True))).text
    assert text.endswith("\n\nShall we meet at noon?")


def test_mbox_reads_each_message_as_an_eml(tmp_path):
    doc = parse(write(tmp_path, "inbox.mbox", mbox_bytes()))
    reply = (
        "Subject: Re: Lunch on Friday?\nFrom: bo@example.org\nTo: Ana Lima <ana@example.org>\n"
        "Date: Fri, 01 Mar 2024 11:30:00 +0000\n\nYes.\nFrom now on, Friday is lunch day."  # unquoted
    )
    assert doc.text == parse(write(tmp_path, "mail.eml", eml_bytes())).text + "\n\n" + reply
    assert doc.warnings == () and doc.page_starts == ()


def test_mbox_message_that_cannot_be_read_is_lost_alone(tmp_path, monkeypatch):
    render = ingest.parsers.mbox.render_message

    def fussy(data: bytes) -> str:
        if b"Subject: Re:" in data:
            raise ValueError("a header the stdlib chokes on")
        return render(data)

    monkeypatch.setattr(ingest.parsers.mbox, "render_message", fussy)
    doc = parse(write(tmp_path, "inbox.mbox", mbox_bytes([reply_message(), eml_message(), reply_message()])))
    assert doc.text == parse(write(tmp_path, "mail.eml", eml_bytes())).text
    assert doc.warnings == ("2 of 3 messages could not be read",)


def test_mbox_without_a_from_line(tmp_path):
    with pytest.raises(ParseError, match="^not a valid MBOX file"):
        parse(write(tmp_path, "inbox.mbox", eml_bytes()))


ENVELOPE = b"From ana@example.org Fri Mar  1 10:00:00 2024\n"
PROGRAM = b"\x7fELF\x02\x01\x01" + bytes(9) + bytes(range(256)) * 64
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(100)


def test_a_binary_file_named_mbox_fails_as_binary_content(tmp_path):
    """It was split at its 'From ' lines and its bytes read as mail (one garbage message)."""
    for data in (ENVELOPE + PROGRAM, ENVELOPE + IMAGE, random.Random(3).randbytes(4096)):
        with pytest.raises(ParseError, match="^binary content$"):
            parse(write(tmp_path, "inbox.mbox", data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=3000), st.text(max_size=300).map(str.encode)))
def test_a_mailbox_is_binary_exactly_when_a_file_without_a_suffix_would_be(tmp_path, body):
    """The one sniff decides for both: the same bytes are a mailbox, or fail as 'binary content'."""
    data = ENVELOPE + body
    binary = not is_supported(write(tmp_path, "inbox", data))
    try:
        parse(write(tmp_path, "inbox.mbox", data))
        failure = None
    except ParseError as exc:
        failure = str(exc)
    assert (failure == "binary content") == binary


# --- office documents: ODT and PPTX ---------------------------------------------------------------------


def test_odt_headings_paragraphs_lists_and_tables_in_order(tmp_path):
    text = parse(write(tmp_path, "report.odt", odt_bytes())).text
    blocks = [
        "Quarterly report",
        "Revenue grew  in every\tregion.\nCosts fell.",  # white space collapsed, text:s kept
        "Said the board.",  # no footnote, comment or deleted revision
        "First point",
        "Second point",
        "Region | Growth\nNorth | 12%\nAll regions",
        "Figure 1: the chart",
        "The outlook is stable.",
    ]
    assert text == "\n\n".join(blocks)


def test_odt_that_is_another_zip_or_another_opendocument(tmp_path):
    with pytest.raises(ParseError, match=r"^not a valid ODT file \(no content.xml\)"):
        parse(write(tmp_path, "fake.odt", docx_bytes()))
    sheet = odt_bytes(manifest=None, body="spreadsheet")
    with pytest.raises(ParseError, match=r"^not a valid ODT file \(no text in content.xml"):
        parse(write(tmp_path, "sheet.odt", sheet))


def test_odt_runs_of_spaces_are_capped_and_the_text_held_to_the_size_limit(tmp_path, monkeypatch):
    """`<text:s text:c="N"/>` stood for N spaces, capped at 1,000: a 6 KB file made 100 M characters. A run
    is at most 20 spaces (no longer than its markup), and the whole text is held to the size limit."""
    hostile = odt_bytes(text="<text:p>a" + '<text:s text:c="99999999"/>' * 100_000 + "b</text:p>")
    assert len(hostile) < 8_000
    path = write(tmp_path, "spaces.odt", hostile)
    assert parse(path).text == "a" + " " * 20 * 100_000 + "b"
    monkeypatch.setattr(ingest.document, "MAX_DOCUMENT_CHARS", 1_000_000)
    with pytest.raises(TooLargeError, match="^text too large"):
        parse(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.integers(-3, 10**12).map(str),
            st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=6),
            st.just("9" * 5000),
        ),
        max_size=12,
    )
)
def test_odt_space_counts_of_any_kind_give_one_to_20_spaces(tmp_path, counts):
    """text:c as a document may hold it (missing, 0, negative, huge, '²', 5,000 digits): every text:s is a
    run of 1 to 20 spaces, and the file never fails for it."""
    runs = "".join("x<text:s/>" if c is None else f"x<text:s text:c={quoteattr(c)}/>" for c in counts)
    text = parse(write(tmp_path, "counts.odt", odt_bytes(text=f"<text:p>{runs}xy</text:p>"))).text
    gaps = text.removesuffix("y").split("x")[1:-1]
    assert len(gaps) == len(counts) and all(1 <= len(gap) <= 20 and not gap.strip() for gap in gaps)


def test_odt_entities_are_not_expanded(tmp_path):
    laughs = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10 if i else "ha"}">' for i in range(9))
    hostile = odt_bytes(text="<text:p>&e8;</text:p>").replace(
        b"<office:document-content",
        f"<!DOCTYPE office:document-content [{laughs}]>\n<office:document-content".encode(),
    )
    text = outcome(write(tmp_path, "bomb.odt", hostile))
    assert text is None or len(text) < 1000


def test_pptx_one_page_per_slide(tmp_path):
    doc = parse(write(tmp_path, "review.pptx", pptx_bytes()))
    slides = [
        "Quarterly review\n\nSales team",
        "Results\n\nRevenue grew\nin every region\nCosts fell\n\nRegion | Growth\nNorth | 12%\nAll regions"
        "\n\nLeft box\n\nRight box\n\nNotes: Mention the new office.",
        "",
    ]
    assert doc.text == "\n\n".join(slides)
    assert [doc.page_at(doc.text.index(s)) for s in ("Sales team", "Costs fell", "Notes:")] == [1, 2, 2]
    assert doc.page_starts == (0, len(slides[0]) + 2, len(slides[0]) + len(slides[1]) + 4)


# --- files without a suffix -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["README", "Makefile", "LICENSE", "Dockerfile", "notes"])
def test_a_text_file_without_a_suffix_is_read_as_text(tmp_path, name):
    path = write(tmp_path, name, "all:\n\tcc -o tool tool.c  # Grüße\n")
    assert is_supported(path)
    assert parse(path).text == "all:\n\tcc -o tool tool.c  # Grüße\n"


@pytest.mark.parametrize(
    "data",
    [PROGRAM, IMAGE],
    ids=["executable", "image"],
)
def test_a_binary_file_without_a_suffix_is_not_a_document(tmp_path, data):
    path = write(tmp_path, "tool", data)
    assert not is_supported(path)
    with pytest.raises(ParseError, match="binary content"):  # asked anyway, parse says why not
        parse(path)


def test_a_long_utf8_file_without_a_suffix_is_text_wherever_a_character_is_cut(tmp_path):
    for shift in range(4):  # "€" is three bytes: one of these shifts cuts it at the end of what is sniffed
        assert is_supported(write(tmp_path, "NOTES", "x" * shift + "€ a sentence of text. " * 2000))


def test_what_is_not_a_regular_file_is_not_a_document(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it for reading would block forever
    (tmp_path / "folder").mkdir()
    assert not is_supported(tmp_path / "pipe") and not is_supported(tmp_path / "folder")
    assert not is_supported(tmp_path / "missing")


# --- broken files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
def test_empty_file_is_empty_text(tmp_path, suffix):
    assert parse(write(tmp_path, "empty" + suffix, b"")).text == ""


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".epub", ".txt", ".odt", ".pptx", ".mbox"])
def test_random_bytes_are_a_parse_error(tmp_path, suffix):
    with pytest.raises(ParseError):
        parse(write(tmp_path, "noise" + suffix, random.Random(1).randbytes(4096)))


@pytest.mark.parametrize("suffix", [".html", ".eml"])
def test_random_bytes_in_lenient_formats_give_text_or_error(tmp_path, suffix):
    outcome(write(tmp_path, "noise" + suffix, random.Random(2).randbytes(4096)))


def test_truncated_pdf(tmp_path):
    data = pdf_bytes([["A line of text on the page."] * 30] * 3)
    with pytest.raises(ParseError, match="not a valid PDF"):
        parse(write(tmp_path, "cut.pdf", data[: len(data) // 2]))


def test_zip_bomb_is_refused_unopened(tmp_path):
    with pytest.raises(ParseError, match="zip bomb"):
        parse(write(tmp_path, "bomb.docx", zip_bomb_bytes()))


def test_epub_without_its_package_document(tmp_path):
    with pytest.raises(ParseError, match="not a valid EPUB"):
        parse(write(tmp_path, "book.epub", epub_bytes(container=None)))


def test_epub_entities_are_not_expanded(tmp_path):
    laughs = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10 if i else "ha"}">' for i in range(9))
    hostile = OPF.replace("<package", f"<!DOCTYPE package [{laughs}]>\n<package").replace("A Book", "&e8;")
    text = outcome(write(tmp_path, "book.epub", epub_bytes(opf=hostile)))
    assert text is None or len(text) < 1000


def test_unsupported_suffix(tmp_path):
    assert not is_supported(Path("x.exe")) and is_supported(Path("notes.MD"))
    with pytest.raises(UnsupportedFormatError):
        parse(write(tmp_path, "x.exe", b"MZ"))


def test_file_removed_before_parse(tmp_path):
    path = write(tmp_path, "gone.md", "# hello")
    path.unlink()
    with pytest.raises(ParseError, match="vanished"):
        parse(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path):
    path = write(tmp_path, "secret.txt", "hidden")
    path.chmod(0)
    with pytest.raises(ParseError, match="permission denied"):
        parse(path)


def test_symlink_loop(tmp_path):
    (tmp_path / "a.txt").symlink_to(tmp_path / "b.txt")
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    with pytest.raises(ParseError, match="link loop"):
        parse(tmp_path / "a.txt")


def test_directory_and_named_pipe_are_not_read(tmp_path):
    (tmp_path / "folder.md").mkdir()
    os.mkfifo(tmp_path / "pipe.txt")  # opening it for reading would block forever
    for name in ("folder.md", "pipe.txt"):
        with pytest.raises(ParseError, match="not a regular file"):
            parse(tmp_path / name)


VALID = {
    ".pdf": pdf_bytes(PAGES),
    ".docx": docx_bytes(),
    ".epub": epub_bytes(),
    ".eml": eml_bytes(),
    ".odt": odt_bytes(),
    ".pptx": pptx_bytes(),
    ".mbox": mbox_bytes(),
    ".html": b"<html><body><p>hi</p></body></html>",
    ".txt": "plain text, ünïcode".encode(),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from(sorted(VALID)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.floats(0, 1),
)
def test_damaged_files_never_raise_anything_else(tmp_path, suffix, flips, cut):
    outcome(write(tmp_path, "fuzz" + suffix, damaged(VALID[suffix], flips, cut)))


# what a library's exception shows when it is passed on: its class, a repr, an object's address
INTERNALS = re.compile(r"\b\w*(Error|Exception)\b|Traceback|object at 0x|<[\w.]+[ >]|\w+\(['\"]")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".docx", ".pptx", ".pdf"]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.floats(0, 1),
)
def test_a_damaged_document_fails_in_words_and_logs_what_its_library_said(
    tmp_path, caplog, suffix, flips, cut
):
    """python-docx, python-pptx, olefile and pypdf messages (`file '<_io.BytesIO object at 0x…>' is not a
    PowerPoint file, content type is …`) reached the status: the user gets one sentence, the log the rest."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ingest.parsers"):
        try:
            parse(write(tmp_path, "fuzz" + suffix, damaged(VALID[suffix], flips, cut)))
            return
        except ParseError as exc:
            failure = exc
    message, cause = str(failure), failure.__cause__
    assert "\n" not in message and not INTERNALS.search(message), message
    if cause is not None and str(cause):
        assert str(cause) not in message
        assert f"{type(cause).__name__}: {cause}" in caplog.text


def damaged(data: bytes, flips: list[tuple[float, int]], cut: float) -> bytes:
    """The bytes with a few of them changed (`flips`: where, as a fraction, and the new value), then cut."""
    changed = bytearray(data)
    for where, value in flips:
        changed[int(where * len(changed))] = value
    return bytes(changed[: max(1, int(cut * len(changed)))])


def outcome(path: Path) -> str | None:
    """Parsing gives text or a ParseError with a reason (then None); anything else fails the test."""
    try:
        text = parse(path).text
        text.encode("utf-8")  # valid Unicode: the tokenizer and the catalog take it as it is
        return text
    except ParseError as exc:
        assert str(exc)
        return None
