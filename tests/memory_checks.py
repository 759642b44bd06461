"""Logits of the same text read two ways: all as plain context, or with the reference as a memory."""

from __future__ import annotations

import torch

from engine.memory.attach import attach, place
from engine.memory.profiles import MemoryKV, MemoryProfile
from engine.memory.reader import MemoryReader
from engine.memory.writer import write_memories
from engine.models.transformer import Probe


@torch.inference_mode()
def plain_logits(rt, ids: list[int]) -> torch.Tensor:
    return rt.model(
        torch.tensor([ids], device=rt.model.device), torch.arange(len(ids), device=rt.model.device)[None]
    ).logits[0, -1]


@torch.inference_mode()
def memory_logits(
    rt, memory: MemoryKV, body: list[int], reader: MemoryReader | None = None, probe: Probe | None = None
) -> torch.Tensor:
    """Sink as context, the memory attached right after it (read through `reader`), then the body at the
    following positions (its attention handed to `probe`)."""
    model, sink = rt.model, rt.sink
    S = len(sink)
    cache = model.new_cache(len(sink) + len(body), memory_slots=memory.kept)
    model(torch.tensor([sink]), torch.arange(S)[None], cache=cache)
    attach(model, cache, [memory], place([memory], S + memory.length, S), reader)
    start = S + memory.length
    positions = torch.arange(start, start + len(body))[None]
    return model(torch.tensor([body]), positions, cache=cache, probe=probe).logits[0, -1]


def one_memory(rt, text: str, profile: MemoryProfile) -> MemoryKV:
    memory = write_memories(rt.model, rt.sink, [rt.tokenizer.encode(text)], profile)[0]
    return memory.unpack(rt.model.dtype, rt.model.device)
