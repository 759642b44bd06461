"""The memory reader: a temperature and a log-scale on attached memories' attention logits (APE)."""

from __future__ import annotations

import math

import pytest
import torch
from memory_checks import memory_logits, one_memory

from engine.memory.profiles import PROFILES
from engine.memory.reader import MemoryReader

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


def test_a_reader_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="positive"):
        MemoryReader("bad", torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="finite"):
        MemoryReader("bad", torch.ones(2, 1), torch.full((2, 1), math.inf))
    with pytest.raises(ValueError, match="layers, kv heads"):
        MemoryReader("bad", torch.ones(2, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="scale"):
        MemoryReader.uniform("bad", 2, 1, 1.0, 0.0)
