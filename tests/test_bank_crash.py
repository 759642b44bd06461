"""The bank after things go wrong: kill -9 during appends and during compaction, a torn tail, an append
whose transaction never ran, a truncated segment, flipped bytes, a lost index. Each is detected, then
repaired; what cannot be repaired is reported, and MemoryStore rebuilds it from the text."""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bank_synthetic import SEGMENT_BYTES, key, same, synthetic

from engine.memory.bank import HEADER, MemoryBank, pack_record, segment_name
from engine.memory.cache import MemoryCache
from engine.memory.codec import encode
from engine.memory.profiles import PROFILES
from engine.memory.store import MemoryStore
from engine.memory.writer import write_memories

CHILD = Path(__file__).with_name("bank_synthetic.py")
INDEX_OF = {key(i): i for i in range(5000)}  # more than a child can write before it is killed


def open_bank(folder: Path) -> MemoryBank:
    return MemoryBank(folder, segment_bytes=SEGMENT_BYTES)


def fill(folder: Path, n: int) -> None:
    with open_bank(folder) as bank:
        for i in range(n):
            assert bank.put(key(i), synthetic(i))


def places(folder: Path) -> dict[str, tuple[int, int, int]]:
    """key -> (segment, offset, length), read straight from the index."""
    with sqlite3.connect(folder / "bank.db") as db:
        return {k: (s, o, n) for k, s, o, n in db.execute("SELECT key, segment, offset, length FROM records")}


def assert_intact(bank: MemoryBank, keys: set[str]) -> None:
    """The bank holds exactly `keys`, each byte for byte as written, with nothing for verify to find."""
    assert bank.verify() == []
    assert set(bank.keys()) == keys
    for k in keys:
        assert same(bank.get(k), synthetic(INDEX_OF[k]))


def start_child(*args: object) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, str(CHILD), *map(str, args)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def test_kill_during_appends_keeps_every_acknowledged_put(tmp_path: Path):
    rng = random.Random(3)
    acked: set[int] = set()
    dropped: set[int] = set()
    maybe_dropped: set[int] = set()
    for _ in range(4):
        child = start_child(tmp_path, max(acked, default=-1) + 1)
        time.sleep(rng.uniform(0.05, 0.3))
        child.send_signal(signal.SIGKILL)
        pending: list[int] = []
        for line in child.communicate()[0].splitlines():
            word, *numbers = line.split()
            if word == "put":
                acked.add(int(numbers[0]))
            elif word == "drop":
                pending = [int(n) for n in numbers]
                maybe_dropped.update(pending)
            elif word == "dropped":
                dropped.update(pending)
        assert child.returncode == -signal.SIGKILL
        with open_bank(tmp_path) as bank:
            present = set(bank.keys())
            assert {key(i) for i in acked - maybe_dropped} <= present
            assert not present & {key(i) for i in dropped}
            assert_intact(bank, present)  # torn tail cut: every segment ends where the index says
    with open_bank(tmp_path) as bank:  # and appends go on
        i = next(i for i in range(max(acked) + 1, len(INDEX_OF)) if key(i) not in bank)
        assert bank.put(key(i), synthetic(i))
        assert_intact(bank, present | {key(i)})


class Crash(BaseException):
    """Stands for the process dying between two steps: nothing after it runs."""


def crash(*args: object, **kwargs: object) -> None:
    raise Crash


@pytest.mark.parametrize("step", ["written", "swapped", "unlinking"])
def test_compaction_stopped_at_any_step_leaves_the_old_or_the_new_state(
    tmp_path: Path, monkeypatch, step: str
):
    fill(tmp_path, 30)
    bank = open_bank(tmp_path)
    bank.drop([key(i) for i in range(0, 30, 3)])
    old = {s for s, _, _ in places(tmp_path).values()}
    if step == "written":  # new segments on disk, the index not yet swapped
        monkeypatch.setattr(MemoryBank, "_swap", crash)
    elif step == "swapped":  # the index points at the new segments, the old files are still there
        monkeypatch.setattr(MemoryBank, "_remove_segments", crash)
    else:  # one old file gone, the others not
        unlink = Path.unlink
        monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: unlink(self) or crash())
    with pytest.raises(Crash):
        bank.compact()
    monkeypatch.undo()
    bank.close()
    with open_bank(tmp_path) as bank:
        assert_intact(bank, {key(i) for i in range(30) if i % 3})
        in_use = {s for s, _, _ in places(tmp_path).values()}
        assert bank.opened.removed_segments  # the files of the side that lost
        assert (in_use <= old) == (step == "written")
        assert sorted(p.name for p in tmp_path.glob("seg-*")) == sorted(segment_name(s) for s in in_use)
        bank.compact()
        assert bank.stats()["dead_bytes"] == 0
        assert_intact(bank, {key(i) for i in range(30) if i % 3})


