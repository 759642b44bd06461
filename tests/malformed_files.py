"""Real documents of every supported format, built in memory for tests, and the broken variants of them."""

from __future__ import annotations

import io
import mailbox
import struct
import tempfile
import zipfile
from email.message import EmailMessage
from pathlib import Path

import docx
import pptx
from msoffcrypto.format.ooxml import OOXMLFile
from PIL import Image
from pptx.util import Inches
from pypdf import PdfReader, PdfWriter


def pdf_bytes(pages: list[list[str]], unicode_of: dict[str, str] | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text line per string, one content stream per page. unicode_of maps
    characters to the UTF-16BE hex that the font's ToUnicode map claims for them (which may be invalid)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for lines in pages:
        shown = " ".join(f"({_pdf_escape(line)}) Tj T*" for line in lines)
        stream = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        contents = len(objects)  # objects are numbered from 1
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % contents
        )
        kids.append(len(objects))
    refs = " ".join(f"{k} 0 R" for k in kids).encode()
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids))
    if unicode_of:
        pairs = "".join(f"<{ord(c):02X}> <{hex_}> " for c, hex_ in unicode_of.items())
        cmap = (
            "/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /M def "
            "1 begincodespacerange <00> <FF> endcodespacerange "
            f"{len(unicode_of)} beginbfchar {pairs}endbfchar "
            "endcmap CMapName currentdict /CMap defineresource pop end end"
        ).encode()
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(cmap), cmap))
        objects[2] = objects[2].replace(b" >>", b" /ToUnicode %d 0 R >>" % len(objects))
    return _pdf_file(objects)


def _pdf_file(objects: list[bytes]) -> bytes:
    """A PDF file of these objects, numbered from 1 in order; object 1 is the catalog."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _pdf_escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def scanned_pdf_bytes(plan: str) -> bytes:
    """A PDF whose pages follow plan, one letter a page: 't' a text page ("Text on page N."), 's' a scanned
    page (a JPEG drawn by Pillow's PDF writer, no text), 'b' a blank page (no text, no image)."""
    writer = PdfWriter()
    for number, kind in enumerate(plan, 1):
        if kind == "s":
            image = io.BytesIO()
            Image.new("RGB", (200, 100), "white").save(image, "PDF")
            data = image.getvalue()
        else:
            data = pdf_bytes([[f"Text on page {number}."] if kind == "t" else []])
        writer.add_page(PdfReader(io.BytesIO(data)).pages[0])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


SHOW_IMAGE = b"q 100 0 0 100 72 600 cm /Im0 Do Q"
SHOW_FORM = b"q 100 0 0 100 72 600 cm /Fm0 Do Q"
SHOW_INLINE_IMAGE = b"q 100 0 0 100 72 600 cm BI /W 1 /H 1 /BPC 8 /CS /G ID \x80 EI Q"


def image_pdf_bytes(content: bytes) -> bytes:
    """A one-page PDF with this content stream and no text. Its resources, inherited from the page tree as
    many producers share them, hold a 1x1 image /Im0 and a Form XObject /Fm0 that paints /Im0."""
    image = (
        b"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /BitsPerComponent 8 /ColorSpace /DeviceGray "
    )
    form = b"<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /XObject << /Im0 3 0 R >> >> "
    return _pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [5 0 R] /Count 1 "
            b"/Resources << /XObject << /Im0 3 0 R /Fm0 4 0 R >> >> >>",
            image + b"/Length 1 >>\nstream\n\x80\nendstream",
            form + b"/Length 7 >>\nstream\n/Im0 Do\nendstream",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 6 0 R >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        ]
    )


def encrypted_pdf_bytes(pages: list[list[str]], user_password: str) -> bytes:
    """The same PDF locked with RC4 (pure Python in pypdf: no crypto package needed)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes() -> bytes:
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew in every region.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate((("Region", "Growth"), ("North", "12%"))):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("")
    document.add_paragraph("The outlook is stable.")
    return _saved(document)


def _saved(document: docx.document.Document | pptx.presentation.Presentation) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def encrypted_ooxml_bytes(data: bytes, password: str = "secret") -> bytes:
    """A DOCX or PPTX locked with a password as Office does it (ECMA-376 agile encryption in an OLE file)."""
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(data)).encrypt(password, out)
    return out.getvalue()


_FREE, _END_OF_CHAIN, _FAT_SECTOR, _NO_STREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


def ole_bytes(stream: str) -> bytes:
    """A minimal OLE compound file (version 3, 512-byte sectors) holding one stream of 4096 zeros: enough for
    olefile to list it (nothing writes a real Word 97-2003 file). 4096 bytes is the mini-stream cutoff, so
    the stream lives in regular sectors: sector 0 is the FAT, sector 1 the directory, 2 to 9 the stream."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
    # version 3, little-endian, sectors of 2**9, mini sectors of 2**6, 1 FAT sector, directory at sector 1
    header += struct.pack(
        "<5H6x9I", 0x3E, 3, 0xFFFE, 9, 6, 0, 1, 1, 0, 4096, _END_OF_CHAIN, 0, _END_OF_CHAIN, 0
    )
    header += struct.pack("<109I", 0, *[_FREE] * 108)
    chain = [_FAT_SECTOR, _END_OF_CHAIN, *range(3, 10), _END_OF_CHAIN]
    fat = struct.pack("<128I", *chain, *[_FREE] * (128 - len(chain)))
    root = _ole_entry("Root Entry", 5, start=_END_OF_CHAIN, child=1)
    directory = root + _ole_entry(stream, 2, start=2, size=4096) + _ole_entry("", 0) * 2
    return header + fat + directory + bytes(4096)


