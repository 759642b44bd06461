"""Office containers: zips (DOCX, PPTX, ODT, EPUB), opened with a cap on what they unpack to so that a zip
bomb is refused, their XML members read safely, and the OLE files that stand in for them explained."""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import NoReturn

import olefile
from lxml import etree

from ingest.errors import EncryptedDocumentError, ParseError

MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
MAX_MEMBERS = 20_000
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an OLE compound file: Office 97-2003, or encrypted


def open_zip(data: bytes, kind: str) -> zipfile.ZipFile:
    """The archive, checked: zipfile never inflates a member past its declared size, so the sum bounds all."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ParseError(f"not a valid {kind} file (bad zip)") from exc
    members = archive.infolist()
    if len(members) > MAX_MEMBERS or sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
        archive.close()
        raise ParseError(f"the {kind} file unpacks to more than {MAX_UNZIPPED_BYTES >> 20} MB (zip bomb?)")
    return archive


def read_member(archive: zipfile.ZipFile, name: str, kind: str) -> bytes:
    """One member's bytes; a damaged member is a ParseError naming the file type."""
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, ValueError, OSError, RuntimeError) as exc:
        raise ParseError(f"not a valid {kind} file (damaged member {name})") from exc


def read_xml(archive: zipfile.ZipFile, name: str, kind: str) -> etree._Element:
    """A member parsed as XML, safely: entities unresolved, no DTD, no network, so a hostile document can
    neither expand itself nor reach out; comments and processing instructions go (their text is not the
    document's). A missing or malformed member is a ParseError naming the file type."""
    if name not in archive.namelist():
        raise ParseError(f"not a valid {kind} file (no {name})")
    # A parser per call: lxml parser objects must not be shared between threads.
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True, remove_pis=True
    )
    try:
        return etree.fromstring(read_member(archive, name, kind), parser=parser)
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"not a valid {kind} file (bad {name})") from exc


def refuse_ole(data: bytes, kind: str, old_stream: str, app: str) -> NoReturn:
    """Raise why an OLE compound file named after `kind` (DOCX, PPTX) cannot be read. Office saves a
    password-protected file as one (the zip, encrypted, in its EncryptedPackage stream), and an `app`
    97-2003 file renamed (its main stream `old_stream`) is one too: both would otherwise fail as a "bad zip",
    which tells the user nothing."""
    suffix = "." + kind.lower()
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            encrypted = ole.exists("EncryptionInfo") and ole.exists("EncryptedPackage")
            old_format = ole.exists(old_stream)
    except Exception as exc:  # olefile fails on a damaged compound file with many types
        raise ParseError(f"not a valid {kind} file (a damaged Office file)") from exc
    if encrypted:
        raise EncryptedDocumentError("the document is encrypted with a password")
    if old_format:
        raise ParseError(
            f"an old {app} 97-2003 file ({suffix[:-1]}), not {suffix}: save it as {suffix} to include it"
        )
    raise ParseError(f"not a valid {kind} file (an old Office file, but not a {app} one)")
