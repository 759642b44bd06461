"""Faster decoding: int8 weight copies for decode steps, and prompt-lookup drafting (lossless)."""

from __future__ import annotations

from dataclasses import replace

import hypothesis.strategies as st
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from engine.chat.generation import Generation, decode_one, draft, prefill
from engine.memory.profiles import PROFILES
from engine.memory.writer import write_memories
from engine.models.quantized import DECODE_ROWS, Linear, quantize_rows
from tests.test_oracle import KL_BOUND, PROMPTS

SOURCES = [
    " The Tidal Mill of Bergen was rebuilt in 1887 by the engineer Ada Lindqvist, who also designed its"
    " copper wheel.",
    " Visitors can tour the mill for 12 euros on weekdays; the price was first set in 1990.",
    " The salt mine near Cusco closed in 1952 after a flood that lasted nine days.",
]
QUESTIONS = ["Who rebuilt the Tidal Mill of Bergen?", "When did the salt mine near Cusco close?"]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 70), st.floats(1e-3, 1e3), st.integers(0, 2**31 - 1))
def test_int8_rows_are_within_half_a_step_of_the_weights(n: int, k: int, magnitude: float, seed: int):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * magnitude
    w[0] = 0  # an all-zero row must not divide by zero
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    back = q.float() * scale[:, None]
    assert torch.all((back - w).abs() <= scale[:, None] * 0.5 + 1e-6 * w.abs().amax())


def test_a_linear_uses_its_int8_copy_for_few_rows_only():
    torch.manual_seed(0)
    layer = Linear(64, 48).to(torch.bfloat16)
    full = F.linear  # what a layer without a copy computes
    many = torch.randn(DECODE_ROWS + 1, 64, dtype=torch.bfloat16)
    few = many[:DECODE_ROWS]
    exact_few = full(few, layer.weight)
    layer.quantize()
    assert torch.equal(layer(many), full(many, layer.weight))  # prefill: the bf16 weights, untouched
    approx = layer(few)
    assert not torch.equal(approx, exact_few)  # decode rows went through the copy...
    relative = (approx.float() - exact_few.float()).norm() / exact_few.float().norm()
    assert relative < 0.02  # ...which is close


def test_int8_decode_steps_stay_near_the_exact_model(rt, rt32):
    """The engine's bf16 model with int8 decode copies against float32 with none: the next-token
    distribution after a decode step stays within the oracle's bound on every prompt."""
    assert rt.model.head_int8 is not None and rt32.model.head_int8 is None
    for prompt in PROMPTS:
        ids = rt.tokenizer.encode(prompt, bos=True)
        logits = []
        for runtime in (rt, rt32):
            cache = runtime.model.new_cache(len(ids))
            with torch.inference_mode():
                prefill(runtime.model, cache, ids[:-1], 0)
                logits.append(decode_one(runtime.model, cache, ids[-1], len(ids) - 1).float())
        quick, exact = logits
        lp, lq = exact.log_softmax(-1), quick.log_softmax(-1)
        assert float((lp.exp() * (lp - lq)).sum()) < KL_BOUND, prompt


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=0, max_size=30),
    st.lists(st.lists(st.integers(0, 5), max_size=20), max_size=3),
    st.integers(0, 6),
)
def test_a_draft_continues_the_last_tokens_where_they_occur(context, sources, n):
    guess = draft(context, sources, n)
    assert len(guess) <= n
    if not guess:
        return

    # some run of the last 2 or 3 tokens occurs, earlier in the context or in a source, followed by guess
    def follows(seq: list[int], size: int) -> bool:
        key = context[-size:]
        return any(
            seq[i : i + size] == key and seq[i + size : i + size + len(guess)] == guess
            for i in range(len(seq) - size)
        )

    assert any(follows(seq, size) for size in (2, 3) for seq in (context[:-1], *sources))


def test_draft_prefers_the_longest_match_and_needs_two_tokens():
    assert draft([7, 1, 2], [[1, 2, 9, 9], [5, 1, 2, 3, 4]], 2) == [9, 9]  # sources in order
    assert draft([1, 2, 5, 7, 1, 2], [[1, 2, 9, 9]], 2) == [5, 7]  # the context itself first
    assert draft([0, 1, 2], [[5, 1, 2, 3], [0, 1, 2, 8]], 1) == [8]  # size 3 beats size 2
    assert draft([4, 2], [[9, 2, 6]], 3) == []  # one token in common is not enough
    assert draft([1, 2], [[1, 2]], 3) == []  # nothing follows the match


