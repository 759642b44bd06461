"""The soak's run folder (bench/soak_run.py): whatever moment a stop came at while a copy was made, one
whole copy is found, the newest; a state that cannot be read is one sentence; one soak at a time."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys

import msgspec
import pytest

from bench.errors import BenchmarkError
from bench.soak_run import FORMAT, FolderState, RunFolder, State


def state(done: int) -> State:
    rng = random.Random(done)
    folder = FolderState(rng.getstate(), done, ["f00/n1.md"], [[["One sentence.", "Two."]]])
    options = {"events": 1000, "documents": 10, "checkpoint_every": 250, "batch": 8, "seed": 14}
    checkpoint = {"events": done, "live_files": 1, "documents": 1, "chunks": 2, "memories": 2, "latency": {}}
    sentinels = [("hash", "fact", "question")]
    return State(FORMAT, options, done, 1.5, [], rng.getstate(), folder, sentinels, [checkpoint], [])


def copy(at, done: int | None) -> None:
    """A copy at `at`: whole (with its state, `done` events) or half made (None: no state yet)."""
    (at / "home").mkdir(parents=True)
    (at / "home" / "catalog.db").write_bytes(b"x" * 10)
    if done is not None:
        (at / "state.json").write_bytes(msgspec.json.encode(state(done)))


# where a stop can leave the copies: each of saved / saved.new / saved.old absent, half or whole
PLACES = ("saved", "saved.new", "saved.old")
KINDS = (None, "half", "whole")


@pytest.mark.parametrize("kinds", list(itertools.product(KINDS, repeat=3)))
def test_the_newest_whole_copy_is_found_and_put_in_place(tmp_path, kinds):
    """saved.new is newer than saved, saved older than both (`done`: 300, 200, 100); a half copy never
    wins and is cleared away. saved.old appears only once saved.new is whole, as `save` makes them."""
    folder = RunFolder(tmp_path)
    done = {"saved": 200, "saved.new": 300, "saved.old": 100}
    for place, kind in zip(PLACES, kinds, strict=True):
        if kind is not None:
            copy(folder.path / place, done[place] if kind == "whole" else None)
    whole = [done[p] for p, k in zip(PLACES, kinds, strict=True) if k == "whole"]
    found = folder.stopped()
    assert (found.done if found else None) == max(whole, default=None)
    left = sorted(p.name for p in folder.path.iterdir()) if folder.path.exists() else []
    assert left == (["saved"] if whole else [])
    assert folder.stopped() == found  # settled: the same again


def test_a_state_is_read_back_as_written_and_as_json_dumps_wrote_it(tmp_path):
    """The first runs wrote state.json with json.dumps of plain lists and dicts: it reads back the same."""
    folder = RunFolder(tmp_path)
    copy(folder.path / "saved", 200)
    assert folder.stopped() == state(200)
    plain = json.dumps(msgspec.to_builtins(state(200)))
    (folder.path / "saved" / "state.json").write_text(plain)
    found = folder.stopped()
    assert found == state(200) and random.Random().setstate(found.rng) is None


@pytest.mark.parametrize("text", ["", "{", "null", "[]", "{}", '{"format": 1}', "\x00\xff"])
def test_a_state_that_cannot_be_read_is_one_sentence_and_is_kept(tmp_path, text):
    folder = RunFolder(tmp_path)
    copy(folder.path / "saved", 200)
    (folder.path / "saved" / "state.json").write_text(text, errors="surrogateescape")
    with pytest.raises(BenchmarkError, match=r"is damaged or was saved by another memory3: delete that"):
        folder.stopped()
    assert (folder.path / "saved" / "state.json").exists()


def test_a_state_of_another_format_is_refused(tmp_path):
    folder = RunFolder(tmp_path)
    copy(folder.path / "saved", 200)
    other = msgspec.structs.replace(state(200), format=FORMAT + 1)
    (folder.path / "saved" / "state.json").write_bytes(msgspec.json.encode(other))
    with pytest.raises(BenchmarkError, match="saved by another memory3"):
        folder.stopped()


def test_one_soak_at_a_time(tmp_path):
    """The lock is another process's (a lock held by this one would be its own)."""
    holder = (
        "import sys, time; from pathlib import Path; from bench.soak_run import RunFolder\n"
        "with RunFolder(Path(sys.argv[1])).held():\n    print('held', flush=True); time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as other:
        try:
            assert other.stdout.readline() == "held\n"
            busy = pytest.raises(BenchmarkError, match=r"Another soak is running in .*bench/soak\.")
            with busy, RunFolder(tmp_path).held():
                pass
        finally:
            other.kill()
    with RunFolder(tmp_path).held():  # its process gone, the lock is free
        pass


def test_a_folder_that_cannot_be_written_is_one_sentence(tmp_path):
    (tmp_path / "bench").write_text("a file where the folder goes")
    unwritable = pytest.raises(BenchmarkError, match=r"The soak's folder .* cannot be written")
    with unwritable, RunFolder(tmp_path).held():
        pass


@pytest.mark.parametrize(
    "change",
    [{"options": {}}, {"checkpoints": []}, {"checkpoints": [{"events": 200}]}, {"rng": (3, (1, 2), None)}],
)
def test_a_state_that_fits_the_schema_but_not_a_run_is_damaged(tmp_path, change):
    folder = RunFolder(tmp_path)
    copy(folder.path / "saved", 200)
    wrong = msgspec.structs.replace(state(200), **change)
    (folder.path / "saved" / "state.json").write_bytes(msgspec.json.encode(wrong))
    with pytest.raises(BenchmarkError, match="is damaged"):
        folder.stopped()
    mismatched = msgspec.structs.replace(state(200).folder, paths=[])
    (folder.path / "saved" / "state.json").write_bytes(
        msgspec.json.encode(msgspec.structs.replace(state(200), folder=mismatched))
    )
    with pytest.raises(BenchmarkError, match="is damaged"):
        folder.stopped()


def test_the_stop_sentence_changes_nothing(tmp_path):
    """A Ctrl-C'd second command may not be the run holding the folder: its half copy stays."""
    folder = RunFolder(tmp_path)
    assert folder.stop_sentence() == "It had not reached its first checkpoint: there is nothing to resume."
    copy(folder.path / "saved", 200)
    copy(folder.path / "saved.new", None)
    assert folder.stop_sentence().endswith("goes on from its last checkpoint, 200 events.")
    assert sorted(p.name for p in folder.path.iterdir()) == ["saved", "saved.new"]


def test_a_finished_run_stopped_while_its_folder_is_removed_leaves_nothing_to_resume(tmp_path):
    folder = RunFolder(tmp_path)
    copy(folder.path / "saved", 200)
    folder.remove()
    assert not folder.path.exists() and not (tmp_path / "bench" / "soak.removing").exists()
    copy(tmp_path / "bench" / "soak.removing" / "saved", 200)  # a stop halfway through the deletion
    assert folder.stopped() is None and not (tmp_path / "bench" / "soak.removing").exists()
