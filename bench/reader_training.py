"""`m3 train reader`: train the memory reader by self-distillation on the QA benchmark's tuning articles.

The data is what the assistant itself would read: XQuAD's tuning articles (0-23; never the held-out
24-47) go through the real pipeline (`qa_bench.Lab`: ingest, chunk, embed, write memories in the default
profile); for each tuning question the chunks retrieved for it are read once as text (the teacher, which
also answers it greedily: the answer is the model's own, not the gold one) and once as memories (the
student). engine/memory/distill.py trains the reader's scalars to close the KL between the two.
Each step reads one example, each example once (a seeded sample of the training questions, as many as
steps); a sample of the questions of the last two tuning articles, kept out of training, measures the KL
before, during and after.

Writes the reader (safetensors, `assets/` by default), `reader.json` (the loss curve, settings and data
provenance) and `reader-loss.png` into the results folder.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import torch

from bench import squad
from bench.errors import BenchmarkError
from bench.machine import machine_info
from bench.qa_bench import K, Lab, Setting, data_folder
from engine.chat.prompt import BASE
from engine.config import EngineConfig
from engine.memory.distill import Example, ReaderParameters, distill_step
from engine.memory.profiles import MemoryProfile, named
from engine.memory.reader import BUNDLED
from engine.models.runtime import Runtime
from engine.retrieval.embedder import Embedder
from ingest.atomic import replacing, write_atomic
from ingest.paths import Home

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)

READER_NAME = "distilled"  # the default profile's reader; another profile's is named after it
VALIDATION_ARTICLES = 2  # the last tuning articles, kept out of training
VALIDATION_QUESTIONS = 30  # of those, a seeded sample: the validation KL every EVAL_EVERY steps
STEPS = 400
QUICK_STEPS = 4
LEARNING_RATE = 0.02
EVAL_EVERY = 100
PROVENANCE = (
    "self-distillation on XQuAD (SQuAD v1.1 dev, CC BY-SA 4.0) tuning articles {train}: the model's own "
    "greedy answers with the retrieved chunks as text, read as {profile} memories; no held-out article"
)


def build_examples(lab: Lab, questions: list[squad.Question], profile: MemoryProfile) -> list[Example]:
    """One example per question: the K chunks retrieved for it, their memories in `profile`, and the
    prompt body followed by the teacher's own answer (rag mode, greedy)."""
    tok, chat = lab.engine.runtime.tokenizer, lab.chat(Setting("rag"))
    store = lab.store(profile)
    sources = lab.engine.sources.with_store(store)
    examples = []
    for q in questions:
        chunks = sources.search(q.text, K)[::-1]  # reading order: the best last, as Chat reads them
        answer = chat.ask(q.text, "rag", 32)
        for _ in answer:
            pass
        body = tok.encode(BASE.body(q.text), special=BASE.special) + answer.reply_ids(answer.text)
        examples.append(Example([tok.encode(c.text) for c in chunks], sources.recall(chunks), body))
    return examples


def train(
    rt: Runtime, train_set: list[Example], validation: list[Example], steps: int, lr: float, seed: int = 0
) -> tuple[ReaderParameters, dict]:
    """Adam on the reader's scalars, one example a step (shuffled, cycled); the validation KL every
    EVAL_EVERY steps and at both ends. Returns the parameters and the curve."""
    model, sink = rt.model, rt.sink
    model.requires_grad_(False)
    params = ReaderParameters(model.config.n_layer, model.config.n_kv_head)
    optimizer = torch.optim.Adam(params.parameters(), lr=lr)
    order = random.Random(seed).sample(range(len(train_set)), len(train_set))  # cycled past one epoch

    def validate() -> float:
        return sum(distill_step(model, sink, e, params, None) for e in validation) / len(validation)

    curve = {"step": [], "train_kl": [], "validation_step": [0], "validation_kl": [validate()]}
    for step in range(1, steps + 1):
        example = train_set[order[(step - 1) % len(order)]]
        curve["step"].append(step)
        curve["train_kl"].append(distill_step(model, sink, example, params, optimizer))
        if step % EVAL_EVERY == 0 or step == steps:
            curve["validation_step"].append(step)
            curve["validation_kl"].append(validate())
            log.info("step %d: validation KL %.4f", step, curve["validation_kl"][-1])
    return params, curve


