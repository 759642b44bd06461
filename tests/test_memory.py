"""Explicit memory: exactness against plain text, quantized profiles, selection, placement, recall."""

from __future__ import annotations

import pytest
import torch
from memory_checks import memory_logits, one_memory, plain_logits

from engine.chat.generation import Generation
from engine.memory.attach import place
from engine.memory.profiles import PROFILES, MemoryKV, MemoryProfile
from engine.memory.writer import write_memories

FACT = " The access code for the blue vault is 7391-QX. It was set by Mara Lind in 2019."
DISTRACTORS = [
    " Tomatoes grow best in warm soil with full sun and regular watering.",
    " The harbour ferry leaves every forty minutes from pier six.",
]
QUESTION = (
    "\n\nQuestion: What is the access code for the blue vault?\nAnswer: The access code for the blue vault is"
)
EXACT = MemoryProfile("exact", bits=32)


def test_full_precision_memory_equals_plain_prefill(rt32):
    ref, body = rt32.tokenizer.encode(FACT), rt32.tokenizer.encode(QUESTION)
    plain = plain_logits(rt32, rt32.sink + ref + body)
    memory = memory_logits(rt32, one_memory(rt32, FACT, EXACT), body)
    assert (memory - plain).abs().max() < 1e-3


def test_memory_is_masked_like_text_beyond_the_sliding_window(rt32):
    """A question of 600 tokens pushes the memory out of the 512-token window of the local layers:
    the result must still equal plain text, so memory tokens fall out of the window exactly as text."""
    ref = rt32.tokenizer.encode(FACT)
    filler = rt32.tokenizer.encode(" The weather was calm and the sea was quiet." * 60)[:600]
    body = filler + rt32.tokenizer.encode(QUESTION)
    assert len(body) > rt32.model.config.sliding_window
    plain = plain_logits(rt32, rt32.sink + ref + body)
    memory = memory_logits(rt32, one_memory(rt32, FACT, EXACT), body)
    assert (memory - plain).abs().max() < 1e-3


def test_fp16_memory_is_close_to_plain_prefill(rt32):
    ref, body = rt32.tokenizer.encode(FACT), rt32.tokenizer.encode(QUESTION)
    plain = plain_logits(rt32, rt32.sink + ref + body)
    memory = memory_logits(rt32, one_memory(rt32, FACT, PROFILES["dense-fp16"]), body)
    assert int(memory.argmax()) == int(plain.argmax())
    assert (memory - plain).abs().max() < 0.1


def test_generation_with_an_exact_memory_continues_like_plain_text(rt32):
    tok = rt32.tokenizer
    memory = one_memory(rt32, FACT, EXACT)
    with_memory = Generation(
        rt32.model,
        tok,
        rt32.sink + tok.encode(QUESTION),
        max_new_tokens=12,
        retrieve=lambda _query: [memory],
        sink_len=len(rt32.sink),
        memory_slots=128,
    )
    plain = Generation(
        rt32.model, tok, rt32.sink + tok.encode(FACT) + tok.encode(QUESTION), max_new_tokens=12
    )
    assert "".join(with_memory.run()) == "".join(plain.run())


def _answer(rt, memories: list[MemoryKV] | None) -> str:
    tok = rt.tokenizer
    gen = Generation(
        rt.model,
        tok,
        rt.sink + tok.encode(QUESTION),
        max_new_tokens=8,
        retrieve=(lambda _q: memories) if memories else None,
        sink_len=len(rt.sink),
        memory_slots=3 * 128,
    )
    return "".join(gen.run())


def test_dense_memory_answers_a_fact_the_model_cannot_know(rt):
    assert "7391" not in _answer(rt, None)
    memories = write_memories(
        rt.model, rt.sink, [rt.tokenizer.encode(t) for t in [*DISTRACTORS, FACT]], PROFILES["dense"]
    )
    answer = _answer(rt, [m.unpack(rt.model.dtype, rt.model.device) for m in memories])
    assert "7391-QX" in answer


def test_batched_writing_equals_writing_alone(rt32):
    """Padding in a batch must not leak into any memory."""
    refs = [rt32.tokenizer.encode(t) for t in [FACT, *DISTRACTORS, " Short."]]
    together = write_memories(rt32.model, rt32.sink, refs, EXACT, batch_size=4)
    for ref, memory in zip(refs, together, strict=True):
        alone = write_memories(rt32.model, rt32.sink, [ref], EXACT)[0]
        assert memory.length == alone.length == len(ref)
        assert torch.allclose(memory.k.codes, alone.k.codes, atol=1e-4)
        assert torch.allclose(memory.v.codes, alone.v.codes, atol=1e-4)


