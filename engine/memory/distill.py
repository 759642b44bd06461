"""Training a memory reader by self-distillation: the model reading memories learns to predict what it
predicts reading the same chunks as text.

Teacher: the frozen model with the chunks as text between the sink and the body (RAG's prompt). Student:
the same frozen model with the chunks' memories attached where a generation attaches them, read through a
`MemoryReader` whose scalars (a log-temperature and a log-scale per layer and KV head) are the only
trainable parameters. Loss: KL(teacher ‖ student) of the next-token distributions after every body token
(the question's prompt and the teacher's own answer), in nats per token. No labels are needed: this is
Memory³'s goal (memory read as well as text) as a distillation objective (Hinton et al. 2015), with APE's
two corrections (arXiv 2502.05431) as the student's parameters.

Gradients flow through the frozen model's attention and linears (activations only), so a step costs a
teacher prefill without gradients and a student forward and backward over the body.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.memory.attach import attach, place, span
from engine.memory.profiles import MAX_REFERENCE_TOKENS, MemoryKV
from engine.memory.reader import MemoryReader
from engine.models.transformer import Transformer


@dataclass(frozen=True)
class Example:
    """One reading: chunks as token ids in reading order (the best last, as chat reads them), their memories
    in the same order, and the body after them (prompt and reply token ids)."""

    sources: Sequence[Sequence[int]]
    memories: Sequence[MemoryKV]
    body: Sequence[int]


class ReaderParameters(torch.nn.Module):
    """A MemoryReader's trainable form: log T and log S per layer and KV head, both zero at the start (the
    base reader: the model's own reading)."""

    def __init__(self, n_layer: int, n_kv_head: int):
        super().__init__()
        self.log_temperature = torch.nn.Parameter(torch.zeros(n_layer, n_kv_head))
        self.log_scale = torch.nn.Parameter(torch.zeros(n_layer, n_kv_head))

    def reader(self, name: str = "training") -> MemoryReader:
        return MemoryReader(name, self.log_temperature.exp(), self.log_scale)

    def frozen(self, name: str) -> MemoryReader:
        """The reader as trained, detached from the graph (what gets saved and read at answer time)."""
        with torch.no_grad():
            return MemoryReader(name, self.log_temperature.exp().clone(), self.log_scale.clone())


@torch.no_grad()
def teacher_logprobs(model: Transformer, sink: Sequence[int], example: Example) -> torch.Tensor:
    """(len(body), vocab) float32 log-probabilities of the token after each body token, the chunks read
    as text."""
    ids = [*sink, *(t for s in example.sources for t in s), *example.body]
    device = model.device
    out = model(
        torch.tensor([ids], device=device), torch.arange(len(ids), device=device)[None], logits="none"
    )
    return F.log_softmax(model.head(out.hidden[:, -len(example.body) :], exact=True)[0].float(), dim=-1)


def student_logprobs(
    model: Transformer, sink: Sequence[int], example: Example, reader: MemoryReader
) -> torch.Tensor:
    """(len(body), vocab) float32 log-probabilities with the chunks' memories attached right after the sink
    (as `Generation` attaches the question's memories) and read through `reader`; differentiable in the
    reader's tensors."""
    device, S, body = model.device, len(sink), example.body
    cache = model.new_cache(S + len(body), len(example.memories) * MAX_REFERENCE_TOKENS)
    with torch.no_grad():
        model(torch.tensor([list(sink)], device=device), torch.arange(S, device=device)[None], cache=cache)
    start = S + span(example.memories)
    attach(model, cache, example.memories, place(example.memories, start, S), reader)
    positions = torch.arange(start, start + len(body), device=device)[None]
    out = model(torch.tensor([list(body)], device=device), positions, cache=cache, logits="none")
    return F.log_softmax(model.head(out.hidden, exact=True)[0].float(), dim=-1)


def kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) per row of log-probabilities (T, vocab), averaged over rows: nats per token."""
    return (teacher.exp() * (teacher - student)).sum(-1).mean()


def distill_step(
    model: Transformer,
    sink: Sequence[int],
    example: Example,
    params: ReaderParameters,
    optimizer: torch.optim.Optimizer | None,
) -> float:
    """One example's KL (nats per token); with an optimizer, one gradient step on the reader's scalars."""
    teacher = teacher_logprobs(model, sink, example)
    with torch.set_grad_enabled(optimizer is not None):
        loss = kl(teacher, student_logprobs(model, sink, example, params.reader()))
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError("the distillation loss is not finite: lower the learning rate")
    return value