def run(
    home: Home,
    model_path: Path,
    device: str | None,
    output_dir: Path,
    reader_path: Path | None = None,
    quick: bool = False,
    steps: int | None = None,
    profile: str | None = None,
) -> tuple[dict, str]:
    """Train, write the reader to `reader_path` and the curve into `output_dir`; quick: two tuning articles
    and a handful of steps (a check that it runs); profile: the memory profile the reader learns to read
    (default: the configured one). The reader goes by default to the bundled one (assets/) when it is for
    the default profile (the one the bundled reader is read with), else into `output_dir` as
    memory-reader-<profile>.safetensors; with `quick` into `output_dir` (a check never replaces the
    shipped reader). Before any model loads: BenchmarkError when `reader_path` cannot be written,
    UnknownProfileError for an unknown profile."""
    started = time.perf_counter()
    steps = steps or (QUICK_STEPS if quick else STEPS)
    config = EngineConfig.load(home.config_file)
    profile = profile if profile is not None else config.profile
    memories = named(profile)
    if reader_path is None and quick:
        reader_path = output_dir / BUNDLED.name
    elif reader_path is None:
        default = profile == EngineConfig().profile
        reader_path = BUNDLED if default else output_dir / f"{BUNDLED.stem}-{profile}{BUNDLED.suffix}"
    _check_writable(reader_path)
    xquad = squad.load(data_folder() / "xquad-en" / "xquad.en.json")
    rt = Runtime.load(model_path, device=device, cache=home.cache, decode_weights=config.decode_weights)
    embedder = Embedder.load(home.cache / "embedder", device=device)
    tuning = list(range(len(xquad.articles) // 2))[: 2 if quick else None]
    held = max(1, min(VALIDATION_ARTICLES, len(tuning) - 1))  # a single article trains and validates
    train_articles, validation_articles = tuning[: len(tuning) - held] or tuning, tuning[-held:]
    with tempfile.TemporaryDirectory(prefix="m3-reader-") as tmp:
        lab = Lab(rt, embedder, Path(tmp) / "xquad", xquad, tuning, {"profile": profile})  # its memories only
        try:
            questions = [q for q in xquad.questions if q.article in set(tuning)]
            if quick:
                questions = questions[:6]
            train_qs = [q for q in questions if q.article in set(train_articles)]
            validation_qs = [q for q in questions if q.article in set(validation_articles)] or train_qs[-1:]
            rng = random.Random(0)
            train_qs = rng.sample(train_qs, min(steps, len(train_qs)))
            validation_qs = rng.sample(validation_qs, min(VALIDATION_QUESTIONS, len(validation_qs)))
            train_set = build_examples(lab, train_qs, memories)
            validation = build_examples(lab, validation_qs, memories)
        finally:
            lab.close()
    prepared = time.perf_counter()
    params, curve = train(rt, train_set, validation, steps, LEARNING_RATE)
    reader = params.frozen(READER_NAME if profile == EngineConfig().profile else f"{READER_NAME}-{profile}")
    provenance = PROVENANCE.format(train=f"{train_articles[0]}-{train_articles[-1]}", profile=profile)
    with replacing(reader_path) as tmp_path:
        reader.save(tmp_path, rt.fingerprints[0], provenance)
    results = {
        "reader": str(reader_path),
        "steps": steps,
        "learning_rate": LEARNING_RATE,
        "examples": {"train": len(train_set), "validation": len(validation)},
        "articles": {"train": train_articles, "validation": validation_articles},
        "profile": profile,
        "provenance": provenance,
        "curve": curve,
        "temperature": reader.temperature.tolist(),
        "scale": reader.log_scale.exp().tolist(),
        "prepare_s": prepared - started,
        "train_s": time.perf_counter() - prepared,
        "machine": machine_info(),
        "device": str(rt.model.device),
        "threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(output_dir / "reader.json", json.dumps(results, indent=2) + "\n")
    _plot(curve, output_dir / "reader-loss.png")
    return results, table(results)


def _check_writable(path: Path) -> None:
    """Make the reader's folder and try a file beside the reader: a training run is not wasted on a
    destination that cannot take its result."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as exc:
        raise BenchmarkError(f"Cannot write the memory reader to {path}: {exc.strerror}.") from exc


def _plot(curve: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(curve["step"], curve["train_kl"], alpha=0.35, label="train (one example a step)")
    ax.plot(
        curve["validation_step"], curve["validation_kl"], marker="o", label="validation (held-back articles)"
    )
    ax.set_xlabel("step")
    ax.set_ylabel("KL(text ‖ memory), nats per token")
    ax.set_title("Memory reader: self-distillation")
    ax.legend()
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def table(r: dict) -> str:
    before, after = r["curve"]["validation_kl"][0], r["curve"]["validation_kl"][-1]
    return (
        f"Memory reader trained in {r['steps']} steps on {r['examples']['train']} examples "
        f"({r['train_s'] / 60:.1f} min, data {r['prepare_s'] / 60:.1f} min): validation KL "
        f"{before:.4f} -> {after:.4f} nats per token ({r['examples']['validation']} examples). "
        f"Written to {r['reader']}."
    )
