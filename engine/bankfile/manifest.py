"""The manifest of a bank file: what it holds and what it was made with, as strict msgspec Structs.

Why strict (unknown fields refused, no coercion): a minor version only ever adds sections or fields that a
reader must understand to import correctly, so a field this reader does not know is a reason to stop, not
to skip. A newer minor that adds nothing a reader needs would not need a new minor at all.
The section table's placement in the file is checked by the reader, which knows the file's size.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import msgspec

from engine.bankfile.layout import (
    FORMAT_MAJOR,
    MAX_CHUNKS,
    MAX_DOCUMENTS,
    MAX_HEAD_DIM,
    MAX_LABEL_CHARS,
    MAX_LAYERS,
    MAX_MANIFEST_BYTES,
    MAX_VECTOR_DIM,
    BankFileError,
)
from engine.bankfile.records import check_label, is_hex64

SECTION_NAMES = ("documents", "chunks", "memories", "vectors")
REQUIRED_SECTIONS = ("documents", "chunks")
SECTION_CODEC = {"documents": "zstd", "chunks": "zstd", "memories": "none", "vectors": "none"}


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Scope(_Strict):
    kind: Literal["all", "folder", "documents"]
    value: str | None  # the folder's label, or the glob that chose the documents


class Counts(_Strict):
    documents: int
    chunks: int
    memories: int
    vectors: int


class ModelInfo(_Strict):
    name: str  # the model file's name, no directory
    fingerprint: str  # 64 hex
    tokenizer: str  # 64 hex
    arch: str
    n_layer: int
    n_kv_head: int
    head_dim: int


class ProfileInfo(_Strict):
    """A MemoryProfile as plain fields (layers as a list: JSON has no tuples)."""

    name: str
    layers: str | list[int]
    tokens: int | float | None
    bits: int
    positions: str
    group: int


class EmbedderInfo(_Strict):
    name: str
    dim: int
    hash: str  # 64 hex


class Section(_Strict):
    name: Literal["documents", "chunks", "memories", "vectors"]
    codec: Literal["zstd", "none"]
    offset: int
    length: int  # stored bytes
    raw_length: int  # bytes after decompression (== length for codec "none")
    sha256: str  # of the stored bytes
    records: int


class Manifest(_Strict):
    format: Literal["m3bank"]
    version: tuple[int, int]
    producer: str
    created: str  # ISO-8601, UTC
    scope: Scope
    counts: Counts
    model: ModelInfo
    profile: ProfileInfo
    embedder: EmbedderInfo
    chunker: int
    sections: list[Section]

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


def decode_manifest(buf: bytes) -> Manifest:
    """The manifest in `buf`, schema- and value-checked; BankFileError with one sentence otherwise."""
    if len(buf) > MAX_MANIFEST_BYTES:
        raise BankFileError(f"The bank file's manifest is larger than {MAX_MANIFEST_BYTES} bytes.")
    try:
        manifest = msgspec.json.decode(buf, type=Manifest)
    except msgspec.ValidationError as e:
        raise BankFileError(f"The bank file's manifest does not fit the format ({e}).") from e
    except msgspec.DecodeError as e:
        raise BankFileError(f"The bank file's manifest is not valid JSON ({e}).") from e
    check_manifest(manifest)
    return manifest


def encode_manifest(manifest: Manifest) -> bytes:
    return msgspec.json.encode(manifest)


def check_manifest(m: Manifest) -> None:
    """The value rules the schema cannot say; the writer runs them too, so it never writes what is refused."""
    if m.version[0] != FORMAT_MAJOR or m.version[1] < 0:
        raise BankFileError(f"The bank file's manifest has version {m.version[0]}.{m.version[1]}.")
    _text(m.producer, "producer")
    _created(m.created)
    _scope(m.scope)
    _counts(m.counts)
    _model(m.model)
    _profile(m.profile, m.model.n_layer)
    _text(m.embedder.name, "embedder name")
    if not 1 <= m.embedder.dim <= MAX_VECTOR_DIM:
        raise BankFileError(f"The bank file's embedder dimension {m.embedder.dim} is out of range.")
    _hex(m.embedder.hash, "embedder hash")
    if m.chunker < 0:
        raise BankFileError(f"The bank file's chunker version {m.chunker} is negative.")


def _text(s: str, what: str) -> None:
    if not s or len(s) > MAX_LABEL_CHARS or not s.isprintable():
        raise BankFileError(f"The bank file's {what} is empty, too long or unprintable.")


def _hex(s: str, what: str) -> None:
    if not is_hex64(s):
        raise BankFileError(f"The bank file's {what} is not 64 lowercase hex digits.")


def _created(s: str) -> None:
    try:
        when = datetime.fromisoformat(s)
    except ValueError as e:
        raise BankFileError(f"The bank file's creation time {s[:40]!r} is not an ISO-8601 time.") from e
    if when.utcoffset() != timedelta(0):
        raise BankFileError(f"The bank file's creation time {s[:40]!r} is not in UTC.")


def _scope(scope: Scope) -> None:
    if scope.kind == "all":
        if scope.value is not None:
            raise BankFileError("The bank file's scope 'all' carries a value.")
    elif scope.kind == "folder":
        if scope.value is None:
            raise BankFileError("The bank file's scope 'folder' names no label.")
        check_label(scope.value)
    elif scope.value is not None:  # a glob naming folders is withheld: it may carry the user's name
        _text(scope.value, "scope pattern")


def _counts(c: Counts) -> None:
    for name, value, cap in (
        ("documents", c.documents, MAX_DOCUMENTS),
        ("chunks", c.chunks, MAX_CHUNKS),
        ("memories", c.memories, MAX_CHUNKS),
        ("vectors", c.vectors, MAX_CHUNKS),
    ):
        if not 0 <= value <= cap:
            raise BankFileError(f"The bank file counts {value} {name}, outside 0 to {cap}.")
    if c.memories > c.chunks or c.vectors > c.chunks:
        raise BankFileError("The bank file counts more memories or vectors than chunks.")


def _model(m: ModelInfo) -> None:
    _text(m.name, "model name")
    if "/" in m.name or "\\" in m.name or m.name in (".", ".."):
        raise BankFileError(f"The bank file's model name {m.name[:80]!r} is not a plain file name.")
    _hex(m.fingerprint, "model fingerprint")
    _hex(m.tokenizer, "tokenizer hash")
    _text(m.arch, "model architecture")
    for what, n, cap in (
        ("layer count", m.n_layer, MAX_LAYERS),
        ("KV head count", m.n_kv_head, MAX_LAYERS),
        ("head dimension", m.head_dim, MAX_HEAD_DIM),
    ):
        if not 1 <= n <= cap:
            raise BankFileError(f"The bank file's model {what} {n} is out of range.")


def _profile(p: ProfileInfo, n_layer: int) -> None:
    """The rules of engine.memory.profiles.MemoryProfile, restated so reading a manifest needs no torch."""
    _text(p.name, "profile name")
    if isinstance(p.layers, str):
        if p.layers not in ("all", "first_half"):
            raise BankFileError(f"The bank file's profile names unknown layers {p.layers[:40]!r}.")
    elif not p.layers or len(set(p.layers)) != len(p.layers) or not all(0 <= i < n_layer for i in p.layers):
        raise BankFileError("The bank file's profile lists memory layers the model does not have.")
    if isinstance(p.tokens, float):
        if not 0 < p.tokens <= 1:
            raise BankFileError(f"The bank file's profile keeps a token fraction {p.tokens} outside (0, 1].")
    elif isinstance(p.tokens, int) and not 1 <= p.tokens <= 128:
        raise BankFileError(f"The bank file's profile keeps {p.tokens} tokens, outside 1 to 128.")
    if p.bits not in (4, 8, 16, 32):
        raise BankFileError(f"The bank file's profile has {p.bits} bits, not 4, 8, 16 or 32.")
    if p.positions not in ("sequential", "parallel"):
        raise BankFileError(f"The bank file's profile has unknown positions {p.positions[:40]!r}.")
    if not 1 <= p.group <= MAX_HEAD_DIM:
        raise BankFileError(f"The bank file's profile has group size {p.group}, out of range.")
