"""Zip containers (DOCX, EPUB), opened with a cap on what they unpack to: a zip bomb is refused."""

from __future__ import annotations

import io
import zipfile
import zlib

from ingest.errors import ParseError

MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
MAX_MEMBERS = 20_000


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