def _ole_entry(name: str, kind: int, start: int = 0, size: int = 0, child: int = _NO_STREAM) -> bytes:
    """A 128-byte directory entry without siblings, CLSID or timestamps."""
    encoded = (name + "\0").encode("utf-16-le") if name else b""
    links = (_NO_STREAM, _NO_STREAM, child)  # left sibling, right sibling, first child
    return struct.pack(
        "<64sHBB3I16sI16sIQ", encoded, len(encoded), kind, 1, *links, bytes(16), 0, bytes(16), start, size
    )


CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""

OPF = """<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>A Book</dc:title></metadata>
  <manifest>
    <item id="two" href="Text/chapter%20two.xhtml" media-type="application/xhtml+xml"/>
    <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
    <item id="one" href="Text/one.xhtml" media-type="application/xhtml+xml"/>
    <item id="cover" href="cover.png" media-type="image/png"/>
  </manifest>
  <spine><itemref idref="cover"/><itemref idref="one"/><itemref idref="two"/></spine>
</package>"""


def _xhtml(title: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        f"<head><title>{title}</title></head><body>{body}</body></html>"
    )


def epub_bytes(opf: str = OPF, container: str | None = CONTAINER) -> bytes:
    """Chapters stored in the reverse of the spine's order, so the order must come from the spine."""
    return _zip_bytes(
        "application/epub+zip",
        {
            "META-INF/container.xml": container,
            "OEBPS/content.opf": opf,
            "OEBPS/Text/chapter two.xhtml": _xhtml("Two", "<h1>Chapter Two</h1><p>The end.</p>"),
            "OEBPS/Text/one.xhtml": _xhtml("One", "<h1>Chapter One</h1><p>It begins.</p>"),
            "OEBPS/nav.xhtml": _xhtml("Contents", "<nav><ol><li>One</li></ol></nav>"),
            "OEBPS/cover.png": b"\x89PNG\r\n\x1a\n",
        },
    )


def _zip_bytes(mimetype: str, members: dict[str, str | bytes | None]) -> bytes:
    """A zip as EPUB and OpenDocument writers make it: the mimetype first and stored, then the members
    deflated in order (None: left out)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), mimetype)
        for name, data in members.items():
            if data is not None:
                z.writestr(name, data)
    return out.getvalue()


def eml_bytes(html_only: bool = False) -> bytes:
    return eml_message(html_only).as_bytes()


def eml_message(html_only: bool = False) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "Lunch on Friday?"
    message["From"] = "Ana Lima <ana@example.org>"
    message["To"] = "bo@example.org"
    message["Date"] = "Fri, 01 Mar 2024 10:00:00 +0000"
    html = "<html><body><p>Shall we meet at <b>noon</b>?</p><script>x()</script></body></html>"
    if html_only:
        message.set_content(html, subtype="html")
    else:
        message.set_content("Shall we meet at noon?\n")
        message.add_alternative(html, subtype="html")
        message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="menu.pdf")
    return message


def reply_message() -> EmailMessage:
    """A reply whose body has a line starting "From ", which the mbox writer quotes as ">From "."""
    message = EmailMessage()
    message["Subject"] = "Re: Lunch on Friday?"
    message["From"] = "bo@example.org"
    message["To"] = "Ana Lima <ana@example.org>"
    message["Date"] = "Fri, 01 Mar 2024 11:30:00 +0000"
    message.set_content("Yes.\nFrom now on, Friday is lunch day.\n")
    return message


def mbox_bytes(messages: list[EmailMessage] | None = None) -> bytes:
    """A mailbox as the stdlib's mailbox.mbox writes it (to a file): the lunch e-mail, then the reply."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inbox.mbox"
        box = mailbox.mbox(path)
        for message in [eml_message(), reply_message()] if messages is None else messages:
            box.add(message)
        box.close()
        return path.read_bytes()


