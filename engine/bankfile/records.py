"""The records of the documents and chunks sections, and the rules their names and spans must follow.

Paths in a bank file name documents, never files on this machine: the importer joins them to nothing.
Still, a path that could mean something else somewhere (absolute, `..`, a drive, a backslash, a control
character, an unnormalized form that collides with another) is refused, never rewritten, so that what is
imported is exactly what was exported and two documents can never end up under one name.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from engine.bankfile.layout import (
    MAX_NUMBER,
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    MAX_TEXT_CHARS,
    BankFileError,
)

if TYPE_CHECKING:
    from engine.bankfile.manifest import Manifest, ProfileInfo
    from engine.memory.profiles import Memory

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
# Invisible characters that make one name look like another (bidirectional overrides and marks, the
# zero-width space, word joiner and invisible operators, the soft hyphen, the combining grapheme joiner,
# the Hangul and Mongolian fillers, the byte-order mark). The zero-width joiners (U+200C, U+200D) are
# kept: scripts and emoji need them.
_SPOOFING = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u180e\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u3164\ufeff\uffa0"
)


class DocumentRecord(msgspec.Struct, forbid_unknown_fields=True):
    """One document: `label` names its collection (a folder's base name), `path` is POSIX, relative to it."""

    id: int
    label: str
    path: str
    sha256: str | None
    size: int


class ChunkRecord(msgspec.Struct, forbid_unknown_fields=True):
    """One chunk of a document's text; `hash` is `ingest.chunker.text_hash(text)`, the memory's key."""

    document: int
    ord: int
    hash: str
    text: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    page: int | None


def is_hex64(s: str) -> bool:
    return _HEX64.fullmatch(s) is not None


def check_label(label: str) -> None:
    """A collection label: one path segment under the path rules, without spaces at either end."""
    _check_text(label, "label")
    if label != label.strip():
        raise BankFileError(f"The bank file has a document label with spaces at an end ({label[:80]!r}).")
    if "/" in label:
        raise BankFileError(f"The bank file has a document label with a slash in it ({label[:80]!r}).")
    _check_segments(label, "label")


def check_path(label: str, path: str) -> None:
    """A document's label and path; raises BankFileError for anything but a plain relative NFC path."""
    check_label(label)
    _check_text(path, "path")
    if path.startswith("//"):
        raise BankFileError(f"The bank file has a document path that names a network share ({path[:80]!r}).")
    if path.startswith("/"):
        raise BankFileError(f"The bank file has an absolute document path ({path[:80]!r}).")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise BankFileError(f"The bank file has a document path longer than {MAX_PATH_BYTES} bytes.")
    _check_segments(path, "path")


def _check_text(s: str, what: str) -> None:
    if not s:
        raise BankFileError(f"The bank file has an empty document {what}.")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in s):
        raise BankFileError(
            f"The bank file has a document {what} with a control character in it ({s[:80]!r})."
        )
    if "\\" in s:
        raise BankFileError(f"The bank file has a document {what} with a backslash in it ({s[:80]!r}).")
    if not _SPOOFING.isdisjoint(s):
        raise BankFileError(
            f"The bank file has a document {what} with an invisible direction or spacing mark ({s[:80]!r})."
        )
    if unicodedata.normalize("NFC", s) != s:
        raise BankFileError(
            f"The bank file has a document {what} that is not in Unicode NFC form ({s[:80]!r})."
        )


def _check_segments(s: str, what: str) -> None:
    for segment in s.split("/"):
        if not segment:
            raise BankFileError(f"The bank file has a document {what} with an empty segment ({s[:80]!r}).")
        if segment in (".", ".."):
            raise BankFileError(
                f"The bank file has a document {what} with a '{segment}' segment ({s[:80]!r})."
            )
        if _DRIVE.match(segment):
            raise BankFileError(f"The bank file has a document {what} that names a drive ({s[:80]!r}).")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise BankFileError(
                f"The bank file has a document {what} with a segment longer than {MAX_SEGMENT_BYTES} bytes."
            )


def check_document(doc: DocumentRecord, expected_id: int) -> None:
    """One document's fields (not its uniqueness, which needs the others)."""
    if doc.id != expected_id:
        raise BankFileError(f"The bank file's document {expected_id} is numbered {doc.id}.")
    check_path(doc.label, doc.path)
    if doc.sha256 is not None and not is_hex64(doc.sha256):
        raise BankFileError(f"The bank file's document {doc.id} has a malformed SHA-256.")
    if not 0 <= doc.size <= MAX_NUMBER:
        raise BankFileError(f"The bank file's document {doc.id} has an impossible size.")


