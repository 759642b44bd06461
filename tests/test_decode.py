"""Faster decoding: int8 or int4 weight copies and an int4 shortlisting head for decode steps, and
prompt-lookup drafting (lossless)."""

from __future__ import annotations

from dataclasses import replace

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from engine.chat.generation import Generation, decode_one, draft, prefill
from engine.memory.profiles import PROFILES
from engine.memory.writer import write_memories
from engine.models import quantized
from engine.models.quantized import (
    DECODE_ROWS,
    Linear,
    head_logits,
    int4_matmul,
    quantize_int4,
    quantize_rows,
)
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


@pytest.mark.parametrize(
    ("bits", "inputs", "copy", "bound"), [(8, 64, "int8", 0.02), (4, 64, "int4", 0.12), (4, 48, "int8", 0.02)]
)
def test_a_linear_uses_its_decode_copy_for_few_rows_only(bits: int, inputs: int, copy: str, bound: float):
    """int8 per row, or int4 per 32 inputs (int8 when the inputs do not come in whole groups of 32);
    the 40 rows (not a multiple of the int4 kernel's 16-row tile) come back as 40. Widths the int8
    kernel cannot read (it crashed the process on 40 inputs) get no copy: `test_odd_widths_keep_bf16`."""
    torch.manual_seed(0)
    layer = Linear(inputs, 40, bias=True).to(torch.bfloat16)
    many = torch.randn(DECODE_ROWS + 1, inputs, dtype=torch.bfloat16)
    few = many[:DECODE_ROWS]
    exact_few, prefill = F.linear(few, layer.weight, layer.bias), layer(many)
    layer.quantize(bits)
    assert getattr(layer, copy) is not None and getattr(layer, "int4" if copy == "int8" else "int8") is None
    assert torch.equal(layer(many), prefill)  # prefill: the bf16 weights, as without a copy
    approx = layer(few)
    assert approx.shape == exact_few.shape
    assert not torch.equal(approx, exact_few)  # decode rows went through the copy...
    relative = (approx.float() - exact_few.float()).norm() / exact_few.float().norm()
    assert relative < bound  # ...which is close


@pytest.mark.parametrize("native", [True, False])
def test_many_rows_multiply_in_float32_where_the_cpu_emulates_bf16(monkeypatch, native: bool):
    """Without bf16 arithmetic (quantized.NATIVE_BF16 false) a prefill's rows are multiplied in float32
    and rounded to bf16 once; with it, by torch's bf16 matmul. Decode rows are unaffected."""
    monkeypatch.setattr(quantized, "NATIVE_BF16", native)
    torch.manual_seed(1)
    layer = Linear(256, 512, bias=True).to(torch.bfloat16)
    x = torch.randn(DECODE_ROWS + 1, 256, dtype=torch.bfloat16)
    emulated = F.linear(x, layer.weight, layer.bias)
    upcast = F.linear(x.float(), layer.weight.float(), layer.bias.float()).to(torch.bfloat16)
    few = x[:DECODE_ROWS]
    decoded = F.linear(few, layer.weight, layer.bias)
    linear, multiplied = F.linear, []  # the dtype each product ran in
    record = lambda a, w, b=None: multiplied.append(a.dtype) or linear(a, w, b)  # noqa: E731
    monkeypatch.setattr(quantized.F, "linear", record)
    y = layer(x)
    assert multiplied == [torch.bfloat16 if native else torch.float32]
    assert y.dtype == torch.bfloat16 and torch.equal(y, emulated if native else upcast)
    assert torch.equal(layer(few), decoded) and multiplied[1:] == [torch.bfloat16]


@pytest.mark.parametrize("bits", [4, 8])
def test_odd_widths_keep_bf16(bits: int):
    layer = Linear(40, 24, bias=True).to(torch.bfloat16)
    layer.quantize(bits)
    assert layer.int4 is None and layer.int8 is None
    x = torch.randn(2, 40, dtype=torch.bfloat16)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.sampled_from([32, 64, 96]), st.floats(1e-3, 1e2), st.integers(0, 2**31 - 1))
def test_int4_copies_report_their_own_rounding_error(n: int, k: int, magnitude: float, seed: int):
    w = (torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * magnitude).to(torch.bfloat16)
    w[0, :32] = 0  # a constant group must not divide by zero
    packed, scales_zeros, error = quantize_int4(w)
    eye = torch.eye(k, dtype=torch.bfloat16)
    back = int4_matmul(eye, packed, scales_zeros).float().T[:n]  # the weights as the kernel reads them
    assert packed.shape == (n + -n % 16, k // 2) and error.shape == (n,)
    measured = (w.float() - back).square().mean(-1).sqrt()  # each row's rounding error (root mean square)
    scale = float(back.abs().max()) * 2**-8  # the kernel returns bf16: its own rounding, at most this
    assert torch.allclose(measured, error, rtol=2**-7, atol=scale + 1e-6)
    assert torch.all(error <= w.float().abs().amax(1) / 15 * 1.01)  # at most half a step (range/15)


def test_int4_copies_are_the_same_made_in_pieces(monkeypatch):
    w = torch.randn(400, 64).to(torch.bfloat16)
    whole = quantize_int4(w)
    monkeypatch.setattr(quantized, "INT4_CHUNK", 64)
    for a, b in zip(whole, quantize_int4(w), strict=True):
        assert torch.equal(a, b)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 300), st.floats(1e-2, 1e2), st.integers(0, 2**31 - 1))
