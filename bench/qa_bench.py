"""`m3 bench qa`: memory against RAG against no sources, on real QA data, through the real pipeline.

The XQuAD articles (SQuAD v1.1 dev) are written as Markdown files, one per article, and go through the
same ingest, retrieval and memory writing as a user's folder. Every question is asked in each setting:
`none`, `rag`, and `memory` with several memory profiles; the sweep then varies one knob of the default
memory at a time (layers, tokens kept, bits, positions, memories per reading, re-reading interval).
All settings share the prompt, the greedy decoding and, for a question, the retrieved chunks.

The first half of the articles (XQuAD: 0-23) tunes prompt and profile; the second half (24-47) is held
out and reported apart. SQuAD v2's unanswerable
questions, over their own two articles, measure how often the assistant abstains. The speed part times
`memory` and `rag` on our runtime and `rag` on llama.cpp with 1, 5 and 10 retrieved chunks.
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from bench import qa_plots, squad
from bench.engine_bench import decode_llamacpp, open_llamacpp
from bench.engine_settings import engine_settings, write_settings
from bench.errors import QADataMissingError
from bench.machine import machine_info
from bench.qa_corpus import holds_gold, write_articles
from bench.qa_eval import MAX_FALSE_ABSTAIN, Outcome, ask_all, calibrate, quality, speed, withdrawn_share
from engine.chat.chat import Chat
from engine.chat.generation import CHUNK_TOKENS
from engine.chat.prompt import BASE, PromptFormat
from engine.config import EngineConfig
from engine.facade import Engine
from engine.memory.bank import MemoryBank
from engine.memory.profiles import PROFILES, MemoryProfile
from engine.memory.reader import MemoryReader
from engine.memory.store import MemoryStore
from engine.models.runtime import Runtime
from engine.retrieval.embedder import Embedder
from ingest.atomic import write_atomic
from ingest.paths import Home

log = logging.getLogger(__name__)

DATA_ENV = "M3_QA_DATA"  # where xquad-en/ and squad-v2-dev-subset/ are; default: ../shared/data/qa
K = 5  # retrieved chunks (memories) per reading: the engine's default
MAIN_PROFILES = ("dense", "dense-int4", "top75", "top50", "first-half", "paper")
WITHIN = 0.02  # the default profile: the smallest memory whose held-out F1 is within 2% of the best
SPEED_K = (1, 5, 10)
SPEED_TOKENS = 32  # decoded without stopping, to time decoding
SPEED_QUESTIONS = 5
RESAMPLES = 10_000  # bootstrap resamples of the held-out questions for the memory/RAG F1 ratio


@dataclass(frozen=True)
class Plan:
    """What a run covers. None: every question of that kind."""

    articles: int | None  # XQuAD articles ingested per split, the first ones of each half
    tune: int | None  # questions per split
    heldout: int | None
    unanswerable: int | None
    v2_articles: int | None  # SQuAD v2 articles ingested, the first ones
    sweep: bool
    prompts: bool
    speed_questions: int  # 0: no speed part
    main_only: bool = False  # only none, rag and the default memory profile


FULL = Plan(None, None, None, None, None, sweep=True, prompts=True, speed_questions=SPEED_QUESTIONS)
QUICK = Plan(2, 25, 25, 10, 1, sweep=False, prompts=False, speed_questions=1)


def sampled(questions: int) -> Plan:
    """The full run on a seeded sample of `questions` per split (and as many unanswerable ones)."""
    return replace(FULL, tune=questions, heldout=questions, unanswerable=questions)


def main_only(plan: Plan) -> Plan:
    """`--main`: the questions of `plan` asked in none, rag and the default memory profile only."""
    return replace(plan, sweep=False, prompts=False, speed_questions=0, main_only=True)


@dataclass(frozen=True)
class Setting:
    """One way of answering: mode, memory profile, chunks per reading, re-reading interval, prompt."""

    mode: str
    profile: MemoryProfile | None = None
    k: int = K
    interval: int = CHUNK_TOKENS
    prompt: PromptFormat = BASE
    reader: str = "configured"  # memory mode: the engine's configured reader, or "base" (none)
    knob: str = ""  # what the sweep varies here, and to what
    value: str = ""

    @property
    def label(self) -> str:
        name = self.profile.name if self.profile else self.mode
        return f"{self.mode}/{name} k={self.k} every {self.interval} prompt={self.prompt.name}"


# --- prompts compared on the tuning split ----------------------------------------------------------

_TWO_SHOT = (  # the format before the evaluation: no abstention
    "\n\nAnswer each question in a few words, using the references above."
    "\n\nQuestion: Which city is the Louvre museum in?\nAnswer: Paris"
    "\n\nQuestion: How many legs does a spider have?\nAnswer: eight"
)
_SPAN_SHOT = (
    "\n\nAnswer each question with the shortest words from the references above."
    "\n\nQuestion: In what year did the bridge open?\nAnswer: 1932"
    "\n\nQuestion: Who designed the first steam locomotive?\nAnswer: Richard Trevithick"
    "\n\nQuestion: What does the museum keep in its basement?\nAnswer: the city archive"
)
PROMPTS = (  # the engine's own first
    BASE,
    replace(BASE, name="two-shot", before=_TWO_SHOT + "\n\nQuestion: "),
    replace(BASE, name="bare", before="\n\nQuestion: "),
    replace(BASE, name="spans", before=_SPAN_SHOT + "\n\nQuestion: "),
)


# --- the sweep: one knob of the default memory at a time -------------------------------------------


def sweep_settings(default: MemoryProfile, n_layer: int) -> list[Setting]:
    def vary(knob: str, value: str, name: str, **change) -> Setting:
        profile = replace(default, **change)
        known = [n for n, p in PROFILES.items() if _shape(p) == _shape(profile)]
        if not known and name in PROFILES:  # a named profile's change on another default: a name of its own
            name = f"{name}-{profile.positions}"
        return Setting("memory", replace(profile, name=known[0] if known else name), knob=knob, value=value)

    other = "sequential" if default.positions == "parallel" else "parallel"

    return [
        vary("layers", "first half", "first-half", layers="first_half"),
        vary("layers", "second half", "second-half", layers=tuple(range(n_layer // 2, n_layer))),
        vary("tokens", "75%", "top75", tokens=0.75),
        vary("tokens", "50%", "top50", tokens=0.5),
        vary("tokens", "25%", "top25", tokens=0.25),
        vary("bits", "16", "dense-fp16", bits=16),
        vary("bits", "8", "dense", bits=8),
        vary("bits", "4", "dense-int4", bits=4),
        vary("positions", other, f"dense-{other}", positions=other),
        vary("combined", "75% tokens, 4 bits", "top75-int4", tokens=0.75, bits=4),
        vary("combined", "50% tokens, 4 bits", "top50-int4", tokens=0.5, bits=4),
        Setting("memory", default, k=3, knob="memories", value="3"),
        Setting("memory", default, k=8, knob="memories", value="8"),
        Setting("memory", default, interval=32, knob="interval", value="32"),
        Setting("memory", default, interval=128, knob="interval", value="128"),
        Setting("memory", default, reader="base", knob="reader", value="base"),
    ]


def _shape(profile: MemoryProfile) -> MemoryProfile:
    """A profile without its name: two profiles of one shape write the same memories."""
    return replace(profile, name="")


# --- a corpus ingested through the real pipeline, with one bank per memory profile -------------------


class Lab:
    """A data set's articles as files in their own memory3 home: catalog, retrieval and memory banks."""

    def __init__(
        self,
        runtime: Runtime,
        embedder: Embedder,
        home: Path,
        dataset: squad.Dataset,
        articles: Sequence[int],
        settings: Mapping[str, str] | None = None,
    ):
        """settings: `[engine]` settings of the lab's config.toml (such as profile, reader; default: none)."""
        self.home, self.dataset = home, dataset
        self.paths = write_articles(dataset, articles, home / "documents")
        write_settings(Home.at(home), settings or {})
        self.engine = Engine.open(home, runtime=runtime, embedder=embedder)
        self.engine.reader  # noqa: B018 - a reader file that does not fit stops the run before any question
        self.engine.add_folder(home / "documents")
        self.engine.scan()
        work = self.engine.catalog.pending_memory_work()
        self.chunks = [(w.hash, w.text) for w in work if w.action == "write" and w.text is not None]
        self.engine.sync_memories()  # retrieval index, and the configured profile's memories
        self.stores: dict[str, MemoryStore] = {self.engine.config.profile: self.engine.store}

    def store(self, profile: MemoryProfile) -> MemoryStore:
        """The profile's bank, every chunk's memory written ahead as an ingest would."""
        if profile.name not in self.stores:
            bank = MemoryBank(self.home / "banks" / profile.name, self.engine.config.bank_budget_bytes)
            self.stores[profile.name] = self.engine.memory_store(bank, profile)
            self.stores[profile.name].store(self.chunks)
        return self.stores[profile.name]

    def chat(self, s: Setting, focus: bool = True) -> Chat:
        """The chat of setting `s`; focus=False reads all k retrieved chunks (`Chat`), to time reading k.
        Memory answers are never read again as text here (`reread`): this benchmark measures how well
        memories are read, against the same chunks as text."""
        store = self.store(s.profile) if s.mode == "memory" and s.profile else None
        sources = self.engine.sources.with_store(store)
        runtime, reader = self.engine.runtime, self.reader(s)
        options = dict(k=s.k, interval=s.interval, reader=reader, focus=focus, reread=False)
        return Chat(runtime, sources, s.prompt, **options)

    def reader(self, s: Setting) -> MemoryReader | None:
        return self.engine.reader if s.reader == "configured" else None

    def reader_name(self, s: Setting) -> str:
        """What reads memories in `s`: the reader's name, or "base" (the model itself, no reader)."""
        reader = self.reader(s)
        return reader.name if reader is not None else "base"

    def bank_size(self, profile: MemoryProfile) -> tuple[float, int]:
        """(bytes per memory, bank bytes on disk) of the profile's bank."""
        stats = self.store(profile).bank.stats()
        return stats["live_bytes"] / max(stats["records"], 1), stats["file_bytes"]

    def recall_at(self, questions: Sequence[squad.Question], k: int = K) -> float:
        """Share of questions whose gold passage is among the k chunks retrieved for them."""
        search = self.engine.sources.search
        hits = [any(holds_gold(c, q, self.paths) for c in search(q.text, k)) for q in questions]
        return statistics.fmean(hits) if hits else 0.0

    def close(self) -> None:
        for store in self.stores.values():
            if store is not self.engine.__dict__.get("store"):
                store.bank.close()
        self.engine.close()