def check_chunk(chunk: ChunkRecord) -> None:
    """One chunk's spans and text (not its hash or its place among the others)."""
    where = f"chunk {chunk.ord} of document {chunk.document}"
    if len(chunk.text) > MAX_TEXT_CHARS:
        raise BankFileError(f"The bank file's {where} is longer than {MAX_TEXT_CHARS} characters.")
    # A chunk is its document's text between char_start and char_end; its lines are within it.
    if not 0 <= chunk.char_start <= chunk.char_end <= MAX_NUMBER or (
        chunk.char_end - chunk.char_start != len(chunk.text)
    ):
        raise BankFileError(f"The bank file's {where} has an impossible character span.")
    if not 1 <= chunk.line_start <= chunk.line_end <= MAX_NUMBER or (
        chunk.line_end - chunk.line_start > len(chunk.text)
    ):
        raise BankFileError(f"The bank file's {where} has an impossible line span.")
    if chunk.page is not None and not 1 <= chunk.page <= MAX_NUMBER:
        raise BankFileError(f"The bank file's {where} has an impossible page number.")
    if not is_hex64(chunk.hash):
        raise BankFileError(f"The bank file's {where} has a malformed hash.")


@dataclass(frozen=True)
class MemoryExpectation:
    """What every memory record of a bank must be: made with `profile`, for a model of these dimensions."""

    n_layer: int
    n_kv_head: int
    head_dim: int
    profile: ProfileInfo

    @classmethod
    def of(cls, manifest: Manifest, local: Any = None) -> MemoryExpectation:
        """The manifest's model and profile; with `local` (a model config with n_layer, n_kv_head and
        head_dim), also this model's, which must agree: memories are used only by a model of their shape."""
        m = manifest.model
        dims = (m.n_layer, m.n_kv_head, m.head_dim)
        if local is not None and (local.n_layer, local.n_kv_head, local.head_dim) != dims:
            raise BankFileError(
                f"The bank's memories were made for a model of {m.n_layer} layers, {m.n_kv_head} KV heads "
                f"and head size {m.head_dim}, unlike this one."
            )
        return cls(*dims, profile=manifest.profile)

    def decode(self, key: str, payload: bytes) -> Memory:
        return decode_memory(key, payload, self)


def decode_memory(key: str, payload: bytes, expect: MemoryExpectation) -> Memory:
    """A memories record's payload as a Memory that fits `expect`, or BankFileError. engine.memory.codec
    checks the framing; this checks what the codec cannot know: the shape the model implies, the profile,
    finite values and a token index inside the reference."""
    import torch

    from engine.memory.codec import decode
    from engine.memory.profiles import MAX_REFERENCE_TOKENS, MemoryProfile

    what = f"The bank file's memory for chunk {key[:12]}"
    try:
        memory = decode(payload)
    except Exception as e:  # hostile bytes: whatever the codec trips on is a damaged record
        raise BankFileError(f"{what} is unreadable ({e}).") from e
    profile = expect.profile
    wanted = MemoryProfile(
        name=profile.name,
        layers=profile.layers if isinstance(profile.layers, str) else tuple(profile.layers),
        tokens=profile.tokens,
        bits=profile.bits,
        positions=profile.positions,
        group=profile.group,
    )
    p = memory.profile
    if p != wanted or type(p.tokens) is not type(wanted.tokens):
        raise BankFileError(f"{what} was made with profile {p.name!r}, not the bank's {profile.name!r}.")
    layers = wanted.layer_ids(expect.n_layer)
    if memory.layers != layers:
        raise BankFileError(f"{what} holds layers other than its profile's for this model.")
    if not 1 <= memory.length <= MAX_REFERENCE_TOKENS:
        raise BankFileError(f"{what} has a reference of {memory.length} tokens, outside 1 to 128.")
    shape = (len(layers), expect.n_kv_head, wanted.kept(memory.length), expect.head_dim)
    if memory.k.shape != shape or memory.v.shape != shape:
        raise BankFileError(f"{what} has shape {memory.k.shape}, not {shape}.")
    for q in (memory.k, memory.v):
        for t in (q.codes, q.scales):
            if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise BankFileError(f"{what} holds NaN or infinity.")
    index = memory.index
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= memory.length):
        raise BankFileError(f"{what} keeps token positions outside its reference.")
    return memory
