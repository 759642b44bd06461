"""Real documents of every supported format, built in memory for tests, and the broken variants of them."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import docx
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
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


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
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        if container is not None:
            z.writestr("META-INF/container.xml", container)
        z.writestr("OEBPS/content.opf", opf)
        z.writestr("OEBPS/Text/chapter two.xhtml", _xhtml("Two", "<h1>Chapter Two</h1><p>The end.</p>"))
        z.writestr("OEBPS/Text/one.xhtml", _xhtml("One", "<h1>Chapter One</h1><p>It begins.</p>"))
        z.writestr("OEBPS/nav.xhtml", _xhtml("Contents", "<nav><ol><li>One</li></ol></nav>"))
        z.writestr("OEBPS/cover.png", b"\x89PNG\r\n\x1a\n")
    return out.getvalue()


def eml_bytes(html_only: bool = False) -> bytes:
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
    return message.as_bytes()


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
