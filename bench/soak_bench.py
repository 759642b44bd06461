"""`m3 bench soak`: a million add / edit / move / delete events against one data folder (catalog, bank,
vector index, keyword index), generated with a seed, checked every 100,000 events.

Each event is a real file operation in a real folder of the run's own home (a new or edited file is written
beside its place and renamed onto it, as editors save; a move is `os.rename`; a delete, `unlink`),
followed by the engine's ingest path for that change: the batch the watcher would hand over (its paths
and renames) goes through `Ingester.apply`, `Ingester.process_pending` and `Engine.sync_memories`, the
calls `Engine.watch` makes for every watcher batch; only inotify's debounce (0.5 s) is left out. With
`batch` > 1 that many events go in one batch, as the watcher gathers events faster than its debounce.

Writing memories with the default model (about 9 references/s on a CPU) would make a million events take
days, so the engine's model is a tiny random-weight Gemma 3 (bench/tiny_gguf.py): its tokenizer cuts the
chunks (byte tokens: at most 128 bytes a chunk) and it writes the memories through the same code path. The
embedder is the real bundled one. Documents are one or two short paragraphs of made-up sentences.

The first events write SENTINELS documents of invented facts, never edited, moved or deleted. Then the
mix keeps the folder near `documents` live files: edits (one sentence replaced) MIX["edit"] of the time,
moves MIX["move"], adds and deletes the rest, adds more likely below the target and deletes above it.
At every checkpoint: the sentinels' recall@5 through `Retriever.search` (and by the vector index alone,
and by an exact search of the stored vectors; a sentinel the fused top 5 missed is named with its ranks),
their chunks' texts and memories read back from the catalog and the bank, `m3 doctor`'s checks (engine/
doctor.py) with nothing found to repair, the catalog's chunks, the bank's memories and the index's items
naming the same texts with no memory work left, the bytes on disk against the live bytes, and each kind
of event's latency in the interval. Checkpoints are not timed as events.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.engine_bench import sentence
from bench.errors import BenchmarkError
from bench.machine import machine_info
from bench.output import write_results
from bench.qa_plots import plt, save_figure
from bench.soak_run import FORMAT, RESUMED_QUICK, FolderState, RunFolder, State
from bench.tiny_gguf import write_tiny_gguf
from engine import doctor
from engine.facade import Engine
from engine.memory.profiles import MAX_REFERENCE_TOKENS
from engine.models.runtime import Runtime
from engine.retrieval.embedder import Embedder
from engine.retrieval.exact import ExactVectors
from engine.retrieval.retriever import Retriever
from engine.threads import compute_threads
from ingest.paths import Home
from ingest.watcher import Batch

EVENTS = 1_000_000
QUICK_EVENTS = 10_000
MISSED_DEPTH = 50  # how far down each list a sentinel missed by the top 5 is looked for
EXACT = "exact_vector_recall_at_5"  # not in the checkpoints of a run saved before it was measured
CHECKPOINT_EVERY = 100_000  # fewer events: a checkpoint every quarter of them
QUICK_CHECKPOINT_EVERY = 2_500
DOCUMENTS = 2_000  # the live documents the mix keeps the folder near
QUICK_DOCUMENTS = 500
WINDOWS = 10  # latency and disk windows per checkpoint interval, for the curve
DISK_EVERY = 50  # events between two measures of the bytes on disk (not timed as events)
SUBFOLDERS = 16
MIX = {"edit": 0.4, "move": 0.2}  # the rest: adds and deletes, balanced around the target
KINDS = ("add", "edit", "move", "delete")
MAX_DISK_RATIO = 1.3  # bytes on disk against live bytes
# bytes on disk / live bytes: of everything, of everything but SQLite's WAL and shared-memory files (a few MB
# each, whatever the size of the data), of the bank alone (what compaction keeps down)
RATIOS = ("ratio", "ratio_without_wal", "bank_ratio")
MAX_LATENCY_GROWTH = 1.5  # each kind's p50 and p95 against the first interval's (a shared machine is noisy)
LATENCY_SLACK_MS = 10.0  # growth within this many ms is no growth: a 2 ms move taking 5 ms is not a trend
SEED = 14
BATCH = 1  # events per watcher batch
MIN_EVENTS = 80  # the sentinels (20), then four checkpoints
# (fact, question): invented, so that only its own document can answer; one sentence, one chunk
SENTINELS = (
    ("The lighthouse keeper Ottoline Brask owns 37 brass telescopes.", "How many telescopes does Brask own?"),
    ("Quarrington's first tram ran on cider fuel in 1911.", "What fuel did the Quarrington tram run on?"),
    ("The Veltmoor choir sings only on the ninth of March.", "When does the Veltmoor choir sing?"),
    ("Pell Hadrascu keeps her ledgers in green walnut ink.", "What ink does Pell Hadrascu use?"),
    ("Orvieno bridge was painted violet by Caspar Thule.", "Who painted the Orvieno bridge violet?"),
    ("The Zandrell glacier moves 14 metres every winter.", "How far does the Zandrell glacier move?"),
    ("Mirela Oskarsdottir bred a blue goat named Fennimore.", "What is Oskarsdottir's blue goat called?"),
    ("Ketterwick library lends umbrellas instead of books.", "What does Ketterwick library lend?"),
    ("The Brannoch ferry carries exactly 212 bicycles.", "How many bicycles fit on the Brannoch ferry?"),
    ("Iolo Penhallow invented a clock that runs backwards.", "What clock did Iolo Penhallow invent?"),
    ("Saltmarsh Abbey brews a beer flavoured with thyme.", "What flavours the Saltmarsh Abbey beer?"),
    ("The Dorvanne comet returns every 83 years.", "How often does the Dorvanne comet return?"),
    ("Tavish Moorcroft mapped the Ulkesh caves on foot.", "Who mapped the Ulkesh caves?"),
    ("Grellby market sells only yellow vegetables.", "What does Grellby market sell?"),
    ("The Ashcombe orchard grows 19 kinds of quince.", "How many kinds of quince grow at Ashcombe?"),
    ("Rosalind Vantongeren swam across Lake Ferrow twice.", "Who swam across Lake Ferrow?"),
    ("The Hollin tower bell was cast from melted spoons.", "What was the Hollin tower bell cast from?"),
    ("Nimbury's mayor is elected by a coin toss.", "How is the mayor of Nimbury chosen?"),
    ("Ebbe Strandqvist trained falcons to carry letters.", "What did Ebbe Strandqvist train falcons for?"),
    ("The Corvale museum keeps a piano made of ice.", "What is the Corvale museum's piano made of?"),
)


@dataclass
class _Interval:
    """What the events between two checkpoints did: each watcher batch's kinds of event and seconds, the
    disk samples."""

    batches: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    disk: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (events so far, RATIOS)

    @property
    def events(self) -> int:
        return sum(len(kinds) for kinds, _ in self.batches)

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.batches)


class _Folder:
    """The data folder's files as the soak made them: it does each operation on the disk and returns the
    batch the watcher would hand over for it (paths to check, renames in order)."""

    def __init__(self, root: Path, rng: random.Random, state: FolderState | None = None) -> None:
        """A new folder at `root`, or (`state`: what `state()` returned) the one a saved run left there."""
        self.root, self.rng = root, rng
        self.texts: dict[Path, list[list[str]]] = {}  # live files but the sentinels: paragraphs of sentences
        self.paths: list[Path] = []  # the same files, for a uniform pick
        self._made = 0
        if state is not None:
            rng.setstate(state.rng)
            self._made = state.made
            for rel, paragraphs in zip(state.paths, state.texts, strict=True):
                self._keep(root / rel, paragraphs)
            return
        for i in range(SUBFOLDERS):
            (root / f"f{i:02d}").mkdir(parents=True)

    def state(self) -> FolderState:
        """What a resumed run needs to go on as this one would: the files' texts in pick order, the seed's
        state, the names made so far."""
        return FolderState(
            self.rng.getstate(),
            self._made,
            [str(p.relative_to(self.root)) for p in self.paths],
            [self.texts[p] for p in self.paths],
        )

    def sentinel(self, i: int) -> Batch:
        return _write(self.root / f"sentinel-{i:02d}.md", SENTINELS[i][0] + "\n")

    def add(self) -> Batch:
        path = self._new_path()
        paragraphs = [[sentence(self.rng) for _ in range(self.rng.randint(1, 2))]]
        if self.rng.random() < 0.5:
            paragraphs.append([sentence(self.rng) for _ in range(self.rng.randint(1, 2))])
        self._keep(path, paragraphs)
        return _write(path, _text(paragraphs))

    def edit(self) -> Batch:
        """One sentence of one paragraph replaced by another."""
        path = self.rng.choice(self.paths)
        paragraph = self.rng.choice(self.texts[path])
        paragraph[self.rng.randrange(len(paragraph))] = sentence(self.rng)
        return _write(path, _text(self.texts[path]))

    def move(self) -> Batch:
        """A file renamed, under a new name, into one of the subfolders (its own or another)."""
        src = self.rng.choice(self.paths)
        dst = self._new_path()
        os.rename(src, dst)
        self._keep(dst, self._forget(src))
        return Batch(frozenset({src, dst}), ((src, dst),), 1)

    def delete(self) -> Batch:
        path = self.rng.choice(self.paths)
        path.unlink()
        self._forget(path)
        return Batch(frozenset({path}), (), 1)

    def _new_path(self) -> Path:
        self._made += 1
        return self.root / f"f{self.rng.randrange(SUBFOLDERS):02d}" / f"n{self._made:07d}.md"

    def _keep(self, path: Path, paragraphs: list[list[str]]) -> None:
        self.texts[path] = paragraphs
        self.paths.append(path)

    def _forget(self, path: Path) -> list[list[str]]:
        self.paths.remove(path)
        return self.texts.pop(path)


def _text(paragraphs: list[list[str]]) -> str:
    return "\n\n".join(" ".join(p) for p in paragraphs) + "\n"


def _write(path: Path, text: str) -> Batch:
    """Write `text` to a hidden file beside `path`, then rename it onto `path` (as editors save)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return Batch(frozenset({tmp, path}), ((tmp, path),), 1)


