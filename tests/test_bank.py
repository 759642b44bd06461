"""The memory bank with real memories: exact round trips that survive reopening, the budget with cold start
through MemoryStore, drop and compaction, reads from other threads; and the codec, as properties over
profiles, bit widths and shapes."""

from __future__ import annotations

import contextlib
import hashlib
import random
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
import torch
from bank_synthetic import SEGMENT_BYTES, key, same, synthetic
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BankCorruptError, BankError
from engine.memory.bank import HEADER, MemoryBank
from engine.memory.cache import MemoryCache
from engine.memory.codec import decode, encode
from engine.memory.profiles import PROFILES, Memory, MemoryProfile
from engine.memory.quantization import quantize
from engine.memory.store import COMPACT_AT, MemoryStore
from engine.memory.writer import write_memories

WORDS = ["red", "tall", "empty", "glass", "round", "old"]
TEXTS = [f" Item {i}: the {w} jar on shelf {i} holds {i * 3 + 2} buttons." for i, w in enumerate(WORDS)]


def chunk_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record_bytes(memory: Memory) -> int:
    return HEADER.size + len(encode(memory))


def segment_bytes_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("seg-*.m3s"))


@pytest.fixture(scope="module")
def written(rt) -> dict[str, list[Memory]]:
    """Real memories of TEXTS: dense for all of them; int4 and the paper's sparse profile for two."""
    plan = {"dense": TEXTS, "dense-int4": TEXTS[:2], "paper": TEXTS[:2]}
    refs = {name: [rt.tokenizer.encode(t) for t in texts] for name, texts in plan.items()}
    return {name: write_memories(rt.model, rt.sink, refs[name], PROFILES[name]) for name in plan}


def test_real_memories_come_back_exactly_and_persist(written, tmp_path: Path):
    stored = {
        chunk_hash(name + text): m for name, ms in written.items() for text, m in zip(TEXTS, ms, strict=False)
    }
    with MemoryBank(tmp_path) as bank:
        assert all(bank.put(k, m) for k, m in stored.items())
        assert all(same(bank.get(k), m) for k, m in stored.items())
        size = bank.stats()["file_bytes"]
        assert bank.put(next(iter(stored)), written["dense"][0])  # already there: nothing appended
        assert bank.stats()["file_bytes"] == size == segment_bytes_on_disk(tmp_path)
    with MemoryBank(tmp_path) as bank:
        assert bank.opened.clean and bank.verify() == []
        assert sorted(bank.keys()) == sorted(stored) and next(iter(stored)) in bank
        assert all(same(bank.get(k), m) for k, m in stored.items())
        by_profile = bank.stats()["by_profile"]
        assert {name: s["records"] for name, s in by_profile.items()} == {
            "dense": 6,
            "dense-int4": 2,
            "paper": 2,
        }
        assert bank.get(chunk_hash("never stored")) is None


def test_tiny_budget_stores_some_and_the_rest_cold_start(rt, written, tmp_path: Path):
    made: dict[str, Memory] = {}

    def write(texts: list[str]) -> list[Memory]:
        memories = write_memories(
            rt.model, rt.sink, [rt.tokenizer.encode(t) for t in texts], PROFILES["dense"]
        )
        made.update(zip(texts, memories, strict=True))
        return memories

    budget = sum(record_bytes(m) for m in written["dense"][:3])
    bank = MemoryBank(tmp_path, budget_bytes=budget)
    store = MemoryStore(bank, MemoryCache(rt.model.dtype, rt.model.device), write, batch_size=2)
    items = [(chunk_hash(t), t) for t in TEXTS]
    stored = store.store(items)
    assert stored == 3
    assert set(bank.keys()) == {h for h, _ in items[:stored]}
    assert bank.stats()["live_bytes"] <= budget
    encoded = len(made)
    assert store.store(items) == 0 and len(made) == encoded  # a full bank: nothing is written in vain

    kvs = store.get_many(items[::-1])
    assert store.stats() == {"cache_hits": 0, "bank_reads": stored, "cold_writes": len(items) - stored}
    for (_, text), kv in zip(items[::-1], kvs, strict=True):
        expected = made[text].unpack(rt.model.dtype, rt.model.device)
        assert kv.k.equal(expected.k) and kv.v.equal(expected.v) and kv.index.equal(expected.index)
    assert store.get_many(items[:2])[1] is kvs[-2]  # hot now: served by the cache
    assert store.stats()["cold_writes"] == len(items) - stored
    assert bank.stats()["live_bytes"] <= budget and len(bank.keys()) == stored
    bank.close()