@pytest.mark.parametrize("name", ["top75", "top50", "paper"])
def test_sparse_profiles_keep_the_dense_vectors_of_the_chosen_tokens(rt32, name):
    profile = PROFILES[name]
    ref = rt32.tokenizer.encode(FACT)
    dense = write_memories(rt32.model, rt32.sink, [ref], MemoryProfile("d", layers=profile.layers, bits=32))[
        0
    ]
    sparse = write_memories(
        rt32.model,
        rt32.sink,
        [ref],
        MemoryProfile("s", layers=profile.layers, tokens=profile.tokens, bits=32),
    )[0]
    n_layers = len(profile.layer_ids(rt32.model.config.n_layer))
    kept = profile.kept(len(ref))
    assert sparse.k.codes.shape == (n_layers, rt32.model.config.n_kv_head, kept, rt32.model.config.head_dim)
    idx = sparse.index.long()
    assert (idx >= 0).all() and (idx < len(ref)).all()
    assert (idx.diff(dim=-1) > 0).all()  # sorted and distinct: positions keep their order
    gathered = dense.k.codes.gather(2, idx[..., None].expand(-1, -1, -1, dense.k.codes.shape[-1]))
    assert torch.allclose(gathered, sparse.k.codes, atol=1e-4)


def test_sparse_selection_follows_attention_received(rt32):
    """The kept tokens are those the reference's own queries attend to most: recompute layer 0 by hand."""
    model, tok = rt32.model, rt32.tokenizer
    ref = tok.encode(FACT)
    memory = write_memories(model, rt32.sink, [ref], MemoryProfile("s", layers=(0,), tokens=8, bits=32))[0]
    ids = torch.tensor([rt32.sink + ref])
    attn = model.blocks[0].attn
    with torch.inference_mode():
        x = model.embed(ids) * model.config.embed_scale
        h = model.blocks[0].attn_norm(x)
        T, D = ids.shape[1], attn.head_dim
        qkv = attn.wqkv(h).view(1, T, -1, D).transpose(1, 2)
        q = attn.q_norm(qkv[:, : attn.n_head])
        k = attn.k_norm(qkv[:, attn.n_head : attn.n_head + attn.n_kv_head])
        pos = torch.arange(T)[None, None]
        q, k = attn.rotary(q, pos), attn.rotary(k, pos)
        weights = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)  # (1, H, T, T), no causal mask
    S = len(rt32.sink)
    received = weights[0, :, S:, S:].sum(dim=(0, 1))  # all heads share the one KV head of this model
    expected = received.topk(8).indices.sort().values
    assert memory.index[0, 0].long().tolist() == expected.tolist()


def test_profiles_resolve_layers_and_tokens():
    assert PROFILES["paper"].layer_ids(18) == tuple(range(9))
    assert PROFILES["dense"].layer_ids(18) == tuple(range(18))
    assert PROFILES["paper"].kept(128) == 8 and PROFILES["paper"].kept(5) == 5
    assert PROFILES["top75"].kept(128) == 96
    with pytest.raises(ValueError):
        MemoryProfile("bad", positions="diagonal")
    with pytest.raises(ValueError):
        MemoryProfile("bad", tokens=1.5)
    with pytest.raises(ValueError):
        MemoryProfile("bad", layers=(40,)).layer_ids(18)


def test_writer_rejects_references_over_128_tokens(rt32):
    with pytest.raises(ValueError):
        write_memories(rt32.model, rt32.sink, [[10] * 129], PROFILES["dense"])


def _kv(length: int, positions: str) -> MemoryKV:
    z = torch.zeros(1, 1, length, 4)
    return MemoryKV(positions, length, (0,), z, z, torch.arange(length).view(1, 1, -1))


def test_placement_sequential_and_parallel():
    seq = [_kv(10, "sequential"), _kv(20, "sequential")]
    assert place(seq, end=100, floor=3) == [70, 80]
    assert place(seq, end=20, floor=3) == [3, 13]  # never into the sink
    par = [_kv(10, "parallel"), _kv(20, "parallel")]
    assert place(par, end=100, floor=3) == [80, 80]


def test_memory_profile_sizes(rt):
    ref = rt.tokenizer.encode(FACT)
    sizes = {name: write_memories(rt.model, rt.sink, [ref], p)[0].nbytes for name, p in PROFILES.items()}
    assert sizes["dense-int4"] < sizes["dense"] < sizes["dense-fp16"]
    assert sizes["paper"] < sizes["top50"] < sizes["top75"] < sizes["dense"]
    assert sizes["first-half"] < sizes["dense"]


def test_the_compact_profile_holds_a_full_reference_in_an_eighth_of_dense_fp16(rt):
    """The issue's size target for the default model: a 128-token memory of top43-int4-parallel is at most
    1/8 of the same memory in dense fp16 (scales and kept-token indices included)."""
    ref = (rt.tokenizer.encode(FACT) * 128)[:128]
    size = {
        p: write_memories(rt.model, rt.sink, [ref], PROFILES[p])[0].nbytes
        for p in ("top43-int4-parallel", "dense-fp16")
    }
    assert size["top43-int4-parallel"] <= size["dense-fp16"] / 8 == 294_912