def _pick(folder: _Folder, rng: random.Random, target: int) -> Callable[[], Batch]:
    """The next event's operation: an edit or a move by MIX, else an add or a delete, adds likelier the
    emptier the folder is against `target` (none to edit, move or delete: an add)."""
    if not folder.paths:
        return folder.add
    x = rng.random()
    if x < MIX["edit"]:
        return folder.edit
    if x < MIX["edit"] + MIX["move"]:
        return folder.move
    grow = min(1.0, max(0.0, 1 - len(folder.paths) / (2 * target)))
    return folder.add if rng.random() < grow else folder.delete


def run(
    home: Home,
    model_path: Path,
    device: str | None,
    output_dir: Path,
    quick: bool = False,
    events: int | None = None,
    documents: int | None = None,
    checkpoint_every: int | None = None,
    batch: int | None = None,
    seed: int | None = None,
    resume: bool = False,
) -> tuple[dict, str]:
    """Run `events` events (default 1,000,000; quick: 10,000) keeping about `documents` live files (2,000;
    quick: 500), checked every `checkpoint_every` events (100,000; quick: 2,500; never fewer than four
    checkpoints) and after the last, handed to the engine `batch` events at a time (as the watcher gathers
    events that come faster than its debounce; default 1: each event alone); writes soak.json, soak.md and
    soak.png into `output_dir` (before the run folder goes).
    The run lives in the home's data folder (bench/soak_run.py), copied with its state at every checkpoint
    but the last: `resume` goes on from the copy of a run that was stopped (Ctrl-C, a kill, a reboot), with
    its settings, doing the events after the copy again exactly as they were.
    `model_path` (the default model) is named in the results only: the tiny model writes the memories.
    BenchmarkError if `events` is below MIN_EVENTS; if another soak is running; if a stopped run is there
    and `resume` is not given (it is kept); if `resume` finds no stopped run, one with other settings than
    those given, or a copy that does not match its last checkpoint; if the run folder cannot be written."""
    given = {
        "events": events,
        "documents": documents,
        "checkpoint_every": checkpoint_every,
        "batch": batch,
        "seed": seed,
    }
    if resume and quick:
        raise BenchmarkError(RESUMED_QUICK)
    folder = RunFolder(home.data)
    with folder.held():
        saved = folder.stopped()
        if resume:
            options = _resumed_options(folder, saved, given)
            folder.restore()
        elif saved is not None:
            raise BenchmarkError(
                f"A stopped soak ({saved.done:,} of {saved.options['events']:,} events) is in {folder.path}:"
                " `m3 bench soak --resume` goes on with it; delete that folder to start over."
            )
        else:
            options = _options(quick, given)
            folder.fresh()
        torch.set_num_threads(compute_threads())  # as the engine service runs
        runtime = Runtime.load(write_tiny_gguf(folder.path / "tiny-gemma3.gguf", "gemma3"), device=device)
        embedder = Embedder.load(home.cache / "embedder", device=device)
        engine = Engine.open(Home.at(folder.live / "home"), runtime=runtime, embedder=embedder)
        try:
            engine.load()
            soak = _Soak(engine, folder, options, saved)
            checkpoints, windows, wall = soak.run()
        finally:
            engine.close()
        results = _results(options, checkpoints, windows, wall, soak.resumed_at, model_path, embedder)
        text = table(results)
        try:
            save_figure(_figure(results), output_dir / "soak.png")
            write_results(output_dir, "soak", results, text)
        except OSError as exc:  # the run folder is kept: a resume does the last interval again
            raise BenchmarkError(
                f"The results cannot be written into {output_dir} ({exc.strerror or exc}):"
                " `m3 bench soak --resume` does the last interval again and writes them."
            ) from exc
        folder.remove()
    return results, text


