"""The memory reader: a temperature and a log-scale on attached memories' attention logits (APE)."""

from __future__ import annotations

import math

import pytest
import torch
from memory_checks import memory_logits, one_memory
from safetensors.torch import save_file

from engine.errors import ReaderFileError
from engine.memory import reader as reader_module
from engine.memory.distill import (
    Example,
    ReaderParameters,
    distill_step,
    kl,
    student_logprobs,
    teacher_logprobs,
)
from engine.memory.profiles import PROFILES, MemoryProfile
from engine.memory.reader import MemoryReader, resolve
from engine.memory.writer import write_memories

FACT = " The access code for the blue vault is 7391-QX. It was set by Mara Lind in 2019."
BODY = "\n\nQuestion: What is the access code for the blue vault?\nAnswer:"


class Weights:
    """A probe keeping the attention weights of the layers it is asked for."""

    def __init__(self, layers: set[int]):
        self.layers = frozenset(layers)
        self.seen: dict[int, torch.Tensor] = {}

    def observe(self, layer: int, weights: torch.Tensor) -> None:
        self.seen[layer] = weights.clone()


def uniform(rt, temperature: float, scale: float) -> MemoryReader:
    c = rt.model.config
    return MemoryReader.uniform("test", c.n_layer, c.n_kv_head, temperature, scale)


@pytest.fixture(scope="module")
def memory(rt32):
    return one_memory(rt32, FACT, PROFILES["dense"])


def test_the_base_reader_reads_as_no_reader(rt32, memory):
    body = rt32.tokenizer.encode(BODY)
    assert torch.equal(
        memory_logits(rt32, memory, body, uniform(rt32, 1.0, 1.0)), memory_logits(rt32, memory, body)
    )


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_the_scale_multiplies_the_odds_of_attending_to_memory(rt32, memory, scale):
    """In the first layer (same inputs either way) each query's odds of attending to a memory key rather
    than to the context are multiplied by S, and nothing else changes."""
    body, M = rt32.tokenizer.encode(BODY), memory.kept
    base, read = Weights({0}), Weights({0})
    memory_logits(rt32, memory, body, probe=base)
    memory_logits(rt32, memory, body, uniform(rt32, 1.0, scale), probe=read)
    before, after = base.seen[0], read.seen[0]
    odds = lambda w: w[..., :M].sum(-1) / w[..., M:].sum(-1)  # noqa: E731
    assert torch.allclose(odds(after), scale * odds(before), rtol=1e-3)
    within = lambda w: w[..., :M] / w[..., :M].sum(-1, keepdim=True)  # noqa: E731
    assert torch.allclose(within(after), within(before), atol=1e-5)


def test_the_temperature_divides_memory_logits(rt32, memory):
    """In the first layer, log-weight differences between memory keys are divided by T; between context
    keys they stay as they were."""
    body, M, T = rt32.tokenizer.encode(BODY), memory.kept, 0.7
    base, read = Weights({0}), Weights({0})
    memory_logits(rt32, memory, body, probe=base)
    memory_logits(rt32, memory, body, uniform(rt32, T, 1.0), probe=read)
    logs = lambda w: w.clamp_min(1e-30).log()  # noqa: E731
    before, after = logs(base.seen[0]), logs(read.seen[0])
    spread = lambda x: x[..., 1:M] - x[..., :1]  # noqa: E731  (memory keys against the first)
    assert torch.allclose(spread(after), spread(before) / T, atol=0.05)
    # the context keys the last query sees (the sink and the body), against the sink's first token
    ctx = lambda x: x[..., -1, M + 1 :] - x[..., -1, M : M + 1]  # noqa: E731
    assert torch.allclose(
        ctx(after)[torch.isfinite(ctx(after))], ctx(before)[torch.isfinite(ctx(before))], atol=1e-3
    )


def test_both_attention_paths_read_the_bias_alike(rt32, memory):
    """Layers handing their weights to a probe attend by hand; the others through the fused kernel with a
    float mask. Both must add the same log-scale: the logits agree whichever layers are probed."""
    body, reader = rt32.tokenizer.encode(BODY), uniform(rt32, 0.8, 2.0)
    fused = memory_logits(rt32, memory, body, reader)
    by_hand = memory_logits(rt32, memory, body, reader, probe=Weights(set(range(rt32.model.config.n_layer))))
    assert (fused - by_hand).abs().max() < 1e-3
    assert (fused - memory_logits(rt32, memory, body)).abs().max() > 0.1  # and the reader changed them


@pytest.mark.parametrize(
    "temperature, log_scale",
    [(0.0, 0.0), (1e-30, 0.0), (21.0, 0.0), (math.nan, 0.0), (1.0, math.inf), (1.0, -11.0), (1.0, math.nan)],
)
def test_a_reader_refuses_values_that_make_attention_all_or_nothing(temperature, log_scale):
    with pytest.raises(ValueError, match="must lie in"):
        MemoryReader("bad", torch.full((2, 1), temperature), torch.full((2, 1), log_scale))