# --- the run ---------------------------------------------------------------------------------------


def data_folder() -> Path:
    folder = Path(os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data" / "qa")
    if not (folder / "xquad-en" / "xquad.en.json").is_file():
        raise QADataMissingError(
            f"The QA data (xquad-en/, squad-v2-dev-subset/) is not in {folder}; set {DATA_ENV} to its folder."
        )
    return folder


def pick(questions: Sequence[squad.Question], articles: Sequence[int], n: int | None, seed: int) -> list:
    """The questions of these articles: all, or a seeded sample of n in file order."""
    chosen = [q for q in questions if q.article in set(articles)]
    if n is None or n >= len(chosen):
        return chosen
    keep = set(random.Random(seed).sample(range(len(chosen)), n))
    return [q for i, q in enumerate(chosen) if i in keep]


def run(
    home: Home,
    model_path: Path,
    device: str | None,
    output_dir: Path,
    quick: bool = False,
    sample: int | None = None,
    main: bool = False,
    plan: Plan | None = None,
    profile: str | None = None,
    reader: str | None = None,
) -> tuple[dict, str]:
    """quick: a 50-question slice; sample: a seeded sample of that many questions per split (and as many
    unanswerable ones) from all articles; otherwise every question. main: only none, rag and the default
    memory profile (no sweep, prompts or speed part). profile, reader: the engine settings the run takes
    as its default memory profile and reader (a reader file's path, or "trained" / "base"; default: the
    engine's defaults); an unknown profile or a reader file that does not fit is one sentence
    (UnknownProfileError, ReaderFileError, ReaderMismatchError) before any question is asked."""
    settings = engine_settings(profile, reader)  # a wrong one stops the run before anything loads
    plan = plan or (QUICK if quick else sampled(sample) if sample else FULL)
    plan = main_only(plan) if main else plan
    started = time.perf_counter()
    data = data_folder()
    xquad = squad.load(data / "xquad-en" / "xquad.en.json")
    v2 = squad.load(data / "squad-v2-dev-subset" / "dev-v2.0-subset.json")
    decode_weights = EngineConfig.load(home.config_file).decode_weights
    rt = Runtime.load(model_path, device=device, cache=home.cache, decode_weights=decode_weights)
    embedder = Embedder.load(home.cache / "embedder", device=device)
    half = len(xquad.articles) // 2
    tune_articles, heldout_articles = range(half)[: plan.articles], range(half, 2 * half)[: plan.articles]
    articles = (*tune_articles, *heldout_articles)
    tune = pick(xquad.questions, tune_articles, plan.tune, seed=1)
    heldout = pick(xquad.questions, heldout_articles, plan.heldout, seed=2)
    v2_articles = range(len(v2.articles))[: plan.v2_articles]
    unanswerable = pick([q for q in v2.questions if not q.answers], v2_articles, plan.unanswerable, seed=3)
    with tempfile.TemporaryDirectory(prefix="m3-qa-") as tmp:
        lab = Lab(rt, embedder, Path(tmp) / "xquad", xquad, articles, settings)
        lab_v2 = Lab(rt, embedder, Path(tmp) / "v2", v2, v2_articles, settings)
        try:
            results = _measure(rt, plan, lab, lab_v2, Questions(tune, heldout, unanswerable))
        finally:
            lab.close()
            lab_v2.close()
    results["questions"] = {"tune": len(tune), "heldout": len(heldout), "unanswerable": len(unanswerable)}
    results["corpus"] = {
        "articles": len(articles),
        "chunks": len(lab.chunks),
        "v2_chunks": len(lab_v2.chunks),
    }
    results["plan"] = {
        "name": ("main " if plan.main_only else "")
        + ("quick" if plan.articles else "full" if plan.tune is None else "sample"),
        **asdict(plan),
    }
    results["duration_s"] = time.perf_counter() - started
    results["machine"] = machine_info()
    results["model"] = {"file": rt.path.name, "arch": rt.model.config.arch, "layers": rt.model.config.n_layer}
    results["device"] = str(rt.model.device)
    results["decode_weights"] = decode_weights if rt.model.head_int4 is not None else "bf16"
    results["threads"] = torch.get_num_threads()
    results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    answers = results.pop("answers")
    write_atomic(output_dir / "qa-answers.jsonl", "".join(json.dumps(a) + "\n" for a in answers))
    qa_plots.save(results, output_dir)
    return results, table(results)


@dataclass(frozen=True)
class Questions:
    tune: list[squad.Question]
    heldout: list[squad.Question]
    unanswerable: list[squad.Question]  # SQuAD v2, asked over their own articles


def _measure(rt: Runtime, plan: Plan, lab: Lab, lab_v2: Lab, qs: Questions) -> dict:
    recall = lab.recall_at(qs.tune + qs.heldout)
    default = PROFILES[lab.engine.config.profile]
    profiles = dict.fromkeys((default.name, *(() if plan.main_only else MAIN_PROFILES)))  # the default first
    main = [Setting("none"), Setting("rag")] + [Setting("memory", PROFILES[p]) for p in profiles]
    measured_main = [_record(s, lab, lab_v2, qs, recall, calibrated=True) for s in main]
    records = [{**r, "table": "main"} for r, _ in measured_main]
    answers = [
        o.row(s.label, split)
        for s, (_, by_split) in zip(main, measured_main, strict=True)
        for split, outcomes in by_split.items()
        for o in outcomes
    ]
    rag_f1, memory_f1 = ([o.f1 for o in by_split["heldout"]] for _, by_split in measured_main[1:3])
    if plan.sweep:
        measured = {
            (_shape(s.profile), s.k, s.interval, lab.reader_name(s)): r
            for s, r in zip(main, records, strict=True)
            if s.profile
        }
        for s in sweep_settings(default, rt.model.config.n_layer):
            same = measured.get((_shape(s.profile), s.k, s.interval, lab.reader_name(s)))
            if same is not None:  # already in the main table: label it, do not ask again
                same["knob"], same["value"] = s.knob, s.value
            else:
                record, _ = _record(s, lab, lab_v2, replace(qs, unanswerable=[]), recall)
                records.append({**record, "table": "sweep"})
    prompts = []
    if plan.prompts:
        for prompt in PROMPTS:
            for s in (Setting("rag", prompt=prompt), Setting("memory", default, prompt=prompt)):
                outcomes = _ask(lab, s, qs.tune)
                prompts.append({"prompt": prompt.name, "mode": s.mode, **quality(outcomes)})
    speed = _speed(rt, lab, default, qs.heldout[: plan.speed_questions]) if plan.speed_questions else []
    return {
        "records": records,
        "answers": answers,
        "prompts": prompts,
        "speed": speed,
        "default": choose_default(records),
        "f1_ratio_heldout": {
            **f1_ratio(memory_f1, rag_f1, seed=0),
            "memory_profile": default.name,
            "reader": lab.reader_name(main[2]),
        },
    }


def f1_ratio(memory: Sequence[float], rag: Sequence[float], seed: int, resamples: int = RESAMPLES) -> dict:
    """Mean F1 of `memory` over mean F1 of `rag`, paired by question, with a percentile bootstrap 95%
    interval (Efron & Tibshirani 1993, ch. 13): the questions are resampled with replacement, the same
    draw for both modes. ratio and ci95 are None when rag scored nothing; ci95's upper end is None when
    more than 2.5% of the draws hold no rag credit (a handful of questions)."""
    n = len(memory)
    if n != len(rag):
        raise ValueError(f"{n} memory answers against {len(rag)} rag answers: they must be paired")
    both = np.array([memory, rag], dtype=np.float64).reshape(2, n)
    if n == 0 or both[1].sum() == 0:
        return {"ratio": None, "ci95": None, "n_heldout": n, "resamples": resamples}
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    sums = both[:, draws].sum(axis=-1)  # (2, resamples)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratios = sums[0] / sums[1]  # a draw with no rag credit is +inf (or nan: no credit at all)
    bounds = np.nanpercentile(ratios, [2.5, 97.5], method="inverted_cdf")  # drawn values: inf stays inf
    return {
        "ratio": float(both[0].sum() / both[1].sum()),
        "ci95": [float(b) if np.isfinite(b) else None for b in bounds],  # None: no upper bound (few answers)
        "n_heldout": n,
        "resamples": resamples,
    }


def _ask(
    lab: Lab, s: Setting, questions: list[squad.Question], score: bool = True, support: bool = False
) -> list[Outcome]:
    t = time.perf_counter()
    gold = lambda c, q: holds_gold(c, q, lab.paths)  # noqa: E731
    outcomes = ask_all(lab.chat(s), questions, s.mode, score, gold, support=support)
    log.info("%s: %d questions in %.0f s", s.label, len(questions), time.perf_counter() - t)
    return outcomes


def _record(
    s: Setting, lab: Lab, lab_v2: Lab, qs: Questions, recall: float, calibrated: bool = False
) -> tuple[dict, dict[str, list[Outcome]]]:
    """The setting's record, and its answers by split ("tune", "heldout", "unanswerable"; in question
    order: the bootstrap pairs held-out answers). calibrated: measure each answer's support and confidence
    and calibrate abstention on support (`abstention`)."""
    answered = _ask(lab, s, qs.tune + qs.heldout, support=calibrated)
    t, h = quality(answered[: len(qs.tune)]), quality(answered[len(qs.tune) :])
    unanswered = _ask(lab_v2, s, qs.unanswerable, score=False, support=calibrated) if qs.unanswerable else []
    abstained = quality(unanswered)["abstain"] if unanswered else None
    per_memory, bank = lab.bank_size(s.profile) if s.mode == "memory" else (None, None)
    return {
        "mode": s.mode,
        "profile": s.profile.name if s.profile else None,
        "retrieved": s.k if s.mode != "none" else 0,
        "interval": s.interval if s.mode == "memory" else None,
        "knob": s.knob or None,
        "value": s.value or None,
        "f1": t["f1"],
        "em": t["em"],
        "f1_heldout": h["f1"],
        "em_heldout": h["em"],
        "gold_logprob": quality(answered)["gold_logprob"],
        "gold_logprob_tune": t["gold_logprob"],
        "gold_logprob_heldout": h["gold_logprob"],
        "reader": lab.reader_name(s) if s.mode == "memory" else "base",
        "recall_at_5": recall if s.mode != "none" else None,
        "citation_at_1": quality(answered)["citation_at_1"],
        **speed(answered),
        "bytes_per_memory": per_memory,
        "bank_bytes": bank,
        "abstain_unanswerable": abstained,
        "abstain_answerable": quality(answered)["abstain"],
        "abstention": (
            abstention(answered[: len(qs.tune)], answered[len(qs.tune) :], unanswered)
            if calibrated and s.mode != "none"
            else None
        ),
    }, {"tune": answered[: len(qs.tune)], "heldout": answered[len(qs.tune) :], "unanswerable": unanswered}


def abstention(tune: list[Outcome], heldout: list[Outcome], unanswerable: list[Outcome]) -> dict:
    """Abstention below a support threshold chosen on the answerable tuning questions (at most
    MAX_FALSE_ABSTAIN of them withdrawn), reported on each split: the unanswerable questions of SQuAD v2's
    first article (Normans) beside the tuning split, those of the others (Rhine) beside the held-out one.
    unanswerable: the share of unanswerable questions withdrawn; answerable: of answerable ones (false)."""
    threshold = calibrate(tune)
    first = [o for o in unanswerable if o.question.article == 0]
    others = [o for o in unanswerable if o.question.article != 0]
    return {
        "signal": "support",
        "threshold": threshold,
        "max_false": MAX_FALSE_ABSTAIN,
        "tune": {
            "unanswerable": withdrawn_share(first, threshold),
            "answerable": withdrawn_share(tune, threshold),
        },
        "heldout": {
            "unanswerable": withdrawn_share(others, threshold),
            "answerable": withdrawn_share(heldout, threshold),
        },
    }


def choose_default(records: list[dict]) -> dict:
    """The smallest memory profile whose held-out F1 is within WITHIN of the best profile's."""
    profiles = [
        r for r in records if r["mode"] == "memory" and r["retrieved"] == K and r["interval"] == CHUNK_TOKENS
    ]
    best = max(profiles, key=lambda r: r["f1_heldout"])
    close = [r for r in profiles if r["f1_heldout"] >= (1 - WITHIN) * best["f1_heldout"]]
    chosen = min(close, key=lambda r: r["bytes_per_memory"])
    return {
        "profile": chosen["profile"],
        "f1_heldout": chosen["f1_heldout"],
        "bytes_per_memory": chosen["bytes_per_memory"],
        "best_profile": best["profile"],
        "best_f1_heldout": best["f1_heldout"],
        "rule": f"smallest bytes per memory with held-out F1 >= {1 - WITHIN:.2f} x the best",
    }


def _speed(rt: Runtime, lab: Lab, profile: MemoryProfile, questions: list[squad.Question]) -> list[dict]:
    """Time to first token and decode rate, memory vs RAG (ours) vs RAG (llama.cpp), by chunks read."""
    lc = open_llamacpp(rt.path, torch.get_num_threads())
    rows = []
    for k in SPEED_K:
        for mode, engine in (("memory", "ours"), ("rag", "ours"), ("rag", "llama.cpp")):
            chat = lab.chat(Setting(mode, profile if mode == "memory" else None, k=k), focus=False)
            measure = _time_llamacpp if engine == "llama.cpp" else _time_ours
            measure(chat, mode, lc, questions[0])  # warm-up
            times = [measure(chat, mode, lc, q) for q in questions]
            rows.append(
                {
                    "retrieved": k,
                    "mode": mode,
                    "engine": engine,
                    "ttft_s": statistics.median(t for t, _ in times),
                    "decode_tok_s": statistics.median(d for _, d in times),
                }
            )
            log.info("speed %s", rows[-1])
    return rows


def _time_ours(chat: Chat, mode: str, lc, q: squad.Question) -> tuple[float, float]:
    start = time.perf_counter()
    gen, _ = chat.generation(q.text, mode, SPEED_TOKENS, stop=False)
    pieces = gen.run()
    next(pieces)
    first = time.perf_counter()
    for _ in pieces:
        pass
    return first - start, (len(gen.tokens) - 1) / (time.perf_counter() - first)


def _time_llamacpp(chat: Chat, mode: str, lc, q: squad.Question) -> tuple[float, float]:
    start = time.perf_counter()
    gen, _ = chat.generation(q.text, mode, SPEED_TOKENS, stop=False)  # the same retrieval and prompt
    lc.next_logits(gen.prompt)
    ttft = time.perf_counter() - start
    return ttft, SPEED_TOKENS / decode_llamacpp(lc, gen.prompt, SPEED_TOKENS)


# --- the report ------------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _bytes(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**20:.1f}"


def table(r: dict) -> str:
    q = r["questions"]
    lines = [
        f"Questions: {q['tune']} tuning, {q['heldout']} held out, {q['unanswerable']} unanswerable "
        f"({r['plan']['name']} run, {r['corpus']['chunks']} chunks, {r['duration_s'] / 60:.0f} min).",
        "",
        "| mode | profile | F1 | EM | F1 held-out | EM held-out | gold log-prob | gold log-prob held-out "
        "| recall@5 | cited@1 | TTFT s | decode tok/s | bytes/memory | bank MiB | abstains (unanswerable) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["records"]:
        if x["table"] != "main":
            continue
        lines.append(
            f"| {x['mode']} | {x['profile'] or '—'} | {_f(x['f1'])} | {_f(x['em'])} | {_f(x['f1_heldout'])} "
            f"| {_f(x['em_heldout'])} | {_f(x['gold_logprob'], 2)} | {_f(x['gold_logprob_heldout'], 2)} "
            f"| {_f(x['recall_at_5'], 2)} "
            f"| {_f(x['citation_at_1'], 2)} "
            f"| {_f(x['ttft_s'])} | {_f(x['decode_tok_s'], 1)} "
            f"| {_bytes(x['bytes_per_memory'])} | {_mib(x['bank_bytes'])} "
            f"| {_f(x['abstain_unanswerable'], 2)} |"
        )
    calibrated = [x for x in r["records"] if x["table"] == "main" and x.get("abstention")]
    if calibrated:
        lines += [
            "",
            "| mode | profile | abstain below (support) | abstains, unanswerable (tuning) "
            "| false, answerable (tuning) | abstains, unanswerable (held-out) "
            "| false, answerable (held-out) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for x in calibrated:
            a = x["abstention"]
            lines.append(
                f"| {x['mode']} | {x['profile'] or '—'} | {_f(a['threshold'], 2)} "
                f"| {_f(a['tune']['unanswerable'], 2)} | {_f(a['tune']['answerable'], 2)} "
                f"| {_f(a['heldout']['unanswerable'], 2)} | {_f(a['heldout']['answerable'], 2)} |"
            )
    sweep = [x for x in r["records"] if x["knob"]]
    if sweep:
        lines += [
            "",
            "| knob | value | profile | F1 | F1 held-out | gold log-prob | bytes/memory |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {x['knob']} | {x['value']} | {x['profile']} | {_f(x['f1'])} | {_f(x['f1_heldout'])} "
            f"| {_f(x['gold_logprob'], 2)} | {_bytes(x['bytes_per_memory'])} |"
            for x in sweep
        ]
    if r["prompts"]:
        lines += ["", "| prompt | mode | F1 (tuning) | EM (tuning) | abstains |", "|---|---|---:|---:|---:|"]
        lines += [
            f"| {p['prompt']} | {p['mode']} | {_f(p['f1'])} | {_f(p['em'])} | {_f(p['abstain'], 2)} |"
            for p in r["prompts"]
        ]
    if r["speed"]:
        lines += ["", "| chunks | mode | engine | TTFT s | decode tok/s |", "|---:|---|---|---:|---:|"]
        lines += [
            f"| {s['retrieved']} | {s['mode']} | {s['engine']} | {_f(s['ttft_s'])} "
            f"| {_f(s['decode_tok_s'], 1)} |"
            for s in r["speed"]
        ]
    d = r["default"]
    m = r["machine"]
    ratio = r["f1_ratio_heldout"]
    lo, hi = ratio["ci95"] or (None, None)
    interval = "—" if lo is None else f"{lo:.2f}–{'∞' if hi is None else f'{hi:.2f}'}"
    lines += [
        "",
        f"Held-out F1, memory ({ratio['memory_profile']}, reader: {ratio['reader']}) over RAG: "
        f"**{_f(ratio['ratio'], 2)}** (95% bootstrap interval {interval}, {ratio['n_heldout']} questions).",
        "",
        f"Default profile: **{d['profile']}** (held-out F1 {_f(d['f1_heldout'])}, "
        f"{d['bytes_per_memory']:,.0f} bytes per memory); best: {d['best_profile']} "
        f"({_f(d['best_f1_heldout'])}); rule: {d['rule']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {r['threads']} threads, GPU: {m['gpu'] or 'none'}; "
        f"{r['model']['file']} on {r['device']}; {r['date']}.",
    ]
    return "\n".join(lines)