def test_the_int4_head_rescores_every_token_within_the_margin(rows: int, n: int, magnitude: float, seed: int):
    """The shortlist by its definition: every token whose int4 logit plus its margin reaches the best
    lower bound of its row (less the bf16 rounding) is rescored in float32; the others keep int4 values."""
    g = torch.Generator().manual_seed(seed)
    table = (torch.randn(n, 64, generator=g) * magnitude).to(torch.bfloat16)
    table[: n // 3] = table[n // 3 : 2 * (n // 3)]  # ties
    h = (torch.randn(rows, 64, generator=g) * magnitude).to(torch.bfloat16)
    packed, scales, error = quantize_int4(table)
    out = head_logits(h, table, packed, scales, error)
    approx = int4_matmul(h, packed, scales)[:, :n].float()
    exact = h.float() @ table.float().T
    margin = error * (quantized.RESCORE_Z * h.float().norm(dim=-1, keepdim=True))
    rounding = 2**-8 * approx.abs().amax(-1, keepdim=True)
    lo = (approx - margin).amax(-1, keepdim=True) - rounding
    shortlist = ((approx + margin) >= lo - rounding).any(0)
    assert torch.allclose(out[:, shortlist], exact[:, shortlist], rtol=1e-5, atol=1e-5)
    assert torch.equal(out[:, ~shortlist], approx[:, ~shortlist])
    assert torch.allclose(out.max(-1).values, exact.max(-1).values, rtol=1e-5, atol=1e-5)


def test_the_int4_head_survives_a_diverged_hidden_state():
    """Infinite or NaN hidden states (a broken model) give the whole table's logits, not an error."""
    table = torch.randn(50, 64).to(torch.bfloat16)
    copy = quantize_int4(table)
    for bad in (float("inf"), float("nan")):
        h = torch.ones(1, 64, dtype=torch.bfloat16)
        h[0, 3] = bad
        out = head_logits(h, table, *copy)
        assert out.shape == (1, 50)
        assert torch.equal(out.isnan(), (h.float() @ table.float().T).isnan())


def test_the_int4_head_rescoring_gives_the_exact_best_token(rt):
    """Final hidden states of real prompts: the shortlisting head's best token and its logit are those of
    the float32 product with the bf16 table; an ambiguous row (all zeros: every token ties) falls back to
    the full table."""
    model = rt.model
    if model.device.type != "cpu":
        pytest.skip("the decode copies are made for the CPU")
    table = model.embed.weight
    for prompt in PROMPTS:
        ids = rt.tokenizer.encode(prompt, bos=True)
        with torch.inference_mode():
            h = model(torch.tensor([ids]), torch.arange(len(ids))[None], logits="none").hidden[0, -4:]
            fast = model.head(h)
            exact = h.float() @ table.float().T
        best = exact.max(-1)
        assert torch.equal(fast.argmax(-1), best.indices), prompt
        assert torch.allclose(fast.max(-1).values, best.values, rtol=1e-5, atol=1e-4), prompt
        assert not torch.allclose(fast, exact, atol=1e-3)  # the rest are int4 values, not rescored
    zero = torch.zeros(1, table.shape[1], dtype=table.dtype)
    args = (model.head_int4, model.head_int4_scales, model.head_int4_error)
    assert torch.equal(head_logits(zero, table, *args), F.linear(zero, table).float())


def test_the_int4_head_decodes_what_the_full_head_does(rt, monkeypatch):
    """Greedy decoding of the oracle prompts, 20 tokens each: the same tokens through the int4 shortlist
    as through the float32 product with the whole bf16 table (the int8 layers in both)."""
    model, table = rt.model, rt.model.embed.weight
    if model.device.type != "cpu":
        pytest.skip("the decode copies are made for the CPU")

    def greedy(prompt: str) -> list[int]:
        ids = rt.tokenizer.encode(prompt, bos=True)
        cache = model.new_cache(len(ids) + 20)
        with torch.inference_mode():
            logits = prefill(model, cache, ids, 0)
            out = [int(logits.argmax())]
            for i in range(19):
                out.append(int(decode_one(model, cache, out[-1], len(ids) + i).argmax()))
        return out

    fast = [greedy(prompt) for prompt in PROMPTS]
    full = table.float().T  # once: converting the whole table at every token was most of this test's time
    monkeypatch.setattr(model, "head", lambda h, exact=False: h.float() @ full)
    assert fast == [greedy(prompt) for prompt in PROMPTS]


def test_int8_decode_steps_stay_near_the_exact_model(rt, rt32):
    """The engine's bf16 model with int8 and int4 decode copies against float32 with none: the next-token
    distribution after a decode step stays within the oracle's bound on every prompt."""
    if rt.model.device.type != "cpu":
        pytest.skip("the decode copies are made for the CPU")
    assert rt.model.head_int4 is not None and rt32.model.head_int4 is None
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
