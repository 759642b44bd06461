"""`m3 bench editing`: knowledge editing on real files, in the spirit of ZsRE and CounterFact, through the
running engine service.

A seeded folder of generated Markdown notes holds invented facts (made-up companies, people, bridges,
ships...: the model cannot know them), one paragraph each, several per file. A real engine service in a
temporary home watches the folder. Each fact is edited once, in a shuffled order, and measured in one mode
(memory and rag take turns, so both meet the same conditions): its question is asked, and an unrelated
question from another file; the fact's value is changed in its file as an editor saves it (a temporary
file beside it, renamed over it); then the question is asked again and again, back to back, until the
answer says the new value and cites the edited paragraph. Time-to-effect runs from the save to the end of
that answer, so it holds the watcher, the parsing, the embedding, the memory writing and the answer.
Meanwhile a thread reads the service's status, to tell when it noticed the save and when it had caught
up. Once it has, the question, its paraphrase and the unrelated question are asked again (edit success,
generalisation, locality). The ceiling is the rag-mode answer with the new paragraph as its only
reference: what the model makes of the fact given as text.

An answer says a value when the value's SQuAD-normalised words (bench/squad.py) appear in it, in order,
and the other value (old or new) does not; it cites the paragraph when one of its citations is the
passage of the fact's file holding the paragraph's line.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bench.engine_settings import engine_settings, write_settings
from bench.errors import BenchmarkError
from bench.machine import machine_info
from bench.qa_eval import MAX_ANSWER_TOKENS
from bench.squad import normalize
from bench.tui_bench import percentile
from engine.chat.chat import stop_index
from engine.chat.prompt import PromptFormat, prompt_format
from engine.config import EngineConfig
from engine.models.gguf_file import GGUFFile
from engine.models.runtime import SINK_TEXT
from engine.retrieval.embedder import Embedder
from engine.service.client import (
    Citation,
    Citations,
    Client,
    Done,
    ServiceError,
    Withdrawn,
    connect_or_start,
    stop,
)
from ingest.atomic import write_atomic
from ingest.paths import Home

FACTS, QUICK_FACTS = 100, 4  # edited facts, half in each mode
PER_FILE, QUICK_PER_FILE = 5, 2  # facts (paragraphs) per file
MODES = ("memory", "rag")
SEED = 14
TIMEOUT_S = 60.0  # an edit whose effect is not seen by then counts as failed
SETTLE_S = 300.0  # the most the service may take to catch up after an edit before the run stops
POLL_S = 0.1
TARGETS = {"effect_p95_s": 5.0, "locality": 0.95, "success_gap": 0.05}


# --- the facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One kind of fact: its paragraph and questions, with {e} the entity, {v} the value, {x} a detail."""

    kind: str
    paragraph: str
    question: str
    paraphrase: str
    value: str  # what the value is: "place", "person", "year" or "height"
    details: tuple[str, ...]

    @property
    def texts(self) -> tuple[str, str, str]:
        return self.paragraph, self.question, self.paraphrase


