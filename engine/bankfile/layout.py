"""The fixed parts of a `.m3bank` file: header, footer, alignment, the caps a reader enforces, the error.

    offset 0    header, 64 bytes: magic | u16 major | u16 minor | 52 zero bytes
    64, ...     sections, each at the first 64-aligned offset after the one before, gaps zero
    ...         manifest (JSON, <= 1 MiB) at the next 64-aligned offset, zero padding up to 64
    EOF-64      footer, 64 bytes: magic | u64 manifest offset | u64 manifest length | SHA-256 | 8 zero bytes

Everything is little-endian. The layout is canonical: given the section lengths, every offset is fixed,
so a reader checks positions by equality rather than by "somewhere in bounds", and the only bytes that are
not covered by a checksum are zero by rule. Why caps: a bank file comes from someone else; every size in
it is checked against a cap before anything is allocated or decompressed.
"""

from __future__ import annotations

import struct
import threading

from ingest import chunker
from ingest.errors import M3Error

MAGIC = b"M3BANK\r\n"  # the \r\n catches a text-mode transfer that rewrote line ends
END_MAGIC = b"M3BKEND\n"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0

ALIGN = 64
HEADER = struct.Struct("<8sHH52s")  # magic, major, minor, reserved
FOOTER = struct.Struct("<8sQQ32s8s")  # magic, manifest offset, manifest length, manifest SHA-256, reserved
assert HEADER.size == FOOTER.size == ALIGN
MIN_FILE_BYTES = HEADER.size + FOOTER.size

# Caps. A reader refuses a file over any of them before it reads the section in question.
MAX_MANIFEST_BYTES = 1 << 20
MAX_TEXT_SECTION_RAW = 4 << 30  # documents and chunks, decompressed
MAX_ZSTD_RATIO = 64  # raw_length / length of a zstd section; text compresses 3-10x, a bomb 30,000x
MAX_LINE_BYTES = 1 << 20  # one JSON line of documents or chunks
MAX_TEXT_CHARS = chunker.MAX_TOKENS * chunker.MAX_CHARS_PER_TOKEN  # the longest chunk the chunker cuts
MAX_LABEL_CHARS = 1024  # also the cap on scope values, names and producer strings
MAX_PATH_BYTES = 1024  # a document's path, UTF-8
MAX_SEGMENT_BYTES = 255  # one path segment or a label, UTF-8
MAX_MEMORY_RECORD = 16 << 20  # one memory payload (a dense fp32 memory of a large model is ~10 MB)
MAX_DOCUMENTS = 1_000_000
MAX_CHUNKS = 4_000_000  # a reader keeps one 32-byte digest per chunk to check memories and vectors
MAX_VECTOR_DIM = 8192
MAX_NUMBER = 2**53  # sizes, offsets, line and page numbers: exact in any JSON reader, and in SQLite
MAX_LAYERS = 1024  # n_layer and n_kv_head
MAX_HEAD_DIM = 4096

# The shortest possible record of each section, so a table that claims more records than its bytes can
# hold is refused on opening (a million claimed records in a few bytes never gets streamed).
MIN_DOCUMENT_LINE = 50  # {"id":0,"label":"a","path":"a","sha256":null,"size":0}\n is 53 bytes
MIN_CHUNK_LINE = 150  # the 64-character hash alone, with its key, is 74 bytes
MEMORY_FRAME = struct.Struct("<I64s")  # payload length, chunk hash (ASCII lowercase hex)
HASH_HEX = 64


class BankFileError(M3Error):
    """A bank file cannot be read: damaged, truncated, hostile, or written by a newer memory3. The message is
    one sentence a user can act on."""


class BankFileCancelled(BankFileError):
    """Reading a bank file was cancelled by the caller (its `cancel` event was set)."""


def check_cancel(cancel: threading.Event | None, sentence: str) -> None:
    """Raise BankFileCancelled(`sentence`) if `cancel` is set: the one check export, reading and import
    make between records."""
    if cancel is not None and cancel.is_set():
        raise BankFileCancelled(sentence)


def align(n: int) -> int:
    """`n` rounded up to the next multiple of ALIGN."""
    return -(-n // ALIGN) * ALIGN


def pack_header(major: int = FORMAT_MAJOR, minor: int = FORMAT_MINOR) -> bytes:
    return HEADER.pack(MAGIC, major, minor, bytes(52))


def pack_footer(manifest_offset: int, manifest: bytes, sha256: bytes) -> bytes:
    return FOOTER.pack(END_MAGIC, manifest_offset, len(manifest), sha256, bytes(8))