def test_torn_tail_is_cut_and_a_complete_unindexed_append_is_kept(tmp_path: Path):
    fill(tmp_path, 5)
    where = places(tmp_path)
    segment, offset, length = where[key(4)]
    with sqlite3.connect(tmp_path / "bank.db") as db:  # the append of 4 happened, its transaction did not
        db.execute("DELETE FROM records WHERE key = ?", (key(4),))
        db.execute("UPDATE segments SET end = ? WHERE id = ?", (offset, segment))
    torn = pack_record(key(5), encode(synthetic(5)))[: HEADER.size + 100]
    with open(tmp_path / segment_name(segment), "ab") as f:
        f.write(torn)
    with open_bank(tmp_path) as bank:
        assert bank.opened.reindexed == [key(4)]
        assert bank.opened.truncated_bytes == len(torn)
        assert bank.opened.lost == []
        assert (tmp_path / segment_name(segment)).stat().st_size == offset + length
        assert_intact(bank, {key(i) for i in range(5)})
        assert bank.put(key(5), synthetic(5))
        assert_intact(bank, {key(i) for i in range(6)})


def test_truncated_segment_loses_only_what_it_no_longer_holds(tmp_path: Path):
    fill(tmp_path, 20)
    where = places(tmp_path)
    middle = sorted({s for s, _, _ in where.values()})[1]
    in_middle = sorted((o, k) for k, (s, o, _) in where.items() if s == middle)
    cut = in_middle[1][0] + 50  # inside its second record
    with open(tmp_path / segment_name(middle), "r+b") as f:
        f.truncate(cut)
    with open_bank(tmp_path) as bank:
        lost = {k for _, k in in_middle[1:]}
        assert set(bank.opened.lost) == lost
        assert_intact(bank, {key(i) for i in range(20)} - lost)
        assert bank.repair().clean
        assert bank.put(key(20), synthetic(20))


def test_flipped_header_byte_is_detected_and_reported(tmp_path: Path):
    fill(tmp_path, 6)
    segment, offset, _ = places(tmp_path)[key(2)]
    flip(tmp_path / segment_name(segment), offset + 7)  # inside the record length
    with open_bank(tmp_path) as bank:
        problems = bank.verify()
        assert len(problems) == 1 and "header" in problems[0]
        assert bank.repair().lost == [key(2)]
        assert_intact(bank, {key(i) for i in range(6)} - {key(2)})


def test_lost_index_is_rebuilt_from_the_segments(tmp_path: Path):
    fill(tmp_path, 12)
    for p in tmp_path.glob("bank.db*"):
        p.unlink()
    with open_bank(tmp_path) as bank:
        assert sorted(bank.opened.reindexed) == sorted(key(i) for i in range(12))
        assert_intact(bank, {key(i) for i in range(12)})


def test_flipped_payload_byte_is_detected_reported_and_rebuilt_from_the_text(rt, tmp_path: Path):
    doors = [("red", "north"), ("blue", "cellar"), ("green", "garden")]
    texts = [f" Note {i}: the {c} key opens the {d} door." for i, (c, d) in enumerate(doors)]
    items = [(hashlib.sha256(t.encode()).hexdigest(), t) for t in texts]
    written: dict[str, object] = {}

    def write(batch: list[str]):
        memories = write_memories(
            rt.model, rt.sink, [rt.tokenizer.encode(t) for t in batch], PROFILES["dense"]
        )
        written.update(zip(batch, memories, strict=True))
        return memories

    bank = MemoryBank(tmp_path)
    store = MemoryStore(bank, MemoryCache(rt.model.dtype, rt.model.device), write)
    assert store.store(items) == 3
    where = places(tmp_path)

    def damage(i: int) -> None:
        segment, offset, length = where[items[i][0]]
        flip(tmp_path / segment_name(segment), offset + length // 2)

    damage(0)  # found by verify, then by get: the store rewrites it from the text
    assert ["checksum" in p for p in bank.verify()] == [True]
    [kv] = store.get_many([items[0]])
    assert store.cold_writes == 1
    expected = written[texts[0]].unpack(rt.model.dtype, rt.model.device)
    assert kv.k.equal(expected.k) and kv.v.equal(expected.v)

    damage(1)  # found by repair, reported, and rebuilt when next retrieved
    assert bank.repair().lost == [items[1][0]]
    kvs = store.get_many(items)
    assert store.cold_writes == 2
    for (_, text), kv in zip(items, kvs, strict=True):
        expected = written[text].unpack(rt.model.dtype, rt.model.device)
        assert kv.k.equal(expected.k) and kv.v.equal(expected.v)
    assert bank.verify() == [] and set(bank.keys()) == {h for h, _ in items}
    bank.close()


def flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x40]))
