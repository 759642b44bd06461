"""The .m3bank format: writing and reading back every section, the writer's atomicity, the path rules and
the memory checks. Hostile files are in test_bankfile_hostile.py; the helpers here build small banks."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import threading
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import torch
from bank_synthetic import same, synthetic

from engine.bankfile.layout import (
    ALIGN,
    FOOTER,
    HEADER,
    BankFileCancelled,
    BankFileError,
)
from engine.bankfile.manifest import decode_manifest
from engine.bankfile.reader import BankReader, MemoryExpectation
from engine.bankfile.records import check_label, check_path
from engine.bankfile.writer import BankWriter
from engine.memory.codec import encode
from ingest.chunker import text_hash

DIM = 4


def manifest_fields(**overrides: Any) -> dict[str, Any]:
    """Everything `finish` needs, for the synthetic memories' model (6 layers, 2 KV heads, head size 128)."""
    fields: dict[str, Any] = {
        "producer": "memory3 test",
        "scope": {"kind": "all", "value": None},
        "model": {
            "name": "tiny.gguf",
            "fingerprint": "a" * 64,
            "tokenizer": "b" * 64,
            "arch": "gemma3",
            "n_layer": 6,
            "n_kv_head": 2,
            "head_dim": 128,
        },
        "profile": {
            "name": "dense",
            "layers": "all",
            "tokens": None,
            "bits": 8,
            "positions": "sequential",
            "group": 32,
        },
        "embedder": {"name": "test-embedder", "dim": DIM, "hash": "c" * 64},
        "chunker": 1,
    }
    fields.update(overrides)
    return fields


def content(n_docs: int = 3, per_doc: int = 2) -> tuple[list[dict], list[dict]]:
    docs = [
        {"id": i, "label": "notes", "path": f"dir/doc {i}.md", "sha256": f"{i:064x}", "size": 100 + i}
        for i in range(n_docs)
    ]
    chunks = []
    for d in range(n_docs):
        for o in range(per_doc):
            text = f"Document {d}, chunk {o}: naïve café text.\n"
            chunks.append(
                {
                    "document": d,
                    "ord": o,
                    "hash": text_hash(text),
                    "text": text,
                    "char_start": 40 * o,
                    "char_end": 40 * o + len(text),
                    "line_start": o + 1,
                    "line_end": o + 1,
                    "page": None if d % 2 else o + 1,
                }
            )
    return docs, chunks


def write_bank(
    path: Path,
    docs: list[dict] | None = None,
    chunks: list[dict] | None = None,
    memories: list[tuple[str, bytes]] | None = None,
    vectors: list[tuple[str, np.ndarray]] | None = None,
    **overrides: Any,
) -> Path:
    """A bank with the given records. By default two real memories and a tiny vector per chunk; [] writes
    an empty section, False leaves the section out."""
    if docs is None or chunks is None:
        docs, chunks = content()
    if memories is None:
        memories = [(c["hash"], encode(synthetic(i))) for i, c in enumerate(chunks[:2])]
    if vectors is None:
        vectors = [(c["hash"], np.arange(DIM, dtype=np.float32) + i) for i, c in enumerate(chunks)]
    with BankWriter(path) as w:
        w.add_section("documents", docs)
        w.add_section("chunks", chunks)
        if memories is not False:
            w.add_section("memories", memories)
        if vectors is not False:
            w.add_section("vectors", vectors)
        w.finish(**manifest_fields(**overrides))
    return path


def tiny_bank(path: Path) -> Path:
    """The smallest bank with every section (fake memory payloads): for every-byte and fuzz tests."""
    docs, chunks = content(n_docs=2, per_doc=1)
    memories = [(chunks[0]["hash"], b"MEMC-fake-payload")]
    vectors = [(c["hash"], np.full(DIM, 0.5, dtype=np.float32)) for c in chunks]
    return write_bank(path, docs, chunks, memories, vectors)