def zip_bomb_bytes(unpacked_mb: int = 210) -> bytes:
    """A zip whose one member inflates to unpacked_mb of zeros (about 1 MB packed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(unpacked_mb):
                member.write(block)
    return out.getvalue()


def pptx_bytes() -> bytes:
    """Three slides: a title slide; a slide with a bulleted body (a line break in a paragraph), a table with
    a merged cell, a group of two text boxes and notes; an empty slide (still a page)."""
    presentation = pptx.Presentation()
    title = presentation.slides.add_slide(presentation.slide_layouts[0])
    title.shapes.title.text = "Quarterly review"
    title.placeholders[1].text = "Sales team"
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Results"
    slide.placeholders[1].text_frame.text = "Revenue grew\vin every region"
    slide.placeholders[1].text_frame.add_paragraph().text = "Costs fell"
    table = slide.shapes.add_table(3, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    for r, row in enumerate((("Region", "Growth"), ("North", "12%"), ("All regions", ""))):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(2, 0).merge(table.cell(2, 1))
    group = slide.shapes.add_group_shape()
    for n, text in enumerate(("Left box", "Right box")):
        group.shapes.add_textbox(Inches(n * 3), Inches(6), Inches(2), Inches(1)).text_frame.text = text
    slide.notes_slide.notes_text_frame.text = "Mention the new office."
    presentation.slides.add_slide(presentation.slide_layouts[6])
    return _saved(presentation)


ODT_NAMESPACES = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"'
)

# LibreOffice's markup for what a letter holds: spans, runs of spaces, a tab, a line break; a list; a
# table with a header row and a merged cell; a captioned image (a frame holding a text box); and the text
# that is not the letter's: a deleted revision, a comment and a footnote.
ODT_TEXT = """
<text:tracked-changes><text:changed-region text:id="c1"><text:deletion>
  <text:p>Deleted words.</text:p></text:deletion></text:changed-region></text:tracked-changes>
<text:sequence-decls><text:sequence-decl text:display-outline-level="0" text:name="Figure"/>
  </text:sequence-decls>
<text:h text:outline-level="1">Quarterly <text:span>report</text:span></text:h>
<text:p>Revenue  grew<text:s text:c="2"/>in every<text:tab/>region.<text:line-break/>Costs
  fell.<office:annotation><dc:creator>Ana</dc:creator><text:p>Check this.</text:p></office:annotation>
</text:p>
<text:p>Said the<text:note text:note-class="footnote"><text:note-citation>1</text:note-citation>
  <text:note-body><text:p>A footnote.</text:p></text:note-body></text:note> board.</text:p>
<text:list><text:list-item><text:p>First point</text:p></text:list-item>
  <text:list-item><text:p>Second point</text:p></text:list-item></text:list>
<table:table table:name="Growth"><table:table-column table:number-columns-repeated="2"/>
  <table:table-header-rows><table:table-row>
    <table:table-cell><text:p>Region</text:p></table:table-cell>
    <table:table-cell><text:p>Growth</text:p></table:table-cell></table:table-row></table:table-header-rows>
  <table:table-row><table:table-cell><text:p>North</text:p></table:table-cell>
    <table:table-cell><text:p>12%</text:p></table:table-cell></table:table-row>
  <table:table-row><table:table-cell table:number-columns-spanned="2"><text:p>All regions</text:p>
    </table:table-cell><table:covered-table-cell/></table:table-row>
  <table:table-row><table:table-cell/><table:table-cell/></table:table-row>
</table:table>
<text:p><draw:frame draw:name="Caption"><draw:text-box><text:p><draw:frame draw:name="Chart"><draw:image/>
  </draw:frame>Figure 1: the chart</text:p></draw:text-box></draw:frame></text:p>
<text:p/>
<text:section text:name="End"><text:p>The outlook is stable.</text:p></text:section>
"""

ODT_MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">
  <manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>
  <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>"""

ODT_ENCRYPTION = """<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"
    manifest:size="2048"><manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x">
    <manifest:algorithm manifest:algorithm-name="Blowfish CFB" manifest:initialisation-vector="x"/>
    <manifest:key-derivation manifest:key-derivation-name="PBKDF2" manifest:iteration-count="1024"
      manifest:salt="x"/></manifest:encryption-data></manifest:file-entry>"""


def odt_bytes(
    text: str = ODT_TEXT, manifest: str | None = ODT_MANIFEST, encrypted: bool = False, body: str = "text"
) -> bytes:
    """An ODT as LibreOffice zips it: the mimetype first and stored, the manifest, content.xml, whose body
    holds `text` in an office:text (office:spreadsheet in a spreadsheet, `body`). Encrypted, the manifest
    says so for content.xml, whose bytes are then not XML."""
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content {ODT_NAMESPACES}>'
        f"<office:body><office:{body}>{text}</office:{body}></office:body></office:document-content>"
    )
    entry = '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    if manifest is not None and encrypted:
        manifest = manifest.replace(entry, ODT_ENCRYPTION)
    return _zip_bytes(
        "application/vnd.oasis.opendocument.text",
        {
            "META-INF/manifest.xml": manifest,
            "content.xml": bytes(range(256)) * 8 if encrypted else content.encode(),
        },
    )