TEMPLATES = (
    Template(
        "company",
        "{e} Works is a company that makes {x}. Its headquarters are in the city of {v}.",
        "In which city are the headquarters of {e} Works?",
        "Where is the company {e} Works based?",
        "place",
        ("glass lenses", "copper kettles", "rope ladders", "wool blankets", "clock springs", "paper lamps"),
    ),
    Template(
        "birthplace",
        "{e} is a {x} known across the northern valleys. {e} was born in the village of {v}.",
        "In which village was {e} born?",
        "What is the birthplace of {e}?",
        "place",
        ("painter", "clockmaker", "poet", "surveyor", "beekeeper", "violinist"),
    ),
    Template(
        "founder",
        "The {e} Society is a club for {x}. It was founded by {v}.",
        "Who founded the {e} Society?",
        "Who started the club called the {e} Society?",
        "person",
        ("amateur astronomers", "chess players", "bird watchers", "rowers", "map collectors", "gardeners"),
    ),
    Template(
        "bridge",
        "The {e} Bridge crosses the river {x}. It was opened in the year {v}.",
        "In what year was the {e} Bridge opened?",
        "When did the {e} Bridge open?",
        "year",
        ("Aldwen", "Morrow", "Tessel", "Quill", "Brannock", "Elsby"),
    ),
    Template(
        "captain",
        "The {e} is a cargo ship that carries {x} along the coast. Its captain is {v}.",
        "Who is the captain of the {e}?",
        "Who commands the ship called the {e}?",
        "person",
        ("salt", "timber", "grain", "coal", "olive oil", "tin"),
    ),
    Template(
        "album",
        "{e} is a folk band that plays the {x}. Their first album is called {v}.",
        "What is the first album of {e} called?",
        "What is the name of the debut album by the band {e}?",
        "place",
        ("fiddle", "hurdy-gurdy", "accordion", "harp", "banjo", "bagpipes"),
    ),
    Template(
        "mountain",
        "Mount {e} is the highest peak of the {x} range. It is {v} metres high.",
        "How high is Mount {e}?",
        "What is the height of Mount {e} in metres?",
        "height",
        ("Corran", "Velt", "Ishmar", "Duneth", "Karrow", "Olm"),
    ),
    Template(
        "lake",
        "{e} is a small market town known for its {x}. It lies on the shore of Lake {v}.",
        "On the shore of which lake does {e} lie?",
        "Which lake is the town of {e} next to?",
        "place",
        ("cheese fair", "old mill", "horse races", "stone church", "harbour", "spring market"),
    ),
)


@dataclass(frozen=True)
class Fact:
    """One invented fact: where its paragraph is, how it is asked, its value before and after the edit,
    and the mode whose answers measure its edit."""

    id: int
    file: str  # its file's name in the folder
    line: int  # its paragraph's line (1-based): one line per paragraph
    kind: str
    paragraph: str  # with {v} where the value goes
    question: str
    paraphrase: str
    old: str
    new: str
    mode: str

    def text(self, value: str) -> str:
        return self.paragraph.replace("{v}", value)


class _Names:
    """Invented words that no two calls repeat (seeded), to name entities and values."""

    ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "l", "m", "n", "p", "qu", "r", "s", "st", "t")
    ONSETS += ("tr", "v", "z", "th", "sh", "h", "w")
    VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ia")
    CODAS = ("", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "sk")
    TOWNS = ("by", "ton", "mere", "holm", "ford", "wick", "stead", "dale")

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def word(self, syllables: int, ending: str = "") -> str:
        while True:
            parts = [self.rng.choice(self.ONSETS) + self.rng.choice(self.VOWELS) for _ in range(syllables)]
            word = ("".join(parts) + self.rng.choice(self.CODAS) + ending).capitalize()
            if word not in self.used:
                self.used.add(word)
                return word

    def value(self, kind: str) -> str:
        if kind == "place":
            return self.word(2, self.rng.choice(self.TOWNS))
        if kind == "person":
            return f"{self.word(2)} {self.word(3)}"
        low, high = {"year": (1650, 1999), "height": (1200, 4800)}[kind]
        while (value := str(self.rng.randint(low, high))) in self.used:
            pass
        self.used.add(value)
        return value


def make_facts(n: int, per_file: int, seed: int = SEED) -> list[Fact]:
    """`n` invented facts, `per_file` to a file (files `notes-000.md`, ...), in the shuffled order they are
    edited in, modes taking turns (the first is memory). Every entity, value and new value is distinct.
    ValueError when `per_file` < 1 or the facts would fit in one file (locality asks from another)."""
    if per_file < 1 or n <= per_file:
        raise ValueError(f"{n} facts at {per_file} per file leave no other file to ask from")
    rng = random.Random(seed)
    names = _Names(rng)
    facts = []
    for i in range(n):
        t = TEMPLATES[i % len(TEMPLATES)]
        e, x = names.word(rng.choice((2, 3))), rng.choice(t.details)
        paragraph, question, paraphrase = (s.replace("{e}", e).replace("{x}", x) for s in t.texts)
        file, slot = divmod(i, per_file)
        line = 3 + 2 * slot  # after the title line and a blank line, paragraphs one blank line apart
        old, new = names.value(t.value), names.value(t.value)
        facts.append(
            Fact(i, f"notes-{file:03d}.md", line, t.kind, paragraph, question, paraphrase, old, new, "")
        )
    order = rng.sample(facts, n)
    return [Fact(**{**asdict(f), "mode": MODES[k % len(MODES)]}) for k, f in enumerate(order)]


