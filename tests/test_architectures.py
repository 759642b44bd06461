"""Every supported architecture against llama.cpp, on tiny random-weight GGUFs written by the tests.

No Llama or Qwen weights can be downloaded here, so each family is checked on a small model with the
real metadata keys and tensor names: the same token ids must give the same next-token logits in our
runtime and in llama.cpp. Random weights make the check strict: with the residual stream dominated by
attention and MLP outputs (`out_gain`), a wrong RoPE style, base, norm or mask moves the logits by whole
units (a wrong RoPE base: 1 to 6), while the two runtimes' float differences stay below 0.01 with F32
weights (llama.cpp keeps its KV cache in fp16) and below 0.2 with Q8_0 weights (llama.cpp then also
quantizes the activations to 8 bits; we multiply dequantized weights in float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from memory_checks import memory_logits, plain_logits

from bench.llamacpp import LlamaCpp
from bench.tiny_gguf import ARCHS, N_WORDS, vocab_size, write_tiny_gguf
from engine.errors import ModelLoadError, UnsupportedModelError
from engine.memory.profiles import MemoryProfile
from engine.memory.writer import write_memories
from engine.models.runtime import Runtime

LOGIT_TOLERANCE = {"F32": 0.05, "Q8_0": 0.5}


def _sequences(seed: int, n: int, length: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    first_word = vocab_size() - N_WORDS
    return [[1, *rng.integers(first_word, vocab_size(), length - 1).tolist()] for _ in range(n)]


def _load(tmp_path_factory, arch: str, qtype: str) -> tuple[Runtime, LlamaCpp, float]:
    path = write_tiny_gguf(tmp_path_factory.mktemp(arch) / f"{arch}-{qtype}.gguf", arch, qtype=qtype)
    return (
        Runtime.load(path, device="cpu", dtype=torch.float32),
        LlamaCpp(path, n_ctx=64),
        LOGIT_TOLERANCE[qtype],
    )


@pytest.fixture(
    scope="module",
    params=[(arch, q) for arch in ARCHS for q in ("F32", "Q8_0")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def tiny(request, tmp_path_factory) -> tuple[Runtime, LlamaCpp, float]:
    return _load(tmp_path_factory, *request.param)


@pytest.fixture(scope="module", params=ARCHS)
def tiny_f32(request, tmp_path_factory) -> tuple[Runtime, LlamaCpp, float]:
    """With F32 weights the two runtimes agree to 0.01, so even greedy ties break the same way."""
    return _load(tmp_path_factory, request.param, "F32")


def test_next_token_logits_match_llamacpp(tiny):
    rt, lc, tolerance = tiny
    spread = []
    for ids in _sequences(0, 4, 40):  # 40 tokens: five times Gemma's tiny window of 8
        ours = plain_logits(rt, ids).numpy()
        theirs = lc.next_logits(ids)
        assert np.abs(ours - theirs).max() < tolerance
        assert theirs[ours.argmax()] >= theirs.max() - tolerance  # the same top-1, up to a near-tie
        spread.append(theirs.std())
    assert min(spread) > 0.5, "the logits are nearly flat: this model could not tell a wrong runtime apart"


def test_greedy_continuation_matches_llamacpp(tiny_f32):
    rt, lc, _ = tiny_f32
    ids = _sequences(1, 1, 12)[0]
    cache = rt.model.new_cache(40)
    ours: list[int] = []
    with torch.inference_mode():
        logits = rt.model(torch.tensor([ids]), torch.arange(len(ids))[None], cache=cache).logits[0, -1]
        for i in range(20):
            ours.append(int(logits.argmax()))
            step = torch.tensor([[ours[-1]]]), torch.tensor([[len(ids) + i]])
            logits = rt.model(*step, cache=cache).logits[0, -1]
    assert ours == lc.greedy(ids, 20)


def test_exact_memory_equals_plain_text(tiny):
    """The memory path (keys stored before RoPE, roped at read time) holds for every RoPE style."""
    rt, _, _ = tiny
    ref, body = _sequences(2, 2, 20)
    ref, body = ref[1:], body[1:]
    memory = write_memories(rt.model, rt.sink, [ref], MemoryProfile("exact", bits=32))[0]
    with_memory = memory_logits(rt, memory.unpack(torch.float32, torch.device("cpu")), body)
    assert (with_memory - plain_logits(rt, rt.sink + ref + body)).abs().max() < 1e-3


def test_a_wrong_rope_base_is_caught(tmp_path):
    """The comparison above can fail: the same weights read with another RoPE base disagree clearly."""
    path = write_tiny_gguf(tmp_path / "qwen3.gguf", "qwen3")
    wrong = write_tiny_gguf(tmp_path / "qwen3-wrong.gguf", "qwen3", rope_base=10_000.0)
    ids = _sequences(0, 1, 40)[0]
    ours = plain_logits(Runtime.load(wrong, device="cpu", dtype=torch.float32), ids).numpy()
    assert np.abs(ours - LlamaCpp(path, n_ctx=64).next_logits(ids)).max() > 10 * LOGIT_TOLERANCE["F32"]


def test_unsupported_architecture_is_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "odd.gguf", "llama", architecture="mamba")
    with pytest.raises(UnsupportedModelError, match="'mamba' is not supported"):
        Runtime.load(path, device="cpu")


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "missing"])
def test_damaged_files_raise_a_load_error(tmp_path: Path, damage: str):
    path = write_tiny_gguf(tmp_path / "m.gguf", "llama")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(ModelLoadError):
        Runtime.load(path, device="cpu", dtype=torch.float32)