def read_all(path: Path) -> dict[str, list]:
    """Everything in the bank, after a full verify."""
    reader = BankReader.open(path)
    reader.verify()
    return {
        "manifest": [msgspec.to_builtins(reader.manifest)],
        "documents": [msgspec.to_builtins(d) for d in reader.documents()],
        "chunks": [msgspec.to_builtins(c) for c in reader.chunks()],
        "memories": list(reader.memories()),
        "vectors": [(k, v.tobytes()) for k, v in reader.vectors()],
    }


def one_sentence(message: str) -> bool:
    """A user-facing message: capitalized, one line, one sentence ending in a period."""
    return (
        message[:1].isupper()
        and message.endswith(".")
        and "\n" not in message
        and re.search(r"[.!?] [A-Z]", message) is None
    )


def rejects(path: Path, match: str) -> str:
    """Open and verify `path`; assert it raises BankFileError whose one sentence matches `match`."""
    with pytest.raises(BankFileError) as info:
        BankReader.open(path).verify()
    message = str(info.value)
    assert one_sentence(message), message
    assert re.search(match, message), message
    return message


# Round trips


def test_round_trip_every_section(tmp_path: Path) -> None:
    docs, chunks = content()
    memories = [(c["hash"], encode(synthetic(i))) for i, c in enumerate(chunks[:3])]
    vectors = [(c["hash"], np.linspace(-1, 1, DIM, dtype=np.float32) * i) for i, c in enumerate(chunks)]
    path = write_bank(tmp_path / "a.m3bank", docs, chunks, memories, vectors)
    reader = BankReader.open(path)
    seen: list[tuple[str, int, int]] = []
    reader.verify(on_progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert [msgspec.to_builtins(d) for d in reader.documents()] == docs
    assert [msgspec.to_builtins(c) for c in reader.chunks()] == chunks
    assert list(reader.memories()) == memories
    got = list(reader.vectors())
    assert [k for k, _ in got] == [k for k, _ in vectors]
    assert all(
        np.array_equal(a, b) and a.dtype == np.float32 for (_, a), (_, b) in zip(got, vectors, strict=True)
    )
    m = reader.manifest
    assert (m.counts.documents, m.counts.chunks, m.counts.memories, m.counts.vectors) == (3, 6, 3, 6)
    assert m.version == (1, 0) and m.format == "m3bank"
    total = sum(s.length for s in m.sections)
    assert seen[-1] == ("vectors", total, total)
    stages = [stage for stage, _, _ in seen]
    assert stages == sorted(stages, key=["documents", "chunks", "memories", "vectors"].index)
    expect = MemoryExpectation.of(m)
    for i, (key, payload) in enumerate(reader.memories()):
        assert same(expect.decode(key, payload), synthetic(i))


def test_optional_sections_and_empty_sections(tmp_path: Path) -> None:
    path = write_bank(tmp_path / "a.m3bank", memories=False, vectors=False)
    assert read_all(path)["memories"] == [] and read_all(path)["vectors"] == []
    path = write_bank(tmp_path / "b.m3bank", content(0, 0)[0], [], memories=[], vectors=[])
    assert read_all(path)["documents"] == []


def test_layout_is_aligned_and_footer_points_at_manifest(tmp_path: Path) -> None:
    path = write_bank(tmp_path / "a.m3bank")
    data = path.read_bytes()
    assert data[:8] == b"M3BANK\r\n" and struct.unpack_from("<HH", data, 8) == (1, 0)
    assert len(data) % ALIGN == 0
    magic, offset, length, sha, _ = FOOTER.unpack(data[-FOOTER.size :])
    assert magic == b"M3BKEND\n" and hashlib.sha256(data[offset : offset + length]).digest() == sha
    manifest = decode_manifest(data[offset : offset + length])
    assert all(s.offset % ALIGN == 0 for s in manifest.sections)
    assert manifest.sections[0].offset == HEADER.size


def test_verify_on_record_and_cancel(tmp_path: Path) -> None:
    path = write_bank(tmp_path / "a.m3bank")
    reader = BankReader.open(path)
    records: list[tuple[str, object]] = []
    expect = MemoryExpectation.of(reader.manifest)
    reader.verify(on_record=lambda section, r: records.append((section, r)), expect=expect)
    assert [s for s, _ in records].count("memories") == 2
    assert all(isinstance(r, str) for s, r in records if s in ("memories", "vectors"))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BankFileCancelled) as info:
        reader.verify(cancel=cancel)
    assert one_sentence(str(info.value))