def _results(
    options: dict[str, int],
    checkpoints: list[dict],
    windows: list[dict],
    wall: float,
    resumed_at: list[int],
    model_path: Path,
    embedder: Embedder,
) -> dict:
    events, batch = options["events"], options["batch"]
    timed = sum(c["seconds"] for c in checkpoints)
    return {
        **options,
        "sentinels": len(SENTINELS),
        "wall_s": wall,
        "resumed_at": resumed_at,  # events done when each resumed part began
        "events_s": events / timed,
        "projected_1m_h": 1e6 * timed / events / 3600,  # the events' time only, without checkpoints
        "counts": {k: sum(c["counts"][k] for c in checkpoints) for k in KINDS},
        "checkpoints": checkpoints,
        "windows": windows,
        "held": _held(checkpoints),
        "setup": {
            "events": "real file operations in one watched folder of the run's own home: writes and edits"
            " through a hidden file renamed into place, moves by os.rename, deletes by unlink;"
            f" {_batches(batch)} followed by Ingester.apply (the watcher's batch: their paths and renames),"
            " Ingester.process_pending and Engine.sync_memories, as Engine.watch does for each watcher batch",
            "documents": "one or two paragraphs of one or two made-up sentences; an edit replaces one"
            " sentence; adds and deletes keep the folder near the target",
            "memories": f"a tiny random-weight 6-layer Gemma 3 (bench/tiny_gguf.py) is the engine's model:"
            f" its byte-level tokenizer cuts the chunks (at most 128 bytes) and it writes the memories"
            f" under the default profile; the default model ({model_path.name}) writes about 9 a second",
            "embedder": f"the bundled {embedder.name} on {embedder.device}",
            "threads": f"torch and ONNX Runtime on {compute_threads()} thread(s), as the engine service runs",
            "sentinels": f"{len(SENTINELS)} one-sentence documents of invented facts, written first, never"
            " changed; recall@5 of one question each through Retriever.search (vector and keyword, fused)",
            "disk": "bytes on disk: every file of the data folder (catalog, bank segments and index,"
            " retrieval database, vector index, SQLite's WAL files); live: the bank's live records, the"
            " pages SQLite uses in each database, the vector index file",
            "latency": "one event: its share of its batch's file operations and three ingest calls, in"
            " seconds of wall time (by kind: events alone in their batch only);"
            " checkpoints and disk measures are not timed",
            "checkpoints": "after each checkpoint but the last the engine is closed, its data folder and"
            " the watched folder copied with the run's state (for --resume), and the engine opened again",
        },
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _options(quick: bool, given: dict[str, int | None]) -> dict[str, int]:
    """A new run's settings: those given, the defaults (quick or not) for the rest."""
    defaults = {
        "events": QUICK_EVENTS if quick else EVENTS,
        "documents": QUICK_DOCUMENTS if quick else DOCUMENTS,
        "checkpoint_every": QUICK_CHECKPOINT_EVERY if quick else CHECKPOINT_EVERY,
        "batch": BATCH,
        "seed": SEED,
    }
    options = {k: default if given[k] is None else given[k] for k, default in defaults.items()}
    if options["events"] < MIN_EVENTS:
        raise BenchmarkError(
            f"A soak needs at least {MIN_EVENTS} events: its {len(SENTINELS)} sentinels come first, then"
            " four checkpoints."
        )
    every = max(len(SENTINELS), min(options["checkpoint_every"], options["events"] // 4))
    options["checkpoint_every"] = every  # never a checkpoint before the sentinels are there
    return options


def _resumed_options(folder: RunFolder, saved: State | None, given: dict[str, int | None]) -> dict[str, int]:
    """The settings of the stopped run `saved`; BenchmarkError if there is none, or others are `given`
    (None: not given)."""
    if saved is None:
        raise BenchmarkError(f"There is no stopped soak to resume in {folder.path}.")
    asked = _options(False, {**saved.options, **{k: v for k, v in given.items() if v is not None}})
    if other := [f"{k}={v:,}" for k, v in saved.options.items() if asked[k] != v]:
        raise BenchmarkError(
            f"The stopped soak runs with {', '.join(other)}: resume it without other settings, or delete"
            f" {folder.path} to start over."
        )
    return saved.options


class _Soak:
    def __init__(
        self, engine: Engine, folder: RunFolder, options: dict[str, int], saved: State | None
    ) -> None:
        """A new run in `folder`, or (`saved`: its state) the stopped one whose files were restored:
        BenchmarkError if they are not as they were at its last checkpoint."""
        self.engine, self.run_folder, self.options = engine, folder, options
        seed = options["seed"]
        self.rng = random.Random(seed + 1)
        root = folder.live / "folder"
        self.folder = _Folder(root, random.Random(seed), None if saved is None else saved.folder)
        self.sentinels: list[tuple[str, str, str]] = []  # (chunk hash, fact, question)
        self.done, self.checkpoints, self.windows, self.wall = 0, [], [], 0.0
        self.resumed_at: list[int] = []
        if saved is None:
            engine.add_folder(root)
        else:
            self.rng.setstate(saved.rng)
            self.sentinels = saved.sentinels
            self.done, self.wall = saved.done, saved.wall_s
            self.checkpoints, self.windows = saved.checkpoints, saved.windows
            self.resumed_at = [*saved.resumed_at, self.done]
            self._check_copy()
        self.ingester = engine.ingester()

    def _check_copy(self) -> None:
        """The restored copy against the last checkpoint: the watched folder, the files on the disk, the
        catalog's documents and chunks, the bank's memories. BenchmarkError naming what differs."""
        engine, root, path = self.engine, self.folder.root, self.run_folder.path
        watched = [f.path for f in engine.folders()]
        if watched != [root]:
            raise BenchmarkError(
                f"The stopped soak's copy in {path} watches {', '.join(map(str, watched)) or 'no folder'},"
                f" not {root}: a run folder cannot be moved (move it back, or delete it to start over)."
            )
        counts = engine.catalog.counts()
        found = {
            "live_files": sum(1 for p in root.rglob("*") if p.is_file()),
            "documents": counts["documents"],
            "chunks": counts["chunks"],
            "memories": len(engine.bank.keys()),
        }
        last = self.checkpoints[-1]
        if wrong := [f"{k} {v:,}, not {last[k]:,}" for k, v in found.items() if v != last[k]]:
            raise BenchmarkError(
                f"The stopped soak's copy in {path} is not as its last checkpoint left it"
                f" ({'; '.join(wrong)}): delete that folder to start over."
            )

    def run(self) -> tuple[list[dict], list[dict], float]:
        """The events left, `batch` at a time, with a checkpoint every `every` and after the last: the
        checkpoints, the windows of the curve, the wall seconds (of every part of a resumed run)."""
        events, documents = self.options["events"], self.options["documents"]
        every, batch = self.options["checkpoint_every"], self.options["batch"]
        interval = _Interval()
        window = max(1, every // WINDOWS)
        start = time.perf_counter() - self.wall
        done = self.done
        while done < events:
            # a batch ends where a measure is due: the sentinels found, a disk sample, a window, a checkpoint
            due = [done + batch, events, *(_next(done, m) for m in (DISK_EVERY, window, every))]
            end = min(due + ([len(SENTINELS)] if done < len(SENTINELS) else []))
            began = time.perf_counter()
            kinds = self._events(range(done, end), documents)
            interval.batches.append((kinds, time.perf_counter() - began))
            done = end
            if done == len(SENTINELS):
                self._find_sentinels()
            if done % DISK_EVERY == 0:
                disk = _disk(self.engine)
                interval.disk.append((done, {k: disk[k] for k in RATIOS}))
            if done % window == 0 or done == events:
                self.windows.append(_window(interval, done, window))
            if done % every == 0 or done == events:
                self.checkpoints.append(self._checkpoint(interval, done))
                interval = _Interval()
                if done < events:
                    self._save(done, start)
        return self.checkpoints, self.windows, time.perf_counter() - start

    def _save(self, done: int, start: float) -> None:
        """Close the engine, copy its files with the run's state (RunFolder.save), open it again. (A run
        resumed from this copy counts the wall time up to it, not the copying.)"""
        self.engine.close()
        state = State(
            FORMAT,
            self.options,
            done,
            time.perf_counter() - start,
            self.resumed_at,
            self.rng.getstate(),
            self.folder.state(),
            self.sentinels,
            self.checkpoints,
            self.windows,
        )
        self.run_folder.save(state)
        self.engine.load()
        self.ingester = self.engine.ingester()

    def _events(self, numbers: range, documents: int) -> tuple[str, ...]:
        """Do these events on the disk, then hand the engine the one batch the watcher would gather from
        them; their kinds, in order."""
        kinds, batches = [], []
        for n in numbers:
            sentinel = n < len(SENTINELS)
            do = partial(self.folder.sentinel, n) if sentinel else _pick(self.folder, self.rng, documents)
            batches.append(do())
            kinds.append("sentinel" if sentinel else do.__name__)
        self._ingest(_gathered(batches))
        return tuple(kinds)

    def _ingest(self, batch: Batch) -> None:
        """What `Engine.watch` does with one watcher batch."""
        self.ingester.apply(batch)
        self.ingester.process_pending()
        self.engine.sync_memories()

    def _find_sentinels(self) -> None:
        """Each sentinel file's one chunk (a sentence is far below a chunk's 128 tokens), by its text."""
        texts = {fact: question for fact, question in SENTINELS}
        rows = self.engine.catalog.rows(
            "SELECT c.hash, c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.rel_path LIKE 'sentinel-%'"
        )
        self.sentinels = [(r["hash"], r["text"].strip(), texts[r["text"].strip()]) for r in rows]
        if len(self.sentinels) != len(SENTINELS):
            raise BenchmarkError(f"The {len(SENTINELS)} sentinel facts gave {len(self.sentinels)} chunks.")

    def _checkpoint(self, interval: _Interval, done: int) -> dict:
        began = time.perf_counter()
        engine = self.engine
        counts = engine.catalog.counts()
        row = {
            "events": done,
            "seconds": interval.seconds,  # the interval's events, timed
            "events_s": interval.events / interval.seconds,
            "live_files": len(self.folder.paths) + len(SENTINELS),
            "counts": {k: sum(kinds.count(k) for kinds, _ in interval.batches) for k in KINDS},
            "documents": counts["documents"],
            "chunks": counts["chunks"],
            "memories": len(engine.bank.keys()),
            **self._sentinel_checks(),
            **self._consistency(counts, len(self.folder.paths) + len(SENTINELS)),
            "disk": (disk := _disk(engine)),
            "disk_max": _largest([*(r for _, r in interval.disk), disk]),
            "latency": _latency(interval),
        }
        row["checkpoint_s"] = time.perf_counter() - began
        return row

    def _sentinel_checks(self) -> dict:
        """recall@5 of the sentinels' questions (fused; by the vector index alone; by an exact search of
        the stored vectors, which the index approximates), whether each sentinel's chunk text is in the
        catalog and its memory reads back from the bank, and for each sentinel missed by the fused top 5,
        its rank in each list (None: not in the first MISSED_DEPTH)."""
        retriever, engine = self.engine.retriever, self.engine
        found = vector_found = exact_found = readable = 0
        missed = []
        texts = engine.catalog.chunk_texts(h for h, _, _ in self.sentinels)
        exact = _ExactSearch(
            retriever, [r["hash"] for r in engine.catalog.rows("SELECT DISTINCT hash FROM chunks")]
        )
        for h, fact, question in self.sentinels:
            vector = retriever.embedder.embed([question])[0]
            in_fused = h in {hit.hash for hit in retriever.search(question, k=5)}
            ids = _graph_search(retriever, vector, 5)
            found += in_fused
            vector_found += bool(ids) and h in retriever.hashes(ids).values()
            exact_found += h in exact.nearest(vector, 5)
            if not in_fused:
                fused = [hit.hash for hit in retriever.search(question, k=MISSED_DEPTH)]
                deep = _graph_search(retriever, vector, MISSED_DEPTH)
                names = retriever.hashes(deep)
                lists = {"fused": fused, "vector": [names[i] for i in deep], "exact": exact.nearest(vector)}
                rank = {name: ranked.index(h) + 1 if h in ranked else None for name, ranked in lists.items()}
                missed.append({"question": question, "rank": rank})
            memory = engine.bank.get(h)
            readable += (
                texts.get(h, "").strip() == fact
                and memory is not None
                and memory.profile == engine.profile
                and memory.length == min(MAX_REFERENCE_TOKENS, len(engine.tokenizer.encode(texts[h])))
                and bool(torch.isfinite(memory.unpack(torch.float32, torch.device("cpu")).v).all())
            )
        n = len(self.sentinels)
        return {
            "recall_at_5": found / n,
            "vector_recall_at_5": vector_found / n,
            EXACT: exact_found / n,
            "missed": missed,
            "readable": readable / n,
        }

    def _consistency(self, counts: dict[str, int], live_files: int) -> dict:
        """`m3 doctor`'s checks (which must find nothing to repair), then whether the catalog has a document
        for each of the `live_files` and its chunks, the bank's memories and the index's items name the
        same texts, with no work left."""
        engine = self.engine
        found = engine.retriever.check() + engine.bank.verify()  # what the doctor would repair
        checks = doctor.run(engine)
        hashes = {r["hash"] for r in engine.catalog.rows("SELECT DISTINCT hash FROM chunks")}
        same = (
            set(engine.bank.keys(engine.profile.name)) == hashes
            and len(engine.retriever) == len(hashes)
            and engine.retriever.stored(hashes) == hashes
        )
        left = {k: counts[k] for k in ("pending", "jobs", "memories_to_write", "memories_to_drop")}
        return {
            "doctor": {c.name: c.detail for c in checks},
            "doctor_ok": all(c.ok for c in checks) and not found,
            "doctor_found": found,
            "same_texts": same,
            "work_left": left,
            "consistent": all(c.ok for c in checks)
            and not found
            and same
            and counts["documents"] == live_files
            and not any(left.values()),
        }


def _disk(engine: Engine) -> dict:
    """Bytes on disk of the data folder against live bytes, whole and by part (bank, catalog,
    retrieval): live is the bank's live records, the pages SQLite uses, the vector index file."""
    data = engine.home.data
    parts = {
        "bank": (data / "bank", engine.bank.stats()["live_bytes"]),
        "catalog": (engine.home.catalog, 0),
        "retrieval": (data / "retrieval", 0),
    }
    out: dict = {}
    for name, (where, live) in parts.items():
        files = sorted(where.rglob("*")) if where.is_dir() else list(where.parent.glob(where.name + "*"))
        sizes = {p: p.stat().st_size for p in files if p.is_file()}
        live += sum(_pages_in_use(p) for p in sizes if p.suffix == ".db")
        live += sum(size for p, size in sizes.items() if p.parent.name == "hnsw")
        wal = sum(size for p, size in sizes.items() if p.name.endswith(("-wal", "-shm")))
        out[name] = {"on_disk": sum(sizes.values()), "live": live, "wal": wal}
    on_disk, live, wal = (sum(p[k] for p in out.values()) for k in ("on_disk", "live", "wal"))
    return {
        "on_disk": on_disk,
        "live": live,
        "wal": wal,
        "ratio": on_disk / live,
        "ratio_without_wal": (on_disk - wal) / live,
        "bank_ratio": out["bank"]["on_disk"] / out["bank"]["live"],
        "parts": out,
    }


def _graph_search(retriever: Retriever, vector: np.ndarray, n: int) -> list[int]:
    """The HNSW index's own `n` nearest (the retriever searches exactly while the vectors are few): how
    well the graph holds up under the churn."""
    return [i for i, _ in retriever.index.search(vector, n)]


class _ExactSearch:
    """Cosine similarity against every stored vector (`ExactVectors`): what the HNSW index approximates,
    so that a sentinel it misses can be told apart as a worn index (found here) or a ranking among similar
    texts (not)."""

    def __init__(self, retriever: Retriever, hashes: list[str]) -> None:
        stored = retriever.vectors(hashes)
        self.names = list(stored)
        vectors = np.stack(list(stored.values()))
        self.vectors = ExactVectors(retriever.embedder.dim, np.arange(len(self.names)), vectors)

    def nearest(self, vector: np.ndarray, n: int = MISSED_DEPTH) -> list[str]:
        return [self.names[i] for i, _ in self.vectors.search(vector, n)]


def _p50_p95(latency: dict) -> str:
    return f"{latency['p50_ms']:.0f} / {latency['p95_ms']:.0f}" if latency["n"] else "–"


def _batches(batch: int) -> str:
    return "each event" if batch == 1 else f"every {batch} events (fewer where a measure is due)"


def _next(done: int, every: int) -> int:
    """The next multiple of `every` after `done`."""
    return (done // every + 1) * every


def _gathered(batches: list[Batch]) -> Batch:
    """The batches of events done one after another as the watcher gathers them in one debounce window:
    every path, the renames in order."""
    return Batch(
        frozenset().union(*(b.paths for b in batches)),
        tuple(m for b in batches for m in b.moves),
        sum(b.events for b in batches),
    )


def _largest(samples: list[dict[str, float]]) -> dict[str, float | None]:
    """The largest of each ratio over disk samples (None without samples)."""
    return {k: max((s[k] for s in samples), default=None) for k in RATIOS}


def _pages_in_use(path: Path) -> int:
    """The bytes of a SQLite database's pages that are not on its free list (WAL included)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        pages, free, size = (
            db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
    return (pages - free) * size


def _ms(seconds: list[float], q: float) -> float | None:
    """The q-th percentile in ms; None without samples (JSON has no NaN)."""
    return float(np.percentile(seconds, q)) * 1000 if seconds else None


def _per_event(batches: list[tuple[tuple[str, ...], float]]) -> list[float]:
    """Each event's seconds: its batch's, shared by the events in it."""
    return [s / len(kinds) for kinds, s in batches for _ in kinds]


def _latency(interval: _Interval) -> dict:
    """p50, p95 and max in ms of all the interval's events (a batch's time shared by its events), and of
    each kind of event alone in its batch (every event, one at a time)."""
    by_kind: dict[str, list[float]] = {k: [] for k in KINDS}
    by_kind["all"] = _per_event(interval.batches)
    for kinds, s in interval.batches:
        if len(kinds) == 1 and kinds[0] in by_kind:
            by_kind[kinds[0]].append(s)
    return {
        k: {"n": len(v), "p50_ms": _ms(v, 50), "p95_ms": _ms(v, 95), "max_ms": max(v, default=0.0) * 1000}
        for k, v in by_kind.items()
    }


def _window(interval: _Interval, done: int, size: int) -> dict:
    """The curve's point for the last `size` events: latency percentiles and the disk ratio's largest."""
    seconds = _per_event(interval.batches)[-size:]
    return {
        "events": done,
        "p50_ms": _ms(seconds, 50),
        "p95_ms": _ms(seconds, 95),
        "max_ms": max(seconds) * 1000,
        "disk_max": _largest([r for n, r in interval.disk if n > done - size]),
    }


def _held(checkpoints: list[dict]) -> dict:
    """Which of the soak's four checks held at every checkpoint; latency growth against the first
    interval, by kind of event."""
    first = checkpoints[0]["latency"]
    measured = [
        (f"{kind} {q}", first[kind][q], max(c["latency"][kind][q] for c in checkpoints))
        for kind in ("all", *KINDS)
        for q in ("p50_ms", "p95_ms")
        if first[kind]["n"] and all(c["latency"][kind]["n"] for c in checkpoints)
    ]
    growth = {name: worst / start for name, start, worst in measured}
    grown = [
        name
        for name, start, worst in measured
        if worst > max(MAX_LATENCY_GROWTH * start, start + LATENCY_SLACK_MS)
    ]
    largest = {k: max(c["disk_max"][k] for c in checkpoints) for k in RATIOS}
    return {
        "sentinels": all(c["recall_at_5"] == 1.0 and c["readable"] == 1.0 for c in checkpoints),
        "consistent": all(c["consistent"] for c in checkpoints),
        "disk": all(c["disk"]["ratio"] <= MAX_DISK_RATIO for c in checkpoints),  # the check
        "disk_max": largest,  # between checkpoints too, shown beside it: a small folder early on is over
        "latency": not grown,
        "latency_growth": growth,
        "latency_grown": grown,  # past MAX_LATENCY_GROWTH and LATENCY_SLACK_MS both
    }


def _figure(r: dict) -> plt.Figure:
    """Latency (p50, p95) and the disk ratio against events, one point per window."""
    w = r["windows"]
    x = [p["events"] for p in w]
    fig, (lat, disk) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    lat.plot(x, [p["p50_ms"] for p in w], label="p50")
    lat.plot(x, [p["p95_ms"] for p in w], label="p95")
    lat.set_yscale("log")
    lat.set_ylabel("ms per event")
    lat.legend(fontsize=8)
    names = {"ratio": "all files", "ratio_without_wal": "without SQLite's WAL", "bank_ratio": "bank alone"}
    for k, name in names.items():
        disk.plot(x, [p["disk_max"][k] for p in w], label=f"{name} (largest in the window)")
    disk.axhline(MAX_DISK_RATIO, linestyle="--", color="grey", label=f"bound {MAX_DISK_RATIO}")
    disk.set_ylabel("bytes on disk / live bytes")
    disk.set_xlabel("events")
    disk.legend(fontsize=8)
    fig.suptitle(f"Soak: {r['events']:,} events, about {r['documents']:,} live files")
    fig.tight_layout()
    return fig


def table(r: dict) -> str:
    """One row per checkpoint, then the four checks' verdicts and a line naming the setup and machine."""
    lines = [
        "| events | files | chunks | events/s | p50 / p95 ms (all) | edit p50 / p95 ms | recall@5"
        " (vector index alone, exact vector search) | readable | doctor, consistent"
        " | disk / live: all, without WAL, bank (largest) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for c in r["checkpoints"]:
        lat, edit = c["latency"]["all"], c["latency"]["edit"]
        disk, largest = c["disk"], c["disk_max"]
        lines.append(
            f"| {c['events']:,} | {c['live_files']:,} | {c['chunks']:,} | {c['events_s']:.1f}"
            f" | {lat['p50_ms']:.0f} / {lat['p95_ms']:.0f} | {_p50_p95(edit)}"
            f" | {c['recall_at_5']:.2f} ({c['vector_recall_at_5']:.2f}, {_share(c.get(EXACT))})"
            f" | {c['readable']:.2f}"
            f" | {'yes' if c['consistent'] else 'NO'}"
            f" | {' / '.join(f'{disk[k]:.2f} ({largest[k]:.2f})' for k in RATIOS)} |"
        )
    held, m = r["held"], r["machine"]
    worst = max(held["latency_growth"].items(), key=lambda kv: kv[1], default=("-", float("nan")))
    lines += [
        "",
        f"Held at every checkpoint: sentinels retrieved and readable {_yes(held['sentinels'])}; doctor and"
        f" cross-check consistent {_yes(held['consistent'])}; disk ≤ {MAX_DISK_RATIO}× live"
        f" {_yes(held['disk'])} (largest between checkpoints {held['disk_max']['ratio']:.2f}; without WAL"
        f" {held['disk_max']['ratio_without_wal']:.2f}; the bank alone {held['disk_max']['bank_ratio']:.2f});"
        f" latency within {MAX_LATENCY_GROWTH}× (or {LATENCY_SLACK_MS:.0f} ms) of the first interval's"
        f" {_yes(held['latency'])}"
        f" (largest ratio: {worst[0]} {worst[1]:.2f}×{_grown(held)}).",
        *_missed(r["checkpoints"]),
        "",
        f"{r['events']:,} events in {r['wall_s'] / 60:,.1f} min ({r['events_s']:.1f} events/s; a million:"
        f" {r['projected_1m_h']:.1f} h); memories written by a tiny random-weight Gemma 3 through the"
        f" engine's path, the real embedder. Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM;"
        f" {r['date']}.",
    ]
    return "\n".join(lines)


def _share(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _missed(checkpoints: list[dict]) -> list[str]:
    """A line naming each sentinel the fused top 5 missed, with its ranks (a run saved before they were
    recorded has none)."""
    misses = [
        f"at {c['events']:,} “{m['question']}” ("
        + ", ".join(f"{name} {'>' + str(MISSED_DEPTH) if r is None else r}" for name, r in m["rank"].items())
        + ")"
        for c in checkpoints
        for m in c.get("missed", [])
    ]
    return (
        ["", "Sentinels missed by the fused top 5, with their ranks: " + "; ".join(misses) + "."]
        if misses
        else []
    )


def _grown(held: dict) -> str:
    return f"; grown: {', '.join(held['latency_grown'])}" if held["latency_grown"] else ""


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"
