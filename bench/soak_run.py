"""Where `m3 bench soak` keeps a run, so that a stopped one (Ctrl-C, a kill, a reboot) can go on.

`<data>/bench/soak/` holds `live/` (the engine's home and the watched folder the events change) and
`saved/`, a copy of `live/` made at the last checkpoint with the run's state beside it (`state.json`).
A copy is made in `saved.new/` and its state written last, atomically, so a `saved.new/` with a state is
whole: it then replaces `saved/` (renamed to `saved.old/` and removed). A stop at any moment of that leaves
one whole copy, which `RunFolder.stopped` finds and puts in place. One run holds the folder at a time
(`<data>/bench/soak.lock`, a file lock released by the system when its process dies).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from filelock import FileLock, Timeout

from bench.errors import BenchmarkError
from ingest.atomic import write_atomic

FORMAT = 1  # of state.json
OPTIONS = ("events", "documents", "checkpoint_every", "batch", "seed")  # a run's settings
RESUMED_QUICK = "--quick starts a new soak; --resume goes on with the stopped one's settings."
CHECKED = ("live_files", "documents", "chunks", "memories")  # what a resumed copy is checked against

RandomState = tuple[int, tuple[int, ...], float | None]  # what random.Random.getstate() returns


class FolderState(msgspec.Struct):
    """The watched folder's files as the run made them: their texts in pick order, the names made."""

    rng: RandomState
    made: int
    paths: list[str]  # relative to the watched folder
    texts: list[list[list[str]]]  # each file's paragraphs of sentences


class State(msgspec.Struct):
    """What a resumed run needs to go on exactly as the stopped one would have."""

    format: int
    options: dict[str, int]  # events, documents, checkpoint_every, batch, seed
    done: int  # events done at the copy
    wall_s: float
    resumed_at: list[int]  # events done when each earlier resumed part began
    rng: RandomState  # the generator picking the events
    folder: FolderState
    sentinels: list[tuple[str, str, str]]  # (chunk hash, fact, question)
    checkpoints: list[dict]
    windows: list[dict]


class RunFolder:
    def __init__(self, data: Path) -> None:
        """The run folder of the data folder `data`."""
        self.path = data / "bench" / "soak"
        self.live = self.path / "live"
        self._saved, self._new, self._old = (self.path / n for n in ("saved", "saved.new", "saved.old"))
        self._removing = self.path.with_name("soak.removing")  # a finished run's folder, being removed

    @contextmanager
    def held(self) -> Iterator[None]:
        """The folder for this process alone; BenchmarkError if another soak holds it."""
        lock = FileLock(self.path.parent / "soak.lock")
        with _writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:  # an OSError too: answered here
                raise BenchmarkError(f"Another soak is running in {self.path}.") from None
        try:
            yield
        finally:
            lock.release()

    def stopped(self) -> State | None:
        """The state of the stopped run's copy, put in place first; None when there is none. Call it
        holding the folder. BenchmarkError for a state that cannot be read (damaged, or saved by another
        memory3)."""
        with _writing(self.path):
            self._settle()
        return self._read(self._saved)

    def stop_sentence(self) -> str:
        """What a Ctrl-C in `m3 bench soak` keeps, read without changing anything (the run stopped may not
        be the one holding the folder)."""
        try:
            newest = next((self._read(p) for p in (self._new, self._saved, self._old) if _whole(p)), None)
        except BenchmarkError as exc:
            return str(exc)
        if newest is None:
            return "It had not reached its first checkpoint: there is nothing to resume."
        return f"`m3 bench soak --resume` goes on from its last checkpoint, {newest.done:,} events."

    def _read(self, copy: Path) -> State | None:
        try:
            raw = (copy / "state.json").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BenchmarkError(f"The stopped soak in {self.path} cannot be read ({exc.strerror}).") from exc
        try:
            state = msgspec.json.decode(raw, type=State)
        except msgspec.DecodeError:
            state = None
        if state is None or state.format != FORMAT or not _sound(state):
            raise BenchmarkError(
                f"The stopped soak's state in {self.path} is damaged or was saved by another memory3:"
                " delete that folder to start over."
            )
        return state

    def fresh(self) -> None:
        """An empty `live/` (whatever a run stopped before its first copy left is removed)."""
        with _writing(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
            shutil.rmtree(self._removing, ignore_errors=True)
            self.live.mkdir(parents=True)

    def restore(self) -> None:
        """`live/` as it was at the copy."""
        with _writing(self.path):
            if self.live.exists():
                shutil.rmtree(self.live)
            shutil.copytree(self._saved, self.live, ignore=shutil.ignore_patterns("state.json"))

    def save(self, state: State) -> None:
        """Copy `live/` with `state` (the engine closed meanwhile: its files are at rest)."""
        with _writing(self.path):
            if self._new.exists():
                shutil.rmtree(self._new)
            shutil.copytree(self.live, self._new)
            os.sync()  # the copied files on the disk before the state that makes the copy whole
            write_atomic(self._new / "state.json", msgspec.json.encode(state))
            self._settle()

    def remove(self) -> None:
        """The run ended and its results are written: the folder goes, renamed first so that a stop
        while it is deleted leaves no copy to resume (the lock file beside it stays)."""
        with _writing(self.path):
            shutil.rmtree(self._removing, ignore_errors=True)
            self.path.rename(self._removing)
            shutil.rmtree(self._removing)

    def _settle(self) -> None:
        """The newest whole copy (saved.new, saved, saved.old: a state.json written last makes one whole)
        in `saved/`, the rest removed, in an order that keeps it whole under one name or another."""
        shutil.rmtree(self._removing, ignore_errors=True)
        keep = next((p for p in (self._new, self._saved, self._old) if _whole(p)), None)
        for place in (self._new, self._old):
            if place != keep and place.exists():
                shutil.rmtree(place)
        if keep == self._saved or keep is None:
            if keep is None and self._saved.exists():
                shutil.rmtree(self._saved)
            return
        if self._saved.exists() and keep == self._new:  # older: out of the way until the new one is in
            self._saved.rename(self._old)
        elif self._saved.exists():  # half made (keep is saved.old)
            shutil.rmtree(self._saved)
        keep.rename(self._saved)
        if self._old.exists():
            shutil.rmtree(self._old)


def _whole(copy: Path) -> bool:
    """Whether a copy was finished: its state is written last."""
    return (copy / "state.json").exists()


def _sound(state: State) -> bool:
    """Whether a state that fits the schema holds what a resumed run reads: its settings, a checkpoint,
    each file's text, generator states `random` takes."""
    folder = state.folder
    try:
        random.Random().setstate(state.rng)
        random.Random().setstate(folder.rng)
    except (TypeError, ValueError):
        return False
    return (
        set(state.options) == set(OPTIONS)
        and bool(state.checkpoints)
        and all(
            k in state.checkpoints[-1] for k in ("events", "live_files", "documents", "chunks", "memories")
        )
        and len(folder.paths) == len(folder.texts)
    )


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OSError as one sentence naming the run folder."""
    try:
        yield
    except OSError as exc:
        raise BenchmarkError(f"The soak's folder {path} cannot be written ({exc.strerror or exc}).") from exc