def render(file: str, facts: Sequence[Fact], values: dict[int, str]) -> str:
    """The Markdown text of `file`: a title, then each of its facts' paragraphs with its current value."""
    mine = sorted((f for f in facts if f.file == file), key=lambda f: f.line)
    title = f"# Gazetteer notes, part {int(file.removeprefix('notes-').removesuffix('.md')) + 1}"
    return "\n\n".join([title, *(f.text(values[f.id]) for f in mine)]) + "\n"


def write_folder(folder: Path, facts: Sequence[Fact]) -> dict[int, str]:
    """Write every file of `facts` into `folder` (made) with the old values; the values written, by fact."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {f.id: f.old for f in facts}
    for file in sorted({f.file for f in facts}):
        (folder / file).write_text(render(file, facts, values))
    return values


def save_edit(folder: Path, fact: Fact, facts: Sequence[Fact], values: dict[int, str]) -> None:
    """Give `fact` its new value in `values` and save its file as an editor does: the whole text written
    to a temporary file beside it, fsynced and renamed over it (ingest.atomic.write_atomic)."""
    values[fact.id] = fact.new
    write_atomic(folder / fact.file, render(fact.file, facts, values))


# --- asking ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    text: str
    citations: list[Citation]
    seconds: float  # from the question sent to the answer's end
    withdrawn: Withdrawn | None = None  # the memory answer taken back before this one (read from text)


def ask(client: Client, question: str, mode: str) -> Reply:
    """One answer through the service, read to its end. ServiceError (one sentence) when it fails."""
    started = time.monotonic()
    text, citations, withdrawn = "", [], None
    with client.ask(question, mode) as stream:
        for event in stream:
            if isinstance(event, Withdrawn):
                withdrawn = event
            elif isinstance(event, Citations):
                citations = event.citations
            elif isinstance(event, Done):
                text = event.text
    return Reply(text, citations, time.monotonic() - started, withdrawn)


def holds(answer: str, value: str) -> bool:
    """Whether `value`'s normalised words appear in `answer`'s, in order."""
    return f" {normalize(value)} " in f" {normalize(answer)} "


def says(answer: str, value: str, other: str) -> bool:
    """Whether `answer` holds `value` and not `other`."""
    return holds(answer, value) and not holds(answer, other)


def cites(reply: Reply, path: Path, line: int) -> bool:
    """Whether one of the answer's citations is the passage of `path` holding `line`."""
    return any(c.path == str(path) and c.line_start <= line <= c.line_end for c in reply.citations)


def text_prompt(model_path: Path) -> PromptFormat:
    """The model's prompt format (engine/chat/prompt.py), for the ceiling. BenchmarkError for a model whose
    format needs control tokens (an instruct model's chat turns), which /v1/generate reads as plain text;
    ModelLoadError for a file that is not a readable GGUF."""
    gguf = GGUFFile.open(model_path)
    fmt = prompt_format(gguf.architecture, "tokenizer.chat_template" in gguf.metadata)
    if fmt.special:
        raise BenchmarkError(
            f"The text ceiling is asked as plain text, which {model_path.name}'s chat turns are not; "
            "run this benchmark with a base model."
        )
    return fmt