def test_drop_and_compact_reclaim_disk_and_keep_the_rest(written, tmp_path: Path):
    memories = dict(zip((chunk_hash(t) for t in TEXTS), written["dense"], strict=True))
    gone = list(memories)[1::2]
    with MemoryBank(tmp_path, segment_bytes=3 * record_bytes(written["dense"][0])) as bank:
        for k, m in memories.items():
            bank.put(k, m)
        before = segment_bytes_on_disk(tmp_path)
        assert bank.drop(gone) == len(gone)
        dead = bank.stats()["dead_bytes"]
        assert dead == sum(record_bytes(memories[k]) for k in gone)
        assert bank.compact() == dead == before - segment_bytes_on_disk(tmp_path)
        assert bank.stats()["dead_bytes"] == 0 and bank.compact() == 0
    with MemoryBank(tmp_path) as bank:
        kept = bank.keys()
        assert sorted(kept) == sorted(set(memories) - set(gone)) and bank.verify() == []
        assert all(same(bank.get(k), memories[k]) for k in kept)
        store = MemoryStore(bank, MemoryCache(torch.float32, torch.device("cpu")), write=pytest.fail)
        store.drop(bank.keys()[:1])  # a third of the bank dead: past the threshold, so compacted
        assert bank.stats()["dead_bytes"] == 0 and len(bank.keys()) == 2


def test_store_keeps_the_segments_within_the_compaction_bound(tmp_path: Path):
    """However memories come and go through MemoryStore, the segments hold at most 1 / (1 - COMPACT_AT)
    times the live records' bytes: 1.25, under the 1.3 that `m3 bench soak` holds the data folder to."""
    assert 1 / (1 - COMPACT_AT) <= 1.25
    rng = random.Random(0)
    live: list[int] = []
    with MemoryBank(tmp_path, segment_bytes=SEGMENT_BYTES) as bank:
        store = MemoryStore(bank, MemoryCache(torch.float32, torch.device("cpu")), write=pytest.fail)
        for i in range(150):
            if len(live) > 5 and rng.random() < 0.5:
                store.drop([key(live.pop(rng.randrange(len(live))))])
            else:
                bank.put(key(i), synthetic(i))
                live.append(i)
            stats = bank.stats()
            assert stats["file_bytes"] <= stats["live_bytes"] / (1 - COMPACT_AT)
        assert sorted(bank.keys()) == sorted(key(i) for i in live) and bank.verify() == []


def test_reads_from_other_threads_while_writing_and_compacting(tmp_path: Path):
    expected = [synthetic(i) for i in range(8)]
    bank = MemoryBank(tmp_path, segment_bytes=SEGMENT_BYTES)
    for i, m in enumerate(expected):
        bank.put(key(i), m)
    wrong: list[int] = []

    def read() -> None:
        for _ in range(5):
            wrong.extend(i for i, m in enumerate(expected) if not same(bank.get(key(i)), m))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(8, 24):
        bank.put(key(i), synthetic(i))
        if i % 4 == 3:
            bank.drop([key(i - 1)])
            bank.compact()
    for t in readers:
        t.join()
    assert wrong == [] and bank.verify() == []
    bank.close()


def test_bad_keys_and_newer_indexes_are_refused(tmp_path: Path):
    with MemoryBank(tmp_path) as bank, pytest.raises(ValueError, match="64 lowercase hex"):
        bank.put("not a hash", synthetic(0))
    with sqlite3.connect(tmp_path / "bank.db") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(BankError, match="newer memory3"):
        MemoryBank(tmp_path)