def test_memories_alone_read_chunks_first(tmp_path: Path) -> None:
    path = write_bank(tmp_path / "a.m3bank")
    reader = BankReader.open(path)
    assert len(list(reader.memories())) == 2


# The writer


def test_writer_never_leaves_the_final_name_partial(tmp_path: Path) -> None:
    target = tmp_path / "out.m3bank"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), BankWriter(target) as w:
        w.add_section("documents", content()[0])
        assert w.partial.name.startswith(".out.m3bank.partial-") and w.partial.exists()
        assert w.bytes_written > HEADER.size
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.m3bank"]
    with BankWriter(target) as w:
        w.add_section("documents", content()[0])
        w.abort()
    assert os.listdir(tmp_path) == ["out.m3bank"]
    write_bank(target)
    assert os.listdir(tmp_path) == ["out.m3bank"] and read_all(target)["documents"]


def test_writer_refuses_a_bad_manifest_or_section(tmp_path: Path) -> None:
    target = tmp_path / "out.m3bank"
    with pytest.raises(BankFileError), BankWriter(target) as w:
        w.add_section("documents", [])
        w.finish(**manifest_fields())  # no chunks section
    with pytest.raises(BankFileError), BankWriter(target) as w:
        w.add_section("documents", [])
        w.add_section("chunks", [])
        w.finish(**manifest_fields(model={**manifest_fields()["model"], "name": "/abs/model.gguf"}))
    with pytest.raises(ValueError), BankWriter(target) as w:
        w.add_section("documents", [], codec="none")
    with pytest.raises(ValueError), BankWriter(target) as w:
        w.add_section("extras", [])
    assert not target.exists() and os.listdir(tmp_path) == []


# Path rules

BAD_PATHS = {
    "": "empty",
    "/etc/passwd": "absolute",
    "//server/share/x": "network share",
    "a/../b": "'\\.\\.' segment",
    "../x": "'\\.\\.' segment",
    "./x": "'\\.' segment",
    "a//b": "empty segment",
    "a/": "empty segment",
    "a\\b": "backslash",
    "C:/x": "drive",
    "C:x": "drive",
    "a\x00b": "control character",
    "a\nb": "control character",
    "a\x7fb": "control character",
    "cafe\u0301.md": "NFC",
    "x" * 256: "segment longer",
    "/".join(["x" * 200] * 6): "longer than 1024",
    "invoice\u202egnp.exe": "invisible",  # a right-to-left override: reads as invoiceexe.png
    "no\u200btes/a.md": "invisible",  # a zero-width space: looks like notes/a.md
    "no\u2060tes/a.md": "invisible",  # a word joiner
    "no\u00adtes/a.md": "invisible",  # a soft hyphen
    "\u115fnotes/a.md": "invisible",  # a Hangul filler
}


@pytest.mark.parametrize("path", list(BAD_PATHS))
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(BankFileError) as info:
        check_path("notes", path)
    assert one_sentence(str(info.value)) and re.search(BAD_PATHS[path], str(info.value)), str(info.value)


@pytest.mark.parametrize(
    "label",
    ["", "a/b", "..", ".", "a\\b", "C:", "x\x01", "e\u0301", "y" * 256, "  ", " lead", "trail ", "a\u202eb"],
)
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(BankFileError) as info:
        check_label(label)
    assert one_sentence(str(info.value))


def test_good_paths_pass() -> None:
    for path in [
        "a.md",
        "dir/sub/naïve café.pdf",
        "notes:v2.md",
        ".hidden/a",
        "a..b",
        "日本語/文書.txt",
        "می\u200cخواهم.md",
    ]:
        check_path("notes", path)
    check_label("My Notes")


# Memory records


def manifest_bytes(**profile: Any) -> bytes:
    """A manifest of an empty bank with these profile fields changed (for memory checks alone)."""
    fields = manifest_fields(profile={**manifest_fields()["profile"], **profile})
    fields.update(
        format="m3bank",
        version=[1, 0],
        created="2026-01-02T03:04:05Z",
        counts=dict.fromkeys(("documents", "chunks", "memories", "vectors"), 0),
        sections=[],
    )
    return msgspec.json.encode(fields)