def ask_with_text(client: Client, fmt: PromptFormat, paragraph: str, question: str) -> Reply:
    """The rag-mode answer with `paragraph` as the only reference: the rag prompt (the sink, the text, then
    the question's body) continued greedily through /v1/generate and cut where an answer ends. The prompt
    is tokenized whole, where rag mode joins the pieces' tokens: the boundaries may split differently."""
    started = time.monotonic()
    text = ""
    with client.generate(SINK_TEXT + paragraph + fmt.body(question), MAX_ANSWER_TOKENS, 0.0, 1.0, None) as g:
        for event in g:
            if isinstance(event, Done):
                text = event.text
    cut = stop_index(text, fmt.stop)
    return Reply(text[:cut].strip() if cut is not None else text.strip(), [], time.monotonic() - started)


def settle(client: Client) -> None:
    """Wait until the service has nothing left to do (no file, chunk or memory pending). BenchmarkError
    after SETTLE_S seconds."""
    deadline = time.monotonic() + SETTLE_S
    while client.status().background != "idle":
        if time.monotonic() > deadline:
            raise BenchmarkError(f"The engine service did not catch up with the folder in {SETTLE_S:.0f} s.")
        time.sleep(POLL_S)


class Follower:
    """The service's background state read every POLL_S, in a thread with a client of its own, from the
    moment of a save: when the service first had work (its watcher noticed the save) and when it was idle
    again (the edit parsed, embedded, indexed and its memory written). Seconds since the save; None until
    then. Use it as a context manager around the save."""

    def __init__(self, home: Home) -> None:
        self._client = Client(home)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="m3-bench-follower", daemon=True)
        self.saved = 0.0
        self.noticed: float | None = None
        self.caught_up: float | None = None
        self.error: ServiceError | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.saved

    def wait(self) -> None:
        """Until the service has caught up, or has not noticed the save in TIMEOUT_S. BenchmarkError when
        it noticed but has not caught up after SETTLE_S; the ServiceError of a status it failed."""
        while self.caught_up is None and (self.noticed is not None or self.elapsed() < TIMEOUT_S):
            if self.error is not None:
                raise self.error
            if self.elapsed() > SETTLE_S:
                raise BenchmarkError(f"The engine service did not catch up with an edit in {SETTLE_S:.0f} s.")
            time.sleep(POLL_S)

    def _follow(self) -> None:
        while not self._done.wait(POLL_S) and self.caught_up is None:
            try:
                idle = self._client.status().background == "idle"
            except ServiceError as exc:
                self.error = exc
                return
            if not idle and self.noticed is None:
                self.noticed = self.elapsed()
            elif idle and self.noticed is not None:
                self.caught_up = self.elapsed()

    def __enter__(self) -> Follower:
        self.saved = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._client.close()