def test_a_reader_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="layers, kv heads"):
        MemoryReader("bad", torch.ones(2, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="scale"):
        MemoryReader.uniform("bad", 2, 1, 1.0, 0.0)


def test_a_reader_file_round_trips_and_refuses_another_model(tmp_path):
    reader = MemoryReader("distilled", torch.rand(3, 2) + 0.5, torch.randn(3, 2))
    path = tmp_path / "reader.safetensors"
    reader.save(path, "sha-of-the-model", "test data")
    back = MemoryReader.load(path, "sha-of-the-model", (3, 2))
    assert back.name == "distilled"
    assert torch.equal(back.temperature, reader.temperature) and torch.equal(back.log_scale, reader.log_scale)
    assert resolve(str(path), "sha-of-the-model", (3, 2)).name == "distilled"
    for fingerprint, shape in (("sha-of-another", (3, 2)), ("sha-of-the-model", (4, 2))):
        with pytest.raises(ReaderFileError, match="another model"):
            MemoryReader.load(path, fingerprint, shape)


@pytest.mark.parametrize("content", [b"", b"not a reader at all", b"\xff" * 64, "other tensors"])
def test_a_file_that_is_not_a_reader_is_one_sentence_naming_the_setting(tmp_path, content):
    path = tmp_path / "reader.safetensors"
    if content == "other tensors":
        save_file({"weight": torch.ones(2)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(ReaderFileError, match="is not a memory reader file"):
        MemoryReader.load(path, "sha", (3, 2))
    with pytest.raises(ReaderFileError, match=r"^\[engine\] reader = .*: .* is not a memory reader file"):
        resolve(str(path), "sha", (3, 2))
    with pytest.raises(ReaderFileError, match="does not exist"):
        resolve(str(tmp_path / "missing.safetensors"), "sha", (3, 2))
    with pytest.raises(ReaderFileError, match="is a folder"):
        resolve(str(tmp_path), "sha", (3, 2))


def test_trained_is_the_bundled_reader_for_its_model_only(tmp_path, monkeypatch):
    """`base` reads as the model does; `trained` is the bundled reader only for the model it was trained
    for: another model, or a checkout without the file, reads as it would without one (no error: the
    setting is the default). A damaged bundled reader is an error, not silently ignored."""
    assert resolve("base", "sha", (3, 2)) is None
    assert resolve("trained", "sha-of-a-model-nobody-trained-for", (3, 2)) is None
    monkeypatch.setattr(reader_module, "BUNDLED", tmp_path / "missing.safetensors")
    assert resolve("trained", "sha", (3, 2)) is None
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 100)
    monkeypatch.setattr(reader_module, "BUNDLED", damaged)
    with pytest.raises(ReaderFileError, match="trained.*is not a memory reader file"):
        resolve("trained", "sha", (3, 2))


def test_with_exact_memories_the_student_is_the_teacher(rt32):
    """Distillation compares like with like: a full-precision memory of one chunk is exactly the chunk as
    text (test_memory.py), so the base reader's KL is zero, and a reader that changes attention's is not.
    (Several chunks differ even so: each memory was written alone, the text's chunks see each other.)"""
    tok = rt32.tokenizer
    sources = [tok.encode(FACT)]
    exact = MemoryProfile("exact", bits=32)
    memories = [m.unpack(torch.float32, "cpu") for m in write_memories(rt32.model, rt32.sink, sources, exact)]
    example = Example(sources, memories, tok.encode(BODY + " 7391-QX"))
    teacher = teacher_logprobs(rt32.model, rt32.sink, example)
    base = ReaderParameters(rt32.model.config.n_layer, rt32.model.config.n_kv_head)
    with torch.no_grad():
        assert float(kl(teacher, student_logprobs(rt32.model, rt32.sink, example, base.reader()))) < 1e-4
        assert (
            float(kl(teacher, student_logprobs(rt32.model, rt32.sink, example, uniform(rt32, 0.7, 2.0))))
            > 1e-2
        )


def test_distillation_moves_the_reader_towards_the_text(rt):
    """Parallel int8 memories read unlike text; a few steps on one example lower its KL, through gradients
    that reach every layer's scalars."""
    tok = rt.tokenizer
    texts = [FACT, " Tomatoes grow best in warm soil with full sun.", " The ferry leaves from pier six."]
    sources = [tok.encode(t) for t in texts]
    profile = PROFILES["dense-parallel"]
    memories = [
        m.unpack(rt.model.dtype, rt.model.device) for m in write_memories(rt.model, rt.sink, sources, profile)
    ]
    example = Example(sources, memories, tok.encode(BODY + " 7391-QX"))
    rt.model.requires_grad_(False)
    params = ReaderParameters(rt.model.config.n_layer, rt.model.config.n_kv_head)
    optimizer = torch.optim.Adam(params.parameters(), lr=0.05)
    first = distill_step(rt.model, rt.sink, example, params, optimizer)
    assert bool((params.log_temperature.grad != 0).all()) and bool((params.log_scale.grad != 0).all())
    for _ in range(5):
        distill_step(rt.model, rt.sink, example, params, optimizer)
    assert distill_step(rt.model, rt.sink, example, params, None) < 0.8 * first