def expectation(**profile: Any) -> MemoryExpectation:
    return MemoryExpectation.of(decode_manifest(manifest_bytes(**profile)))


def test_decode_memory_accepts_a_real_memory() -> None:
    assert same(expectation().decode("k" * 64, encode(synthetic(3))), synthetic(3))


def test_decode_memory_refuses_other_profiles_and_shapes() -> None:
    payload = encode(synthetic(1))
    with pytest.raises(BankFileError, match="profile"):
        expectation(bits=4).decode("k" * 64, payload)
    exp = expectation()
    with pytest.raises(BankFileError, match="shape"):
        MemoryExpectation(6, 4, 128, exp.profile).decode("k" * 64, payload)
    with pytest.raises(BankFileError, match="layers"):
        MemoryExpectation(8, 2, 128, exp.profile).decode("k" * 64, payload)
    with pytest.raises(BankFileError, match="KV heads"):
        local = type("Config", (), {"n_layer": 6, "n_kv_head": 1, "head_dim": 128})()
        MemoryExpectation.of(decode_manifest(manifest_bytes()), local=local)


def test_decode_memory_refuses_nan_scales_and_bad_index() -> None:
    memory = synthetic(2)
    memory.k.scales[0, 0, 0, 0] = float("nan")
    with pytest.raises(BankFileError, match="NaN") as info:
        expectation().decode("k" * 64, encode(memory))
    assert one_sentence(str(info.value))
    memory = synthetic(2)
    memory.v.scales[1, 1, 1, 1] = float("inf")
    with pytest.raises(BankFileError, match="NaN"):
        expectation().decode("k" * 64, encode(memory))
    memory = synthetic(2)
    memory.index[0, 0, 0] = memory.length
    with pytest.raises(BankFileError, match="positions"):
        expectation().decode("k" * 64, encode(memory))
    memory = synthetic(2)
    memory.index[0, 0, 0] = -1
    with pytest.raises(BankFileError, match="positions"):
        expectation().decode("k" * 64, encode(memory))


def test_decode_memory_refuses_an_overflowing_shape() -> None:
    payload = encode(synthetic(0))
    meta_len = struct.unpack_from("<I", payload, 6)[0]
    meta = msgspec.json.decode(payload[10 : 10 + meta_len])
    meta["k"]["codes"][1] = [2**31, 2**31, 2**31, 128]
    meta["k"]["shape"] = [2**31, 2**31, 2**31, 128]
    text = msgspec.json.encode(meta)
    bad = payload[:6] + struct.pack("<I", len(text)) + text + payload[10 + meta_len :]
    with pytest.raises(BankFileError, match="unreadable") as info:
        expectation().decode("k" * 64, bad)
    assert one_sentence(str(info.value))
    for junk in (
        b"",
        b"MEMC",
        b"MEMC\x01\x00\xff\xff\xff\xff",
        b"MEMC\x01\x00\x05\x00\x00\x00[[[[[",
        os.urandom(300),
    ):
        with pytest.raises(BankFileError):
            expectation().decode("k" * 64, junk)
    deep = b"[" * 100_000
    with pytest.raises(BankFileError):
        expectation().decode("k" * 64, b"MEMC\x01\x00" + struct.pack("<I", len(deep)) + deep)


def test_decode_memory_float_codes_are_checked() -> None:
    from engine.memory.profiles import Memory, MemoryProfile
    from engine.memory.quantization import QTensor

    profile = MemoryProfile("dense-fp16", bits=16)
    shape = (6, 2, 4, 128)
    codes = torch.zeros(shape, dtype=torch.float16)
    codes[0, 0, 0, 0] = float("inf")
    q = QTensor(codes, None, 16, 32, shape)
    index = torch.zeros(shape[:-1], dtype=torch.int16)
    memory = Memory(profile, 4, tuple(range(6)), q, q, index)
    with pytest.raises(BankFileError, match="NaN"):
        expectation(name="dense-fp16", bits=16).decode("k" * 64, encode(memory))