def edit(
    client: Client, fmt: PromptFormat, folder: Path, fact: Fact, facts: Sequence[Fact], values: dict[int, str]
) -> dict:
    """The whole measure of one fact's edit in its mode (module docstring): one record of
    editing-facts.jsonl, times in seconds since the save.

    The question is asked again and again after the save until the answer says the new value and cites
    its paragraph (`effect_s`: that answer's end), until an answer begun after the service caught up
    does not (the answer stays so: greedy decoding over an unchanged index; outcome `wrong`), or until
    TIMEOUT_S (`timeout`). The settled answer is the last one asked if it began after the service caught
    up, else one asked once it has (`Follower.wait`)."""
    path, mode = folder / fact.file, fact.mode
    other = _unrelated(fact, facts)
    before = ask(client, fact.question, mode)
    unrelated_before = ask(client, other.question, mode)
    effect = effect_answer = settled = None
    asks = 0
    with Follower(client.home) as follow:
        save_edit(folder, fact, facts, values)
        while settled is None and follow.elapsed() < TIMEOUT_S:
            asked = follow.elapsed()
            reply, asks = ask(client, fact.question, mode), asks + 1
            if follow.caught_up is not None and follow.caught_up <= asked:
                settled = reply
            if says(reply.text, fact.new, fact.old) and cites(reply, path, fact.line):
                effect, effect_answer = follow.elapsed(), reply.seconds
                break
        outcome = "effect" if effect is not None else "wrong" if settled is not None else "timeout"
        if settled is None:
            follow.wait()
            settled = ask(client, fact.question, mode)
    paraphrase = ask(client, fact.paraphrase, mode)
    unrelated_after = ask(client, other.question, mode)
    ceiling = ask_with_text(client, fmt, fact.text(fact.new), fact.question)
    return {
        "id": fact.id,
        "mode": mode,
        "kind": fact.kind,
        "file": fact.file,
        "line": fact.line,
        "question": fact.question,
        "paraphrase": fact.paraphrase,
        "old": fact.old,
        "new": fact.new,
        "before": before.text,
        "before_old": says(before.text, fact.old, fact.new),
        "outcome": outcome,
        "effect_s": effect,
        "effect_answer_s": effect_answer,  # the answer that first said it, its own time
        "effect_asks": asks,
        "noticed_s": follow.noticed,
        "caught_up_s": follow.caught_up,
        "after": settled.text,
        "after_withdrawn": _withdrawn(settled),
        "success": says(settled.text, fact.new, fact.old) and cites(settled, path, fact.line),
        "memory_alone": says(_first(settled), fact.new, fact.old) and cites(settled, path, fact.line),
        "answered": says(settled.text, fact.new, fact.old),
        "cited": cites(settled, path, fact.line),
        "confused": any(holds(settled.text, v) for f in facts if f is not fact for v in (f.old, f.new)),
        "paraphrase_answer": paraphrase.text,
        "paraphrase_withdrawn": _withdrawn(paraphrase),
        "generalised": says(paraphrase.text, fact.new, fact.old) and cites(paraphrase, path, fact.line),
        "unrelated_id": other.id,
        "unrelated_file": other.file,
        "unrelated_before": unrelated_before.text,
        "unrelated_after": unrelated_after.text,
        "unchanged": normalize(unrelated_before.text) == normalize(unrelated_after.text),
        "ceiling": ceiling.text,
        "ceiling_answered": says(ceiling.text, fact.new, fact.old),
        "answer_s": statistics.median(r.seconds for r in (before, paraphrase, unrelated_after)),
    }


def _withdrawn(reply: Reply) -> dict | None:
    return None if reply.withdrawn is None else msgspec.structs.asdict(reply.withdrawn)


def _first(reply: Reply) -> str:
    """The answer as the mode first gave it: a memory answer taken back is that one, not its re-read."""
    return reply.text if reply.withdrawn is None else reply.withdrawn.text


def _unrelated(fact: Fact, facts: Sequence[Fact]) -> Fact:
    """A fact of another file, drawn by the fact's id (the same one every run)."""
    others = [f for f in facts if f.file != fact.file]
    return random.Random(SEED * 1000 + fact.id).choice(others)


# --- the run ---------------------------------------------------------------------------------------