def _rag_prompt(rt, question: str) -> tuple[list[int], list[tuple[str, int, int]]]:
    tok = rt.tokenizer
    prompt, spans = list(rt.sink), []
    for i, text in enumerate(SOURCES):
        ids = tok.encode(text)
        spans.append((f"s{i}", len(prompt), len(prompt) + len(ids)))
        prompt += ids
    return prompt + tok.encode(f"\nQuestion: {question}\nAnswer:"), spans


def test_drafting_changes_nothing_but_speed_in_rag_mode(rt32):
    """In float32 greedy decoding with and without drafting gives the same tokens and the same
    citations, and drafts were made and accepted (the path was exercised)."""
    for question in QUESTIONS:
        prompt, spans = _rag_prompt(rt32, question)
        runs = [
            Generation(rt32.model, rt32.tokenizer, prompt, 40, text_sources=spans, cite=True, lookup=on)
            for on in (False, True)
        ]
        for gen in runs:
            list(gen.run())
        plain, drafted = runs
        assert drafted.tokens == plain.tokens
        assert drafted.accepted > 0 and plain.drafted == 0
        _same_citations(plain, drafted)


def _same_citations(plain: Generation, drafted: Generation) -> None:
    for (key_a, share_a), (key_b, share_b) in zip(plain.sources(), drafted.sources(), strict=True):
        assert key_a == key_b and abs(share_a - share_b) < 1e-4


def test_a_stop_token_among_confirmed_drafts_ends_the_answer_as_it_would_without(rt32):
    """Stop at each of several tokens of the answer: some arrive as confirmed drafts, whose rows after
    the stop must not reach the citations."""
    prompt, spans = _rag_prompt(rt32, QUESTIONS[0])
    full = Generation(rt32.model, rt32.tokenizer, prompt, 24, lookup=False)
    list(full.run())
    stops = list(dict.fromkeys(full.tokens[3:10]))
    confirmed_before_stop = 0
    for stop in stops:
        runs = [
            Generation(
                rt32.model,
                rt32.tokenizer,
                prompt,
                24,
                stop_ids=frozenset({stop}),
                text_sources=spans,
                cite=True,
                lookup=on,
            )
            for on in (False, True)
        ]
        for gen in runs:
            list(gen.run())
        plain, drafted = runs
        assert drafted.tokens == plain.tokens == full.tokens[: full.tokens.index(stop)]
        _same_citations(plain, drafted)
        confirmed_before_stop += drafted.accepted
    assert confirmed_before_stop > 0


def test_drafting_changes_nothing_but_speed_in_memory_mode(rt32):
    """Memories re-read every 16 tokens: drafts never cross a re-reading, so the answer, the readings
    and the citations are those of one-token-at-a-time decoding."""
    model, tok, sink = rt32.model, rt32.tokenizer, rt32.sink
    refs = [tok.encode(text) for text in SOURCES]
    memories = write_memories(model, sink, refs, PROFILES["dense"])
    kvs = [replace(m.unpack(model.dtype, model.device), key=f"m{i}") for i, m in enumerate(memories)]
    for question in QUESTIONS:
        runs = []
        for on in (False, True):
            queries: list[str] = []

            def retrieve(query: str, queries=queries):
                queries.append(query)
                return kvs

            gen = Generation(
                model,
                tok,
                sink + tok.encode(f"\nQuestion: {question}\nAnswer:"),
                max_new_tokens=48,
                retrieve=retrieve,
                question=question,
                sink_len=len(sink),
                memory_slots=sum(kv.kept for kv in kvs),
                chunk=16,
                cite=True,
                lookup=on,
            )
            gen.sources_ids = refs
            list(gen.run())
            runs.append((gen, queries))
        (plain, plain_queries), (drafted, drafted_queries) = runs
        assert drafted.tokens == plain.tokens and drafted_queries == plain_queries
        assert drafted.accepted > 0
        _same_citations(plain, drafted)
