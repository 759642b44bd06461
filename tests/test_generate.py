"""Sampling, stop tokens, streaming, cancellation and the 64-token retrieval schedule."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from engine.chat.generation import Generation, Sampling, sample
from engine.errors import EmptyPromptError
from engine.memory.profiles import PROFILES
from engine.memory.writer import write_memories


def test_greedy_picks_the_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample(logits, Sampling(), None) == 1


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    rng = torch.Generator().manual_seed(0)
    drawn = {sample(logits, Sampling(temperature=1.0, top_p=0.8), rng) for _ in range(300)}
    assert drawn == {0, 1}  # 0.6 + 0.3 reaches 0.8; the tail is never drawn
    drawn = {sample(logits, Sampling(temperature=1.0, top_p=0.5), rng) for _ in range(100)}
    assert drawn == {0}


def test_seeded_sampling_is_reproducible(rt):
    ids = rt.tokenizer.encode("My favourite animal is", bos=True)

    def run() -> str:
        return "".join(
            Generation(
                rt.model,
                rt.tokenizer,
                ids,
                max_new_tokens=10,
                sampling=Sampling(temperature=0.9, top_p=0.95, seed=7),
            ).run()
        )

    assert run() == run()


def test_stop_token_ends_generation(rt):
    ids = rt.tokenizer.encode("The capital of France is", bos=True)
    greedy = Generation(rt.model, rt.tokenizer, ids, max_new_tokens=5)
    list(greedy.run())
    stopped = Generation(
        rt.model, rt.tokenizer, ids, max_new_tokens=5, stop_ids=frozenset({greedy.tokens[2]})
    )
    list(stopped.run())
    assert stopped.tokens == greedy.tokens[:2]


def test_cancel_stops_the_stream(rt):
    cancel = threading.Event()
    gen = Generation(
        rt.model,
        rt.tokenizer,
        rt.tokenizer.encode("Count: 1, 2, 3,", bos=True),
        max_new_tokens=50,
        cancel=cancel,
    )
    pieces = []
    for piece in gen.run():
        pieces.append(piece)
        if len(gen.tokens) == 3:
            cancel.set()
    assert len(gen.tokens) == 3


def test_stream_reassembles_multibyte_text(rt):
    text = "Ünïcödé ✓ 漢字 and emoji 🦊🧭 done"
    ids = rt.tokenizer.encode(text)
    stream = rt.tokenizer.stream()
    out = "".join(stream.push(i) for i in ids) + stream.flush()
    assert out == text


def test_empty_prompt_is_refused(rt):
    with pytest.raises(EmptyPromptError):
        Generation(rt.model, rt.tokenizer, rt.sink, sink_len=len(rt.sink))


def test_memories_are_retrieved_every_64_tokens(rt):
    """The question is the query while the prompt is read; then every 64 tokens the last 64 are."""
    tok = rt.tokenizer
    memory = write_memories(
        rt.model, rt.sink, [tok.encode(" Bees make honey from nectar.")], PROFILES["dense"]
    )[0].unpack(rt.model.dtype, rt.model.device)
    queries: list[str] = []

    def retrieve(query: str):
        queries.append(query)
        return [memory]

    body = tok.encode(" word" * 150)
    gen = Generation(
        rt.model,
        tok,
        rt.sink + body,
        max_new_tokens=60,
        retrieve=retrieve,
        question="the question",
        sink_len=len(rt.sink),
        memory_slots=128,
    )
    list(gen.run())
    seen = body + gen.tokens
    # chunks start at 0, 64, 128 (prompt) and 192 (generated); the last fed token is number 209
    expected = ["the question"] * 3 + [tok.decode(seen[128:192])]
    assert queries == expected
    assert len(gen.attached) == 4


def test_a_stop_during_the_prompt_takes_effect_before_its_next_chunk(rt):
    """Memory mode reads the prompt 64 tokens at a time: a stop while it does reads no further chunk."""
    tok = rt.tokenizer
    memory = write_memories(rt.model, rt.sink, [tok.encode(" Bees make honey.")], PROFILES["dense"])[
        0
    ].unpack(rt.model.dtype, rt.model.device)
    cancel = threading.Event()
    readings: list[str] = []

    def retrieve(query: str):
        readings.append(query)
        if len(readings) == 2:  # the reading before the prompt's second chunk: the user stops now
            cancel.set()
        return [memory]

    body = tok.encode(" word" * 300)  # five chunks of prompt
    gen = Generation(
        rt.model,
        tok,
        rt.sink + body,
        retrieve=retrieve,
        question="q",
        sink_len=len(rt.sink),
        memory_slots=128,
        cancel=cancel,
    )
    assert list(gen.run()) == [] and gen.tokens == []
    assert len(readings) == 2  # the third chunk's reading never came: the prompt was left after chunk two


FACT = " The access code for the blue vault is 7391-QX."
DISTRACTORS = [" Tomatoes grow best in warm soil with full sun.", " The harbour ferry leaves from pier six."]
QUESTION = "\n\nQuestion: What is the access code for the blue vault?\nAnswer: The access code is"


def test_citations_rank_the_source_the_answer_came_from(rt):
    """The attention of the generated tokens falls mostly on the memory that holds the answer (RAG mode,
    where the sources are spans of the prompt: the next test)."""
    tok, sink = rt.tokenizer, rt.sink
    texts = [*DISTRACTORS, FACT]
    memories = write_memories(rt.model, sink, [tok.encode(t) for t in texts], PROFILES["dense"])
    kvs = [replace(m.unpack(rt.model.dtype, rt.model.device), key=f"m{i}") for i, m in enumerate(memories)]
    gen = Generation(
        rt.model,
        tok,
        sink + tok.encode(QUESTION),
        max_new_tokens=8,
        retrieve=lambda _q: kvs,
        sink_len=len(sink),
        memory_slots=3 * 128,
        cite=True,
    )
    assert "7391" in "".join(gen.run())
    sources = gen.sources()
    assert sources[0][0] == "m2" and abs(sum(share for _, share in sources) - 1) < 1e-6


@pytest.mark.parametrize("fact_at", [0, 1, 2])
def test_rag_citations_follow_content_not_place(rt, fact_at):
    """Wherever the passage holding the answer sits among the sources read as text, it is cited first:
    only the layers that see the whole context count (a sliding-window layer attends by proximity), and
    the probe is handed no other layer's weights."""
    tok, sink = rt.tokenizer, rt.sink
    texts = [*DISTRACTORS]
    texts.insert(fact_at, FACT)
    prompt, spans = list(sink), []
    for i, text in enumerate(texts):
        ids = tok.encode(text)
        spans.append((f"t{i}", len(prompt), len(prompt) + len(ids)))
        prompt += ids
    rag = Generation(
        rt.model, tok, prompt + tok.encode(QUESTION), max_new_tokens=8, text_sources=spans, cite=True
    )
    seen: set[int] = set()
    observe = rag._mass.observe
    rag._mass.observe = lambda layer, weights: (seen.add(layer), observe(layer, weights))
    assert "7391" in "".join(rag.run())
    assert rag.sources()[0][0] == f"t{fact_at}"
    assert seen == rt.model.global_layers == {5, 11, 17}  # Gemma 3 270M: one global layer in six


