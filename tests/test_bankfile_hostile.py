"""Damaged and hostile bank files: each must be refused with one specific sentence (a BankFileError), fast
and in bounded memory, never with another exception or a hang.

`Bank` takes a valid file apart (header, manifest as a dict, each section's stored bytes) and puts it back
together, recomputing offsets, hashes and the footer unless told not to, so each hostile case reaches
exactly the check it targets instead of failing an earlier checksum."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from bank_synthetic import synthetic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bankfile import (
    BAD_PATHS,
    DIM,
    content,
    manifest_fields,
    one_sentence,
    read_all,
    rejects,
    tiny_bank,
    write_bank,
)

from engine.bankfile.layout import FOOTER, HEADER, MAX_LINE_BYTES, BankFileError, align
from engine.bankfile.reader import BankReader, MemoryExpectation
from engine.memory.codec import encode
from ingest.chunker import text_hash

ORDER = ("documents", "chunks", "memories", "vectors")
LONG = os.urandom(2_100).hex()  # 4,200 characters (over the cap) that do not compress past the ratio cap


@dataclass
class Bank:
    """A bank file taken apart, to be changed and reassembled consistently."""

    manifest: dict[str, Any]
    data: dict[str, bytes]  # stored bytes per section
    header: bytes = field(default_factory=lambda: HEADER.pack(b"M3BANK\r\n", 1, 0, bytes(52)))

    @classmethod
    def load(cls, path: Path) -> Bank:
        raw = path.read_bytes()
        _, offset, length, _, _ = FOOTER.unpack(raw[-FOOTER.size :])
        manifest = json.loads(raw[offset : offset + length])
        data = {s["name"]: raw[s["offset"] : s["offset"] + s["length"]] for s in manifest["sections"]}
        return cls(manifest, data, raw[: HEADER.size])

    def section(self, name: str) -> dict[str, Any]:
        return next(s for s in self.manifest["sections"] if s["name"] == name)

    def set_section(
        self, name: str, stored: bytes, raw_length: int | None = None, records: int | None = None
    ):
        """Replace a section's stored bytes; its length, hash and (when given) raw size and records follow."""
        self.data[name] = stored
        s = self.section(name)
        s["raw_length"] = len(stored) if raw_length is None else raw_length
        if records is not None:
            s["records"] = records
            self.manifest["counts"][name] = records

    def set_lines(self, name: str, lines: list[bytes], records: int | None = None) -> None:
        """A zstd section of these JSON lines (records = number of lines unless given)."""
        raw = b"".join(line + b"\n" for line in lines)
        self.set_section(
            name, zstandard.compress(raw, 3), len(raw), len(lines) if records is None else records
        )

    def build(self, place: bool = True, rehash: bool = True) -> bytes:
        """The file: sections laid out canonically (unless place=False keeps the manifest's offsets and
        lengths), section hashes recomputed (unless rehash=False), then manifest and footer."""
        out = bytearray(self.header)
        sections = self.manifest["sections"]
        if place:
            for s in sorted(sections, key=lambda s: ORDER.index(s["name"])):
                out += bytes(align(len(out)) - len(out))
                s["offset"], s["length"] = len(out), len(self.data[s["name"]])
                if rehash:
                    s["sha256"] = hashlib.sha256(self.data[s["name"]]).hexdigest()
                out += self.data[s["name"]]
        else:
            sane = [s for s in sections if s["offset"] >= 0 and s["offset"] + s["length"] < 2**30]
            out += bytes(max([HEADER.size] + [s["offset"] + s["length"] for s in sane]) - len(out))
            for s in sane:
                stored = self.data.get(s["name"], b"")[: s["length"]]
                out[s["offset"] : s["offset"] + len(stored)] = stored
        out += bytes(align(len(out)) - len(out))
        return bytes(out) + manifest_tail(len(out), json.dumps(self.manifest).encode())

    def write(self, path: Path, **kw: Any) -> Path:
        path.write_bytes(self.build(**kw))
        return path


def manifest_tail(offset: int, text: bytes, sha: bytes | None = None) -> bytes:
    """Manifest, padding and a footer that points at it, for a manifest starting at `offset`."""
    pad = bytes(align(len(text)) - len(text))
    sha = hashlib.sha256(text).digest() if sha is None else sha
    return text + pad + FOOTER.pack(b"M3BKEND\n", offset, len(text), sha, bytes(8))


@pytest.fixture
def bank(tmp_path: Path) -> tuple[Path, Bank]:
    path = write_bank(tmp_path / "good.m3bank")
    return path, Bank.load(path)