@st.composite
def memories(draw: st.DrawFn) -> Memory:
    bits = draw(st.sampled_from([4, 8, 16, 32]))
    group = draw(st.sampled_from([8, 16, 32]))
    n_layers, heads, kept = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 8))
    shape = (n_layers, heads, kept, group * draw(st.integers(1, 3)))
    profile = MemoryProfile(
        name=draw(st.text(max_size=12)),
        layers=draw(
            st.sampled_from(["all", "first_half"]) | st.tuples(st.integers(0, 40), st.integers(0, 40))
        ),
        tokens=draw(st.none() | st.integers(1, 128) | st.floats(0.01, 1.0)),
        bits=bits,
        positions=draw(st.sampled_from(["sequential", "parallel"])),
        group=group,
    )
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    return Memory(
        profile=profile,
        length=draw(st.integers(kept, 128)),
        layers=tuple(sorted(draw(st.sets(st.integers(0, 40), min_size=n_layers, max_size=n_layers)))),
        k=quantize(torch.randn(shape, generator=g), bits, group),
        v=quantize(torch.randn(shape, generator=g) * 5, bits, group),
        index=torch.randint(0, 128, shape[:-1], generator=g, dtype=torch.int16),
    )


@settings(max_examples=60, deadline=None)
@given(memories())
def test_codec_round_trip_is_exact(memory: Memory):
    assert same(decode(encode(memory)), memory)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_codec_damage_raises_only_bank_corrupt_error(data: st.DataObject):
    """A cut is always caught; a flipped byte is caught or decodes (tensor bytes carry no check: the
    bank's CRC does that), but never fails in any other way."""
    buf = bytearray(encode(data.draw(memories())))
    if data.draw(st.booleans()):
        with pytest.raises(BankCorruptError):
            decode(buf[: data.draw(st.integers(0, len(buf) - 1))])
        return
    buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(BankCorruptError):
        decode(buf)


def test_codec_refuses_trailing_bytes_and_unknown_dtypes():
    buf = encode(synthetic(1))
    with pytest.raises(BankCorruptError, match="after its tensors"):
        decode(buf + b"\0")
    with pytest.raises(BankCorruptError):
        decode(buf.replace(b'"int8"', b'"int9"', 1))


def test_put_many_stores_a_batch_across_segments_and_stops_at_the_budget(tmp_path: Path):
    """One write and transaction per segment reached; duplicates count as stored; the first memory past
    the budget ends the batch, storing nothing of it or after it."""
    items = [(key(i), synthetic(i)) for i in range(12)]
    size = len(encode(items[0][1])) + HEADER.size
    with MemoryBank(tmp_path / "a", segment_bytes=2 * size + 1) as bank:
        assert bank.put_many(items[:6] + items[:2]) == 8
        assert bank.verify() == [] and bank.keys() == sorted(k for k, _ in items[:6])
        assert bank.stats()["segments"] > 1  # the batch crossed into new segments
        assert all(same(bank.get(k), m) for k, m in items[:6])
    with MemoryBank(tmp_path / "b", budget_bytes=3 * size + size // 2) as bank:
        assert bank.put_many(items) == 3
        assert bank.keys() == sorted(k for k, _ in items[:3])
    with MemoryBank(tmp_path / "b", budget_bytes=3 * size + size // 2) as bank:  # reopened: all intact
        assert bank.verify() == [] and len(bank.keys()) == 3


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "drop", "compact", "repair", "reopen"]), st.integers(0, 9)),
        max_size=25,
    )
)
def test_the_running_total_of_live_bytes_follows_every_change(ops: list[tuple[str, int]]):
    """put_many checks the budget against a running total (summing every record per put made a million
    puts quadratic); after any sequence of puts, drops, compactions, repairs and reopenings it is the sum."""
    items = [(key(i), synthetic(i)) for i in range(10)]
    size = len(encode(items[0][1])) + HEADER.size
    with tempfile.TemporaryDirectory() as tmp:
        bank = MemoryBank(Path(tmp), budget_bytes=6 * size, segment_bytes=2 * size + 1)
        try:
            for op, i in ops:
                if op == "put":
                    bank.put_many(items[i : i + 3])
                elif op == "drop":
                    bank.drop([items[i][0]])
                elif op == "compact":
                    bank.compact()
                elif op == "repair":
                    bank.repair()
                else:
                    bank.close()
                    bank = MemoryBank(Path(tmp), budget_bytes=6 * size, segment_bytes=2 * size + 1)
                assert bank._live == bank.stats()["live_bytes"] <= 6 * size
        finally:
            bank.close()
