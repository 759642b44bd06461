"""`m3 bench engine`: our runtime against llama.cpp on the same model, prompts and threads.

Prefill and decode speed, memory-writing throughput (and its share of this CPU's matmul peak), bytes per
memory for every profile, the time to first token and to a whole answer (first token + 32) of a question
read with 5 attached memories versus the same 5 references as text (RAG), model load time in a fresh
process (empty and warm weight cache), the engine's resident memory (idle, ingesting, answering), and
decode and memory writing again while another process keeps one core busy. Both runtimes use the
engine's thread count (engine/threads.py). Every figure is a median over repeats, after one warm-up;
decode and writing are measured in turns with llama.cpp's (`paired`), so that their ratios are fair on
a machine whose speed drifts.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import llama_cpp
import numpy as np
import torch

from bench import ask_wall, engine_process
from bench.llamacpp import LlamaCpp
from bench.machine import machine_info
from engine.chat.generation import Generation
from engine.config import EngineConfig
from engine.memory.profiles import PROFILES
from engine.memory.writer import write_memories
from engine.models.runtime import Runtime
from engine.models.tokenizer import Tokenizer
from engine.models.transformer import Transformer
from engine.threads import compute_threads
from ingest.paths import Home

REPEATS = {
    "prefill": 3,
    "decode": 3,
    "write": 3,
    "ttft": 5,
    "answer": 3,
    "load": 3,
    "ask_cold": 3,
    "ask_warm": 5,
}
QUICK_REPEATS = dict.fromkeys(REPEATS, 1)
PREFILL_TOKENS = 512
DECODE_TOKENS = 64
WRITE_REFERENCES = 64
ATTACHED = 5
ANSWER_TOKENS = 32  # generated after the first token, in the whole-answer time
PEAK_SHAPE = (512, 640, 2048)  # (rows, in, out) of the bf16 matmul that measures this CPU's peak

_NAMES = ("Ada", "Bruno", "Chiara", "Dmitri", "Esther", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Keiko")
_PLACES = ("Lisbon", "Nairobi", "Oslo", "Quito", "Kyoto", "Tunis", "Perth", "Bergen", "Cusco", "Hanoi")
_THINGS = (
    "the lighthouse",
    "a glass bridge",
    "the seed bank",
    "an old clock tower",
    "the tidal mill",
    "the observatory",
    "a rope factory",
    "the salt mine",
    "a floating garden",
    "the city archive",
)
_SENTENCES = (
    "{name} moved to {place} in {year} to work on {thing}.",
    "In {year}, {thing} in {place} was repaired after a storm that lasted {n} days.",
    "{name} wrote {n} letters about {thing}, most of them from {place}.",
    "The museum in {place} keeps a model of {thing} that {name} built in {year}.",
    "Visitors to {place} can see {thing} for {n} euros, a price first set in {year}.",
    "{name} believed that {thing} would change {place} within {n} years.",
    "A survey in {year} counted {n} birds nesting near {thing} outside {place}.",
    "When {name} left {place}, the local paper printed {n} pages about {thing}.",
)


def sentence(rng: random.Random) -> str:
    """One made-up, plain English fact."""
    return rng.choice(_SENTENCES).format(
        name=rng.choice(_NAMES),
        place=rng.choice(_PLACES),
        thing=rng.choice(_THINGS),
        year=rng.randint(1820, 2020),
        n=rng.randint(2, 90),
    )


def text(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def references(
    tokenizer: Tokenizer, count: int, seed: int, lengths: tuple[int, int] = (100, 128)
) -> list[list[int]]:
    """`count` deterministic references, each cut to a length drawn from `lengths` (in tokens)."""
    rng = random.Random(seed)
    return [tokenizer.encode(text(rng, 14))[: rng.randint(*lengths)] for _ in range(count)]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Wall time of fn(), with the device's queued work finished on both sides."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def median(measure: Callable[[], float], repeats: int) -> float:
    """Median of `repeats` measurements taken after one warm-up."""
    measure()
    return statistics.median([measure() for _ in range(repeats)])


def paired(ours: Callable[[], float], theirs: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Medians of two measurements taken in turns after one warm-up each: a machine that slows down
    meanwhile (a shared one does, for minutes) slows both alike, and their ratio stays fair."""
    ours(), theirs()
    pairs = [(ours(), theirs()) for _ in range(repeats)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


@torch.inference_mode()
def _feed(model: Transformer, cache, ids: Sequence[int], start: int) -> torch.Tensor:
    """Run `ids` at positions from `start` through the model into `cache`; the last position's logits."""
    tokens = torch.tensor([list(ids)], device=model.device)
    pos = torch.arange(start, start + len(ids), device=model.device)[None]
    return model(tokens, pos, cache=cache).logits[0, -1]


def prefill_ours(model: Transformer, ids: Sequence[int]) -> float:
    cache = model.new_cache(len(ids))
    return seconds(lambda: _feed(model, cache, ids, 0), model.device)


def decode_ours(model: Transformer, prompt: Sequence[int], n: int) -> float:
    """Seconds for n greedy tokens after `prompt` (its prefill not counted)."""
    cache = model.new_cache(len(prompt) + n)
    first = int(_feed(model, cache, prompt, 0).argmax())

    def steps() -> None:
        token = first
        for i in range(n):
            token = int(_feed(model, cache, [token], len(prompt) + i).argmax())

    return seconds(steps, model.device)


def ttft_ours(runtime: Runtime, prompt: Sequence[int], **memory) -> float:
    """Time to the first token of a fresh generation (attach and prefill included)."""
    gen = Generation(runtime.model, runtime.tokenizer, prompt, max_new_tokens=1, **memory)
    return seconds(lambda: list(gen.run()), runtime.model.device)


def answer_ours(runtime: Runtime, prompt: Sequence[int], sources: list[list[int]], **memory) -> float:
    """Time to the first token and ANSWER_TOKENS more of a fresh generation, as the engine decodes
    (prompt-lookup drafting from the prompt and `sources`, the token ids of the memories' texts)."""
    gen = Generation(runtime.model, runtime.tokenizer, prompt, max_new_tokens=1 + ANSWER_TOKENS, **memory)
    gen.sources_ids = sources
    return seconds(lambda: list(gen.run()), runtime.model.device)


def answer_llamacpp(lc: LlamaCpp, prompt: Sequence[int]) -> float:
    """The same on llama.cpp: prefill, then ANSWER_TOKENS greedy tokens one at a time (the last token
    decided is not fed back, as on our side)."""

    def answer() -> None:
        token = int(np.argmax(lc.next_logits(prompt)))
        for _ in range(ANSWER_TOKENS):
            lc.llm.eval([token])
            token = int(np.argmax(lc._last_logits()))

    return seconds(answer)


def write_llamacpp(lc: LlamaCpp, sink: Sequence[int], refs: Sequence[Sequence[int]]) -> float:
    """Seconds for llama.cpp to read each reference after the sink in a fresh context: the prefill that
    writing a memory costs, on its kernels (it has no memory to keep)."""
    return seconds(lambda: [lc.next_logits([*sink, *ref]) for ref in refs])


def matmul_peak(device: torch.device) -> float:
    """FLOP/s of a bf16 (512 x 640) @ (640 x 2048) matmul on `device`, the shape of a layer in a
    memory-writing batch: the most a prefill can reach here."""
    rows, inner, out = PEAK_SHAPE
    x = torch.randn(rows, inner, dtype=torch.bfloat16, device=device)
    w = torch.randn(out, inner, dtype=torch.bfloat16, device=device)
    reps = 20
    s = median(lambda: seconds(lambda: [torch.nn.functional.linear(x, w) for _ in range(reps)], device), 3)
    return 2 * rows * inner * out * reps / s


def linear_params(model: Transformer) -> int:
    """Weights the blocks' linears hold: a token's forward pass costs about twice this in FLOPs."""
    return sum(m.weight.numel() for m in model.blocks.modules() if isinstance(m, torch.nn.Linear))


def decode_llamacpp(lc: LlamaCpp, prompt: Sequence[int], n: int) -> float:
    """Seconds for n greedy tokens after `prompt` on llama.cpp (its prefill not counted)."""
    first = int(np.argmax(lc.next_logits(prompt)))

    def steps() -> None:
        token = first
        for _ in range(n):
            lc.llm.eval([token])
            token = int(np.argmax(lc._last_logits()))

    return seconds(steps)


def open_llamacpp(path: Path, threads: int) -> LlamaCpp:
    """llama.cpp on `threads` threads, for batches (prefill) as well as single tokens."""
    lc = LlamaCpp(path, n_ctx=2048, n_threads=threads)
    llama_cpp.llama_set_n_threads(lc.llm.ctx, threads, threads)
    return lc


def run(
    home: Home, model_path: Path, device: str | None, output_dir: Path, quick: bool = False
) -> tuple[dict, str]:
    """Measure everything (quick: one timed repeat each); return the results and their Markdown tables."""
    repeats = QUICK_REPEATS if quick else REPEATS
    torch.set_num_threads(compute_threads())  # as the engine service runs
    decode_weights = EngineConfig.load(home.config_file).decode_weights
    rt = Runtime.load(model_path, device=device, cache=home.cache, decode_weights=decode_weights)
    model, tok, sink = rt.model, rt.tokenizer, rt.sink
    config, run_device, run_dtype = model.config, str(model.device), str(model.dtype).removeprefix("torch.")
    rng = random.Random(0)
    prefill_ids = [tok.bos_id, *tok.encode(text(rng, 60))][:PREFILL_TOKENS]
    decode_prompt = [tok.bos_id, *tok.encode(sentence(rng))]
    question = tok.encode(f"\nQuestion: What did {_NAMES[0]} do in {_PLACES[0]}?\nAnswer:")
    refs = references(tok, WRITE_REFERENCES, seed=1)
    rag_prompt = [*sink, *(t for r in refs[:ATTACHED] for t in r), *question]
    dense = PROFILES["dense"]

    def write_s() -> float:
        return seconds(lambda: write_memories(model, sink, refs, dense), model.device)

    def decode_s() -> float:
        return decode_ours(model, decode_prompt, DECODE_TOKENS)

    threads = torch.get_num_threads()
    lc = open_llamacpp(rt.path, threads)

    def decode_theirs() -> float:
        return decode_llamacpp(lc, decode_prompt, DECODE_TOKENS)

    def write_theirs() -> float:
        return write_llamacpp(lc, sink, refs)

    def rates() -> dict[str, dict[str, float]]:
        """Decode and writing speed, ours and llama.cpp's measured in turns (`paired`)."""
        decode = paired(decode_s, decode_theirs, repeats["decode"])
        write = paired(write_s, write_theirs, repeats["write"])
        return {
            "decode_tok_s": {"ours": DECODE_TOKENS / decode[0], "llamacpp": DECODE_TOKENS / decode[1]},
            "write_refs_s": {"ours": WRITE_REFERENCES / write[0], "llamacpp": WRITE_REFERENCES / write[1]},
        }

    quiet = rates()
    ref128 = references(tok, 1, seed=2, lengths=(128, 128))
    kvs = [m.unpack(model.dtype, model.device) for m in write_memories(model, sink, refs[:ATTACHED], dense)]
    memory = {
        "retrieve": lambda _query: kvs,
        "question": tok.decode(question),
        "sink_len": len(sink),
        "memory_slots": sum(kv.kept for kv in kvs),
    }
    memory_prompt, sources = [*sink, *question], [list(r) for r in refs[:ATTACHED]]
    ours = {
        "prefill": PREFILL_TOKENS / median(lambda: prefill_ours(model, prefill_ids), repeats["prefill"]),
        "ttft_memory": median(lambda: ttft_ours(rt, memory_prompt, **memory), repeats["ttft"]),
        "ttft_rag": median(lambda: ttft_ours(rt, rag_prompt), repeats["ttft"]),
        "answer_memory": median(lambda: answer_ours(rt, memory_prompt, sources, **memory), repeats["answer"]),
        "answer_rag": median(lambda: answer_ours(rt, rag_prompt, []), repeats["answer"]),
    }
    bytes_per_memory = {
        name: write_memories(model, sink, ref128, profile)[0].nbytes for name, profile in PROFILES.items()
    }
    peak = matmul_peak(model.device)
    write_flops = quiet["write_refs_s"]["ours"] * statistics.mean(map(len, refs)) * 2 * linear_params(model)

    theirs = {
        "prefill": PREFILL_TOKENS
        / median(lambda: seconds(lambda: lc.next_logits(prefill_ids)), repeats["prefill"]),
        "ttft_rag": median(lambda: seconds(lambda: np.argmax(lc.next_logits(rag_prompt))), repeats["ttft"]),
        "answer_rag": median(lambda: answer_llamacpp(lc, rag_prompt), repeats["answer"]),
    }

    spinner = engine_process.spin()  # another process keeps one core busy
    try:
        loaded = rates()
    finally:
        spinner.kill()
        spinner.wait()
    loaded["kept"] = {
        key: {side: loaded[key][side] / quiet[key][side] for side in ("ours", "llamacpp")} for key in quiet
    }

    device_arg = "auto" if device is None else device
    with tempfile.TemporaryDirectory(prefix="m3-weights-") as empty:
        load = ("load", str(model_path), device_arg, empty, decode_weights)
        first = engine_process.child(*load)["load_s"]
        cached = median(lambda: engine_process.child(*load)["load_s"], repeats["load"])
    rss = engine_process.child(
        "rss", str(model_path), device_arg, str(home.cache), decode_weights, str(ask_wall.SAMPLE)
    )
    ask_s = ask_wall.measure(model_path, device, repeats["ask_cold"], repeats["ask_warm"])

    results = {
        "prefill_tok_s": {"ours": ours["prefill"], "llamacpp": theirs["prefill"]},
        "decode_tok_s": quiet["decode_tok_s"],
        "write_refs_s": quiet["write_refs_s"]["ours"],
        "write_refs_s_llamacpp": quiet["write_refs_s"]["llamacpp"],
        "write_peak_fraction": write_flops / peak,
        "matmul_peak_gflop_s": peak / 1e9,
        "bytes_per_memory": bytes_per_memory,
        "ttft_s": {
            "memory": ours["ttft_memory"],
            "rag": ours["ttft_rag"],
            "rag_llamacpp": theirs["ttft_rag"],
        },
        "answer_s": {
            "memory": ours["answer_memory"],
            "rag": ours["answer_rag"],
            "rag_llamacpp": theirs["answer_rag"],
        },
        "load_s": {"first": first, "cached": cached},
        "rss_mb": rss,
        "loaded": loaded,
        "ask_wall_s": {"cold": ask_s["cold"], "warm": ask_s["warm"]},
        "ask_first_output_s": ask_s["first_output"],
        "tokens": {
            "prefill": len(prefill_ids),
            "decode_prompt": len(decode_prompt),
            "decode": DECODE_TOKENS,
            "answer": 1 + ANSWER_TOKENS,
            "references": WRITE_REFERENCES,
            "reference_avg": statistics.mean(map(len, refs)),
            "memory_prompt": len(memory_prompt),
            "rag_prompt": len(rag_prompt),
        },
        "machine": machine_info(),
        "model": {"file": model_path.name, "arch": config.arch, "layers": config.n_layer},
        "device": run_device,
        "dtype": run_dtype,
        "decode_weights": decode_weights if model.head_int4 is not None else "bf16",  # as configured
        "threads": threads,
        "repeats": repeats,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return results, table(results)


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.1f}" if x >= 10 else f"{x:.3f}"


def table(r: dict) -> str:
    """The results as two Markdown tables (speed, bytes per memory) and a line naming the machine."""
    loaded, kept = r["loaded"], r["loaded"]["kept"]
    rows = [
        (f"prefill, {r['tokens']['prefill']}-token prompt", *r["prefill_tok_s"].values(), "tok/s"),
        (f"decode, {DECODE_TOKENS} greedy tokens", *r["decode_tok_s"].values(), "tok/s"),
        ("decode, one core busy with another process", *loaded["decode_tok_s"].values(), "tok/s"),
        ("decode kept under that load", kept["decode_tok_s"]["ours"], kept["decode_tok_s"]["llamacpp"], "×"),
        (
            f"write memories, {WRITE_REFERENCES} refs (dense; llama.cpp: prefill)",
            r["write_refs_s"],
            r["write_refs_s_llamacpp"],
            "refs/s",
        ),
        ("write memories, one core busy", *loaded["write_refs_s"].values(), "refs/s"),
        ("writing kept under that load", kept["write_refs_s"]["ours"], kept["write_refs_s"]["llamacpp"], "×"),
        ("writing, share of this CPU's bf16 matmul peak", r["write_peak_fraction"], None, ""),
        (f"time to first token, {ATTACHED} memories attached", r["ttft_s"]["memory"], None, "s"),
        (
            f"time to first token, {ATTACHED} refs as text (RAG)",
            r["ttft_s"]["rag"],
            r["ttft_s"]["rag_llamacpp"],
            "s",
        ),
        (
            f"whole answer (first token + {ANSWER_TOKENS}), {ATTACHED} memories",
            r["answer_s"]["memory"],
            None,
            "s",
        ),
        (
            f"whole answer (first token + {ANSWER_TOKENS}), {ATTACHED} refs as text (RAG)",
            r["answer_s"]["rag"],
            r["answer_s"]["rag_llamacpp"],
            "s",
        ),
        ("model load in a fresh process, first (empty weight cache)", r["load_s"]["first"], None, "s"),
        ("model load in a fresh process, weights cached", r["load_s"]["cached"], None, "s"),
        (
            "engine resident memory: idle / ingest peak / answer peak",
            None,
            None,
            "{idle:,.0f} / {ingest:,.0f} / {answer:,.0f} MiB".format(**r["rss_mb"]),
        ),
        ("`m3 ask` wall time, cold (starts the service)", r["ask_wall_s"]["cold"], None, "s"),
        ("`m3 ask` wall time, warm (service running)", r["ask_wall_s"]["warm"], None, "s"),
        ("`m3 ask` first output, warm", r["ask_first_output_s"]["warm"], None, "s"),
    ]
    lines = ["| metric | ours | llama.cpp | unit |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {_fmt(ours)} | {_fmt(theirs)} | {unit} |" for name, ours, theirs, unit in rows]
    lines += ["", "| profile | bytes per 128-token memory | KiB |", "|---|---:|---:|"]
    lines += [f"| {name} | {n:,} | {n / 1024:,.1f} |" for name, n in r["bytes_per_memory"].items()]
    m = r["machine"]
    copies = "" if r["decode_weights"] == "bf16" else f", {r['decode_weights']} decode copies + int4 head"
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {r['threads']} threads each, "
        f"{m['ram_gib']} GiB RAM, GPU: {m['gpu'] or 'none'}; "
        f"{r['model']['file']} on {r['device']} in {r['dtype']}"
        f"{copies}; "
        f"torch {m['torch']}, llama-cpp-python {m['llama_cpp_python']}; {r['date']}.",
    ]
    return "\n".join(lines)