def test_the_rig_reassembles_a_valid_bank_byte_for_byte(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    path, b = bank
    again = b.write(tmp_path / "again.m3bank")
    assert read_all(again) == read_all(path)


# Truncation and single flipped bytes


def test_truncation_at_every_boundary_is_refused(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    path, b = bank
    raw = path.read_bytes()
    cuts = {0, 1, 8, 63, 64, 65, len(raw) - 64, len(raw) - 1}
    for s in b.manifest["sections"]:
        cuts |= {s["offset"], s["offset"] + 1, s["offset"] + s["length"] // 2, s["offset"] + s["length"]}
    _, m_offset, m_length, _, _ = FOOTER.unpack(raw[-FOOTER.size :])
    cuts |= {m_offset, m_offset + m_length // 2, m_offset + m_length}
    for cut in sorted(cuts):
        (tmp_path / "cut.m3bank").write_bytes(raw[:cut])
        rejects(tmp_path / "cut.m3bank", r"too short|truncated|footer")


def test_a_flipped_byte_in_each_region_is_refused(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    path, b = bank
    raw = path.read_bytes()
    _, m_offset, m_length, _, _ = FOOTER.unpack(raw[-FOOTER.size :])
    places = {
        "section": [s["offset"] + s["length"] // 2 for s in b.manifest["sections"]],
        "header": [0, 8, 9, 10, 12, 63],
        "manifest": [m_offset, m_offset + m_length - 1],
        "footer": [len(raw) - 64 + i for i in (0, 8, 16, 24, 40, 56, 63)],
        "padding": [m_offset + m_length, m_offset - 1, b.section("chunks")["offset"] - 1],
    }
    for where, offsets in places.items():
        for at in offsets:
            bad = bytearray(raw)
            bad[at] ^= 0x20
            (tmp_path / "flip.m3bank").write_bytes(bad)
            message = rejects(tmp_path / "flip.m3bank", r"")
            if where == "section":
                assert "section" in message, message


def test_every_single_byte_flip_of_a_small_bank_is_refused(tmp_path: Path) -> None:
    raw = tiny_bank(tmp_path / "tiny.m3bank").read_bytes()
    assert len(raw) < 4096, len(raw)
    target = tmp_path / "flip.m3bank"
    for at in range(len(raw)):
        bad = bytearray(raw)
        bad[at] ^= 0x01 if at % 2 else 0x80
        target.write_bytes(bad)
        with pytest.raises(BankFileError) as info:
            BankReader.open(target).verify()
        assert one_sentence(str(info.value)), (at, str(info.value))


# The footer and the section table


def test_footer_that_points_anywhere_else_is_refused(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    path, _ = bank
    raw = path.read_bytes()
    magic, offset, length, sha, zero = FOOTER.unpack(raw[-FOOTER.size :])
    for o, n in [(offset + 64, length), (offset - 64, length), (2**64 - 64, length), (offset, 2**64 - 1),
                 (2**64 - 64, 128), (offset, 2 << 20), (offset + 1, length)]:  # fmt: skip
        (tmp_path / "f.m3bank").write_bytes(raw[:-64] + FOOTER.pack(magic, o, n, sha, zero))
        rejects(tmp_path / "f.m3bank", r"manifest")


def test_overlapping_sections_are_refused(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    b.build()
    b.section("chunks")["offset"] = b.section("documents")["offset"]
    rejects(b.write(tmp_path / "x.m3bank", place=False), r"overlaps")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("offset", 2**64 - 8, "64-byte boundary"),
        ("offset", 2**64 - 64, "outside the file's data area"),
        ("offset", 2**70, "outside the file's data area"),
        ("length", 2**64 - 1, "outside the file's data area"),
        ("length", 10 * 10**9, "outside the file's data area"),
        ("offset", -64, "negative"),
        ("records", -1, "negative"),
    ],
)
def test_wrapping_and_huge_offsets_are_refused(
    bank, tmp_path: Path, key: str, value: int, match: str
) -> None:
    _, b = bank
    b.build()
    b.section("memories")[key] = value
    rejects(b.write(tmp_path / "x.m3bank", place=False), match)


def test_a_declared_10_gb_section_is_refused(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    b.section("chunks")["raw_length"] = 10 * 10**9
    rejects(b.write(tmp_path / "x.m3bank"), r"over the 4294967296-byte cap")
    b.section("chunks")["raw_length"] = len(b.data["chunks"]) * 65
    rejects(b.write(tmp_path / "x.m3bank"), r"compress more than 64 to 1")


def test_gaps_must_be_exact_padding_and_zero(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    raw = b.build()
    gap = b.section("chunks")["offset"] - 1
    assert gap > b.section("documents")["offset"] + b.section("documents")["length"] - 1
    bad = bytearray(raw)
    bad[gap] = 1
    (tmp_path / "x.m3bank").write_bytes(bad)
    rejects(tmp_path / "x.m3bank", r"non-zero padding before the chunks section")
    b.section("vectors")["offset"] += 64
    rejects(b.write(tmp_path / "y.m3bank", place=False), r"unaccounted bytes before its vectors section")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m["sections"].pop(0), r"no documents section"),
        (lambda m: m["sections"].append(dict(m["sections"][2])), r"lists its memories section twice"),
        (lambda m: m["sections"][0].update(name="extras"), r"does not fit the format"),
        (lambda m: m["sections"][0].update(codec="none"), r"uses codec none, not zstd"),
        (lambda m: m["sections"][2].update(codec="zstd"), r"uses codec zstd, not none"),
        (lambda m: m["sections"][1].update(sha256="X" * 64), r"malformed SHA-256"),
        (lambda m: m.update(extra=1), r"unknown field `extra`"),
        (lambda m: m["model"].update(name="../models/x.gguf"), r"not a plain file name"),
        (lambda m: m["model"].update(n_layer=2**40), r"layer count"),
        (lambda m: m["embedder"].update(dim=0), r"embedder dimension"),
        (lambda m: m.update(created="yesterday"), r"not an ISO-8601 time"),
        (lambda m: m.update(created="2026-01-01T00:00:00+02:00"), r"not in UTC"),
        (lambda m: m["profile"].update(layers=[0, 99]), r"memory layers"),
        (lambda m: m["scope"].update(kind="folder", value=".."), r"'\.\.' segment"),
        (
            lambda m: m["counts"].update(documents=2),
            r"documents section holds 3 records but the manifest counts 2",
        ),
        (lambda m: m["counts"].update(documents=2_000_000), r"2000000 documents"),
        (lambda m: m.update(version=[1, 1]), r"header says format 1\.0 but its manifest says 1\.1"),
        (lambda m: m.update(version=[2, 0]), r"manifest has version 2\.0"),
        (lambda m: m["sections"].pop(3), r"counts 6 vectors but has no vectors section"),
    ],
)
def test_bad_manifests_are_refused(bank, tmp_path: Path, change, match: str) -> None:
    _, b = bank
    b.build()
    change(b.manifest)
    rejects(b.write(tmp_path / "x.m3bank", place=False), match)


def test_unknown_major_version_names_the_upgrade(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    b.header = HEADER.pack(b"M3BANK\r\n", 2, 0, bytes(52))
    message = rejects(b.write(tmp_path / "x.m3bank"), r"")
    assert message == "This bank was written by a newer memory3 (format 2.0); upgrade memory3 to import it."


def test_a_newer_minor_is_read(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    path, b = bank
    b.header = HEADER.pack(b"M3BANK\r\n", 1, 7, bytes(52))
    b.manifest["version"] = [1, 7]
    assert read_all(b.write(tmp_path / "x.m3bank"))["chunks"] == read_all(path)["chunks"]


def test_not_a_bank_file(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(os.urandom(4096))
    rejects(tmp_path / "junk", r"not a memory3 bank file")
    (tmp_path / "short").write_bytes(b"M3BANK\r\n")
    rejects(tmp_path / "short", r"too short")
    rejects(tmp_path / "missing", r"cannot be read")
    rejects(tmp_path, r"cannot be read|not a regular file")
    os.mkfifo(tmp_path / "fifo")
    rejects(tmp_path / "fifo", r"not a regular file")


# Decompression bounds


def test_a_frame_that_expands_past_its_declared_size_is_refused(bank, tmp_path: Path) -> None:
    _, b = bank
    s = b.section("chunks")
    s["raw_length"] -= 1
    rejects(b.write(tmp_path / "x.m3bank"), r"chunks section decompresses past its declared size")
    s["raw_length"] += 2
    rejects(b.write(tmp_path / "y.m3bank"), r"chunks section is shorter than its declared size")


def test_a_real_zstd_bomb_is_stopped_early(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    """1 GB of zeros in about 32 KB: the reader must stop within the declared size, never inflate it."""
    _, b = bank
    c = zstandard.ZstdCompressor(level=1).compressobj()
    zeros = bytes(1 << 24)
    bomb = b"".join([c.compress(zeros) for _ in range(64)] + [c.flush()])
    assert len(bomb) < 64 << 10
    b.set_section("chunks", bomb, raw_length=len(bomb) * 64, records=6)
    path = b.write(tmp_path / "bomb.m3bank")
    tracemalloc.start()
    start = time.monotonic()
    rejects(path, rf"decompresses past its declared size|over {MAX_LINE_BYTES} bytes")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.monotonic() - start < 2 and peak < 8 << 20, (time.monotonic() - start, peak)


def test_a_million_tiny_records_are_refused_fast(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    # Claimed: a table with a million records in a few bytes is refused on opening.
    b.section("chunks")["records"] = b.manifest["counts"]["chunks"] = 1_000_000
    rejects(b.write(tmp_path / "claim.m3bank"), r"claims 1000000 records, more than its \d+ bytes")
    # Held: three valid records declared, a million more in the stream: refused at the fourth.
    _, chunks = content(1, 3)
    lines = [json.dumps(c).encode() for c in chunks]
    junk = os.urandom(1_000_000 * 3).hex().encode()
    lines += [junk[i : i + 6] for i in range(0, len(junk), 6)]
    b.set_lines("chunks", lines, records=3)
    b.manifest["counts"]["documents"] = b.section("documents")["records"]
    b.set_section("memories", b"", records=0)
    b.set_section("vectors", b"", records=0)
    path = b.write(tmp_path / "held.m3bank")
    tracemalloc.start()
    start = time.monotonic()
    rejects(path, r"chunks section holds more than its 3 records")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.monotonic() - start < 1 and peak < 8 << 20, (time.monotonic() - start, peak)


def test_an_overlong_line_is_refused(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    b.set_lines("documents", [os.urandom(MAX_LINE_BYTES).hex().encode()], records=3)
    rejects(b.write(tmp_path / "x.m3bank"), rf"record over {MAX_LINE_BYTES} bytes")


# Records


def _bank_with(tmp_path: Path, docs: list[dict], chunks: list[dict], **kw: Any) -> Path:
    return write_bank(tmp_path / "x.m3bank", docs, chunks, memories=[], vectors=[], **kw)


@pytest.mark.parametrize("path", list(BAD_PATHS))
def test_every_bad_path_kind_in_a_file_is_refused(tmp_path: Path, path: str) -> None:
    docs, chunks = content()
    docs[1]["path"] = path
    rejects(_bank_with(tmp_path, docs, chunks), BAD_PATHS[path])


def test_duplicate_documents_are_refused(tmp_path: Path) -> None:
    docs, chunks = content()
    docs[2]["path"] = docs[0]["path"]
    rejects(_bank_with(tmp_path, docs, chunks), r"lists document notes/dir/doc 0\.md twice")
    docs, chunks = content()
    docs[2]["id"] = 7
    rejects(_bank_with(tmp_path, docs, chunks), r"document 2 is numbered 7")


def test_duplicate_chunk_hashes_with_different_text_are_refused(tmp_path: Path) -> None:
    docs, chunks = content()
    chunks[3]["hash"] = chunks[0]["hash"]
    rejects(_bank_with(tmp_path, docs, chunks), r"chunk 1 of document 1 has a hash that is not its text's")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c[1].update(ord=5), r"chunk 5 of document 0 comes where chunk 1 should"),
        (lambda c: c.__setitem__(slice(0, 4), c[2:4] + c[0:2]), r"chunks of document 0 are out of order"),
        (lambda c: c[0].update(document=9), r"chunk of document 9, which it lacks"),
        (lambda c: c[0].update(char_start=50, char_end=10), r"impossible character span"),
        (lambda c: c[0].update(line_start=0), r"impossible line span"),
        (lambda c: c[0].update(page=0), r"impossible page number"),
        (lambda c: c[0].update(page=2**100), r"impossible page number"),
        (lambda c: c[0].update(line_start=2**63, line_end=2**63), r"impossible line span"),
        (lambda c: c[0].update(line_end=10_000), r"impossible line span"),  # more lines than characters
        (lambda c: c[0].update(char_end=c[0]["char_end"] + 1), r"impossible character span"),
        (lambda c: c[0].update(text=LONG, hash=text_hash(LONG)), r"longer than 4096"),
        (lambda c: c[0].update(hash="Z" * 64), r"malformed hash"),
        (lambda c: c[0].update(ord="0"), r"does not fit the format"),
        (lambda c: c[0].update(extra=True), r"unknown field `extra`"),
    ],
)
def test_bad_chunks_are_refused(tmp_path: Path, change, match: str) -> None:
    docs, chunks = content()
    change(chunks)
    rejects(_bank_with(tmp_path, docs, chunks), match)


def test_memory_framing_is_checked(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    _, chunks = content()
    h = chunks[0]["hash"]

    def frame(n: int, key: str, payload: bytes = b"") -> bytes:
        return struct.pack("<I", n) + key.encode() + payload

    cases = [
        (frame(16 << 20 | 1, h), 1, r"memory record of 16777217 bytes, over the cap"),
        (frame(3, "f" * 64, b"abc"), 1, r"memory for chunk ffffffffffff, which it does not contain"),
        (frame(3, h, b"abc") * 2, 2, r"two memory records for chunk"),
        (frame(3, h.upper(), b"abc"), 1, r"malformed chunk hash"),
        (frame(300, h, b"abc"), 1, r"memories section ends inside a record"),
        (frame(3, h, b"abcd"), 1, r"memories section has bytes after its last record"),
    ]
    for stored, records, match in cases:
        b.set_section("memories", stored, records=records)
        rejects(b.write(tmp_path / "x.m3bank"), match)


def test_memory_payloads_are_checked_with_an_expectation(bank, tmp_path: Path) -> None:
    _, b = bank
    _, chunks = content()
    bad = synthetic(0)
    bad.k.scales[0, 0, 0, 0] = float("nan")
    nan = encode(bad)
    meta_len = struct.unpack_from("<I", nan, 6)[0]
    meta = json.loads(nan[10 : 10 + meta_len])
    meta["v"]["codes"][1] = meta["v"]["shape"] = [2**31, 2**31, 2**31, 128]
    text = json.dumps(meta).encode()
    overflow = encode(synthetic(1))[:6] + struct.pack("<I", len(text)) + text
    for payload, match in [(nan, r"NaN or infinity"), (overflow, r"unreadable")]:
        stored = struct.pack("<I", len(payload)) + chunks[0]["hash"].encode() + payload
        b.set_section("memories", stored, records=1)
        reader = BankReader.open(b.write(tmp_path / "x.m3bank"))
        reader.verify()  # framing alone is fine: payloads are the importer's to decode
        with pytest.raises(BankFileError, match=match) as info:
            reader.verify(expect=MemoryExpectation.of(reader.manifest))
        assert one_sentence(str(info.value))


def test_vectors_are_checked(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    _, chunks = content()
    good = np.zeros(DIM, dtype="<f4")
    nan = good.copy()
    nan[1] = np.nan
    h = chunks[0]["hash"]
    cases = [
        (h.encode() + nan.tobytes(), 1, r"vector for chunk .* holds NaN or infinity"),
        ((h.encode() + good.tobytes()) * 2, 2, r"two vector records"),
        (b"0" * 64 + good.tobytes(), 1, r"which it does not contain"),
        (h.encode() + good.tobytes() + b"x", 1, r"not 1 vectors of dimension 4"),
    ]
    for stored, records, match in cases:
        b.set_section("vectors", stored, records=records)
        rejects(b.write(tmp_path / "x.m3bank"), match)


def test_section_records_that_disagree_with_content(bank: tuple[Path, Bank], tmp_path: Path) -> None:
    _, b = bank
    docs, _ = content()
    b.set_lines("documents", [json.dumps(d).encode() for d in docs], records=4)
    b.section("documents")["raw_length"] = len(b"".join(json.dumps(d).encode() + b"\n" for d in docs))
    rejects(b.write(tmp_path / "x.m3bank"), r"documents section holds 3 records, not 4")
    b.set_lines("documents", [json.dumps(d).encode() for d in docs], records=2)
    rejects(b.write(tmp_path / "x.m3bank"), r"documents section holds more than its 2 records")


# Fuzzing


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict]:
    path = tiny_bank(tmp_path_factory.mktemp("fuzz") / "tiny.m3bank")
    return path.read_bytes(), read_all(path)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 4095), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 4095), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 4095), st.binary(min_size=1, max_size=80)),
    st.tuples(st.just("delete"), st.integers(0, 4095), st.integers(1, 80)),
    st.tuples(st.just("overwrite"), st.integers(0, 4095), st.binary(min_size=1, max_size=80)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_fuzzed_banks_read_identically_or_raise_bank_file_error(tiny, tmp_path: Path, mutations) -> None:
    raw, expected = tiny
    data = bytearray(raw)
    for kind, at, arg in mutations:
        at %= len(data) + 1
        if kind == "flip" and at < len(data):
            data[at] ^= arg
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = arg
        elif kind == "delete":
            del data[at : at + arg]
        elif kind == "overwrite":
            data[at : at + len(arg)] = arg
    path = tmp_path / "fuzz.m3bank"
    path.write_bytes(bytes(data))
    try:
        got = read_all(path)
    except BankFileError as e:
        assert one_sentence(str(e)), str(e)
    else:
        assert got == expected


__all__ = ["Bank", "manifest_fields"]