def test_measuring_attention_does_not_change_the_answer(rt32):
    tok = rt32.tokenizer
    ids = tok.encode(FACT + QUESTION, bos=True)
    plain = Generation(rt32.model, tok, ids, max_new_tokens=10)
    cited = Generation(rt32.model, tok, ids, max_new_tokens=10, text_sources=[("fact", 1, 12)], cite=True)
    assert "".join(plain.run()) == "".join(cited.run())
    assert cited.sources()[0][0] == "fact"


def test_score_is_the_log_probability_of_a_reply_in_the_same_context(rt32):
    """Scoring rewinds the cache to the end of the prompt: it sums exactly the log-probabilities one
    forward pass over prompt + reply gives, whatever was generated before; and a fact held in a memory
    makes its answer far more likely than no memory does."""
    tok, sink = rt32.tokenizer, rt32.sink
    prompt, reply = tok.encode(FACT + QUESTION, bos=True), tok.encode(" 7391-QX")
    gen = Generation(rt32.model, tok, prompt, max_new_tokens=12)
    list(gen.run())
    with torch.inference_mode():
        ids = torch.tensor([prompt + reply])
        logits = rt32.model(ids, torch.arange(ids.shape[1])[None], logits="all").logits[0]
    steps = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    expected = float(steps[torch.arange(len(reply)), torch.tensor(reply)].sum())
    assert gen.score(reply) == pytest.approx(expected, abs=1e-3)
    assert gen.score(reply) == pytest.approx(expected, abs=1e-3)  # scoring leaves the context as it was
    with pytest.raises(ValueError):
        gen.score(reply * 10)

    memory = write_memories(rt32.model, sink, [tok.encode(FACT)], PROFILES["dense"])[0]
    kv = memory.unpack(rt32.model.dtype, rt32.model.device)

    def score(memories) -> float:
        g = Generation(
            rt32.model,
            tok,
            sink + tok.encode(QUESTION),
            max_new_tokens=8,
            retrieve=lambda _q: memories,
            sink_len=len(sink),
            memory_slots=128,
        )
        list(g.run())
        return g.score(reply)

    assert score([kv]) > score([]) + 5


def test_an_answer_stopped_before_its_first_token_cites_nothing(rt):
    """No token, no attention paid: no source earns a share (not five sources at 0%)."""
    gen = Generation(
        rt.model,
        rt.tokenizer,
        rt.tokenizer.encode(" hello", bos=True),
        cancel=threading.Event(),
        text_sources=[("a", 0, 1)],
        cite=True,
    )
    gen.cancel.set()
    assert list(gen.run()) == [] and gen.sources() == []


def test_a_cancelled_prompt_cannot_be_scored(rt32):
    """score() teacher-forces a reply after the whole prompt; a generation stopped while reading it (or
    before) has no such context and says so instead of scoring a truncated prompt."""
    tok = rt32.tokenizer
    prompt = tok.encode(FACT + QUESTION, bos=True)
    cancel = threading.Event()
    cancel.set()
    gen = Generation(rt32.model, tok, prompt, max_new_tokens=4, cancel=cancel)
    assert list(gen.run()) == []
    with pytest.raises(RuntimeError):
        gen.score(tok.encode(" 7391-QX"))
