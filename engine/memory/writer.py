"""Write explicit memories: encode each reference alone after the sink, keep K/V, select, quantize."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.memory.profiles import MAX_REFERENCE_TOKENS, Memory, MemoryProfile
from engine.memory.quantization import quantize
from engine.models.transformer import Transformer


class _Collector:
    """Keeps the pre-RoPE keys and values of memory layers and, when needed, the attention each
    reference token receives from the reference's own tokens (softmax over all real keys, no causal
    mask, summed over queries and grouped heads) — the paper's rule for choosing tokens to keep."""

    def __init__(self, layers: tuple[int, ...], is_ref: torch.Tensor, is_real: torch.Tensor, scores: bool):
        self.layers, self.is_ref, self.is_real, self.scores = set(layers), is_ref, is_real, scores
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.received: dict[int, torch.Tensor] = {}

    def record(
        self, layer: int, q: torch.Tensor, k_pre: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> None:
        if layer not in self.layers:
            return
        self.k[layer], self.v[layer] = k_pre.float(), v.float()
        if not self.scores:
            return
        B, H, T, D = q.shape
        Hkv = k.shape[1]
        qg = q.float().view(B, Hkv, H // Hkv, T, D)
        att = qg @ k.float()[:, :, None].transpose(-1, -2) * D**-0.5  # (B, Hkv, G, T, T)
        att = att.masked_fill(~self.is_real[:, None, None, None, :], float("-inf")).softmax(-1)
        att = att * self.is_ref[:, None, None, :, None]  # only the reference's own tokens vote
        self.received[layer] = att.sum(dim=(2, 3))  # (B, Hkv, T)


@torch.inference_mode()
def write_memories(
    model: Transformer,
    sink: Sequence[int],
    references: Sequence[Sequence[int]],
    profile: MemoryProfile,
    batch_size: int = 16,
    pad_id: int = 0,
) -> list[Memory]:
    """Memories for token-id references (each at most 128 tokens), many per forward pass."""
    for ref in references:
        if not 0 < len(ref) <= MAX_REFERENCE_TOKENS:
            raise ValueError(f"a reference must have 1 to {MAX_REFERENCE_TOKENS} tokens, not {len(ref)}")
    layers = profile.layer_ids(model.config.n_layer)
    order = sorted(range(len(references)), key=lambda i: len(references[i]))  # similar lengths batch well
    out: list[Memory | None] = [None] * len(references)
    for a in range(0, len(order), batch_size):
        batch = order[a : a + batch_size]
        written = _write_batch(model, list(sink), [references[i] for i in batch], profile, layers, pad_id)
        for i, memory in zip(batch, written, strict=True):
            out[i] = memory
    return out  # type: ignore[return-value]


def _write_batch(
    model: Transformer,
    sink: list[int],
    refs: list[Sequence[int]],
    profile: MemoryProfile,
    layers: tuple[int, ...],
    pad_id: int,
) -> list[Memory]:
    S, B = len(sink), len(refs)
    T = S + max(len(r) for r in refs)
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    is_real = torch.zeros(B, T, dtype=torch.bool)
    for b, ref in enumerate(refs):
        tokens[b, : S + len(ref)] = torch.tensor(sink + list(ref))
        is_real[b, : S + len(ref)] = True
    is_ref = is_real.clone()
    is_ref[:, :S] = False
    device = model.device
    collector = _Collector(layers, is_ref.to(device), is_real.to(device), scores=not profile.keeps_all)
    pos = torch.arange(T, device=device).expand(B, T)
    model(tokens.to(device), pos, capture=collector, logits="none")

    memories = []
    for b, ref in enumerate(refs):
        L = len(ref)
        n = profile.kept(L)
        ks, vs, idxs = [], [], []
        for layer in layers:
            k = collector.k[layer][b, :, S : S + L]  # (Hkv, L, D)
            v = collector.v[layer][b, :, S : S + L]
            if n < L:
                received = collector.received[layer][b, :, S : S + L]  # (Hkv, L)
                idx = received.topk(n, dim=-1).indices.sort(dim=-1).values
            else:
                idx = torch.arange(L, device=device).expand(k.shape[0], L)
            ks.append(k.gather(1, idx[..., None].expand(-1, -1, k.shape[-1])))
            vs.append(v.gather(1, idx[..., None].expand(-1, -1, v.shape[-1])))
            idxs.append(idx)
        k_all, v_all = torch.stack(ks).cpu(), torch.stack(vs).cpu()  # (n_layers, Hkv, n, D)
        memories.append(
            Memory(
                profile=profile,
                length=L,
                layers=layers,
                k=quantize(k_all, profile.bits, profile.group),
                v=quantize(v_all, profile.bits, profile.group),
                index=torch.stack(idxs).to(torch.int16).cpu(),
            )
        )
    return memories