def run(
    home: Home,
    model_path: Path,
    device: str | None,
    output_dir: Path,
    quick: bool = False,
    profile: str | None = None,
    reader: str | None = None,
) -> tuple[dict, str]:
    """Edit FACTS facts, PER_FILE to a file (quick: QUICK_FACTS, QUICK_PER_FILE to a file), through an
    engine service started in a temporary home that borrows the cache of `home`, stopped at the end (on
    error too). profile, reader: that home's memory profile and reader (a reader file's path, or "trained" /
    "base"; default: the engine's defaults).
    Writes each fact's record to <output_dir>/editing-facts.jsonl; returns (results, Markdown table).
    Raises BenchmarkError for a model with chat turns (the ceiling's prompt is plain text) or when the
    service cannot catch up, ServiceError when it fails a request, ModelLoadError for an unreadable GGUF,
    UnknownProfileError or ReaderFileError for a profile or reader that does not exist, before anything
    loads."""
    settings = engine_settings(profile, reader)
    n, per_file = (QUICK_FACTS, QUICK_PER_FILE) if quick else (FACTS, PER_FILE)
    chosen = make_facts(n, per_file)
    fmt = text_prompt(model_path)
    started = time.monotonic()
    Embedder.load(home.cache / "embedder", device=device)  # exported now, not while the service loads
    with tempfile.TemporaryDirectory(prefix="m3-editing-bench-") as tmp:
        root = Path(tmp).resolve()
        bench_home = Home.at(root / "home")
        bench_home.make_private()
        bench_home.cache.symlink_to(home.cache.resolve(), target_is_directory=True)
        write_settings(bench_home, settings)
        config = EngineConfig.load(bench_home.config_file)
        folder = root / "notes"
        values = write_folder(folder, chosen)
        try:
            with connect_or_start(bench_home, model_path, device) as client:
                health = client.health()
                client.add_folder(folder)
                with client.scan(folder) as scan:  # parsed and memories written in front, as m3 ingest does
                    for _ in scan:
                        pass
                settle(client)
                setup = time.monotonic() - started  # the service started, the folder read
                records = [edit(client, fmt, folder, f, chosen, values) for f in chosen]
                chunks = client.status().chunks
        finally:
            stop(bench_home)
    write_atomic(output_dir / "editing-facts.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    results = {
        "facts": n,
        "files": len({f.file for f in chosen}),
        "per_file": per_file,
        "chunks": chunks,
        "profile": config.profile,
        "reader": config.reader,
        "seed": SEED,
        "timeout_s": TIMEOUT_S,
        "modes": {mode: summary([r for r in records if r["mode"] == mode]) for mode in MODES},
        "targets": TARGETS,
        "setup_s": setup,
        "duration_s": time.monotonic() - started,
        "model": Path(health.model or model_path).name,
        "device": health.device,
        "machine": machine_info(),
        "load_avg": os.getloadavg(),  # 1, 5, 15 min at the end: other work on the machine slows answers
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    results["met"] = met(results)
    return results, table(results)


def _share(records: Sequence[dict], key: str) -> float | None:
    return statistics.fmean(float(r[key]) for r in records) if records else None


def _quantile(times: Sequence[float | None], q: float) -> float | None:
    """The q-th percentile (0..100) of times where None is a timeout (later than any time); None when it
    falls among the timeouts or there are no times."""
    ordered = sorted(math.inf if t is None else t for t in times)
    if not ordered or ordered[math.ceil((len(ordered) - 1) * q / 100)] == math.inf:
        return None
    return percentile(ordered, q)


def summary(records: Sequence[dict]) -> dict:
    """One mode's shares (0..1) over its records and its times (seconds). Time-to-effect percentiles are
    over the edits that took effect or timed out (a timeout is later than any time); an edit the service
    caught up with but whose answer stayed wrong is a failure of the answer, counted in `wrong`."""
    effects = [r["effect_s"] for r in records if r["outcome"] != "wrong"]
    caught_up = [r["caught_up_s"] for r in records]
    answered = [r["effect_answer_s"] for r in records if r["outcome"] == "effect"]
    return {
        "n": len(records),
        "before_old": _share(records, "before_old"),
        "success": _share(records, "success"),
        "reread": statistics.fmean(r["after_withdrawn"] is not None for r in records) if records else None,
        "memory_alone": _share(records, "memory_alone"),
        "answered": _share(records, "answered"),
        "cited": _share(records, "cited"),
        "confused": _share(records, "confused"),
        "generalisation": _share(records, "generalised"),
        "locality": _share(records, "unchanged"),
        "ceiling": _share(records, "ceiling_answered"),
        "effect_p50_s": _quantile(effects, 50),
        "effect_p95_s": _quantile(effects, 95),
        "noticed_p50_s": _quantile([r["noticed_s"] for r in records], 50),
        "took_effect": sum(r["outcome"] == "effect" for r in records),
        "wrong": sum(r["outcome"] == "wrong" for r in records),
        "timeouts": sum(r["outcome"] == "timeout" for r in records),
        "caught_up_p50_s": _quantile(caught_up, 50),
        "caught_up_p95_s": _quantile(caught_up, 95),
        "effect_answer_s_median": statistics.median(answered) if answered else None,
        "answer_s_median": statistics.median(r["answer_s"] for r in records),
    }


def met(results: dict) -> dict:
    """Whether each target is met, by mode: p95 time-to-effect, locality, success against the ceiling."""
    t = results["targets"]
    out = {}
    for mode, s in results["modes"].items():
        out[mode] = {
            "effect_p95_s": s["effect_p95_s"] is not None and s["effect_p95_s"] <= t["effect_p95_s"],
            "locality": s["locality"] is not None and s["locality"] >= t["locality"],
            "success_gap": s["success"] is not None
            and s["ceiling"] is not None
            and s["ceiling"] - s["success"] <= t["success_gap"],
        }
    return out


# --- the report ------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _s(x: float | None, timeout: float | None = None) -> str:
    """Seconds; None is a time beyond `timeout` (a percentile among the timeouts), or none at all."""
    return f"{x:.2f} s" if x is not None else f"> {timeout:.0f} s" if timeout else "—"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(r: dict) -> str:
    modes, t, timeout = r["modes"], r["targets"], r["timeout_s"]
    lines = [
        f"{r['facts']} invented facts in {r['files']} files ({r['per_file']} one-paragraph facts each, "
        f"{r['chunks']} chunks), each edited once through the engine service, half in each mode; "
        f"memory profile {r['profile']}, reader {r['reader']}.",
        "",
        "| mode | facts | old value answered before | success | read again as text | success, first answer "
        "| new value answered | paragraph cited "
        "| another fact's value answered | generalisation | locality | text ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {mode} | {s['n']} | {_pct(s['before_old'])} | {_pct(s['success'])} | {_pct(s['reread'])} "
        f"| {_pct(s['memory_alone'])} | {_pct(s['answered'])} "
        f"| {_pct(s['cited'])} | {_pct(s['confused'])} | {_pct(s['generalisation'])} | {_pct(s['locality'])} "
        f"| {_pct(s['ceiling'])} |"
        for mode, s in modes.items()
    ]
    lines += [
        "",
        "| mode | took effect | answer stayed wrong | timed out | time to effect p50 | p95 "
        "| service noticed p50 | service caught up p50 | p95 | the answer that showed it (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {mode} | {s['took_effect']} | {s['wrong']} | {s['timeouts']} | {_s(s['effect_p50_s'], timeout)} "
        f"| {_s(s['effect_p95_s'], timeout)} | {_s(s['noticed_p50_s'], timeout)} "
        f"| {_s(s['caught_up_p50_s'], timeout)} "
        f"| {_s(s['caught_up_p95_s'], timeout)} | {_s(s['effect_answer_s_median'])} |"
        for mode, s in modes.items()
    ]
    lines += [
        "",
        "| target | " + " | ".join(modes) + " |",
        "|---|" + "---|" * len(modes),
        f"| time to effect p95 ≤ {t['effect_p95_s']:.0f} s | "
        + " | ".join(
            f"{_s(s['effect_p95_s'], timeout)}: {_yes(r['met'][m]['effect_p95_s'])}" for m, s in modes.items()
        )
        + " |",
        f"| locality ≥ {100 * t['locality']:.0f}% | "
        + " | ".join(f"{_pct(s['locality'])}: {_yes(r['met'][m]['locality'])}" for m, s in modes.items())
        + " |",
        f"| success within {100 * t['success_gap']:.0f} points of the text ceiling | "
        + " | ".join(
            f"{_pct(s['success'])} vs {_pct(s['ceiling'])}: {_yes(r['met'][m]['success_gap'])}"
            for m, s in modes.items()
        )
        + " |",
    ]
    m = r["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; {r['model']} on {r['device']}; "
        f"load average {' '.join(f'{x:.1f}' for x in r['load_avg'])}; "
        f"{r['duration_s'] / 60:.0f} min; {r['date']}.",
    ]
    return "\n".join(lines)
