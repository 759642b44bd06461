"""Preallocated key-value buffers, one region for attached memories and one for the context.

Each key slot carries its position; empty slots hold a position no query reaches, so the attention
mask alone decides what is visible. Attaching memories writes into the memory region; nothing is
concatenated while decoding. Each layer has tensors of its own, so that a forward pass with gradients
(training a memory reader, engine/memory/distill.py) may write one layer's slots after another's were
read without invalidating what autograd saved.
"""

from __future__ import annotations

import torch

EMPTY = torch.iinfo(torch.int64).max // 2  # later than any query, so never attended


class KVCache:
    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_kv_head: int,
        head_dim: int,
        max_seq: int,
        memory_slots: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.memory_slots, self.max_seq, self.length = memory_slots, max_seq, 0
        n = memory_slots + max_seq
        self.k = [
            torch.zeros(batch, n_kv_head, n, head_dim, dtype=dtype, device=device) for _ in range(n_layer)
        ]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.pos = [
            torch.full((batch, n_kv_head, n), EMPTY, dtype=torch.int64, device=device) for _ in self.k
        ]
        # per layer: None, or (Hkv, n) logit biases of every key slot (a MemoryReader's log-scale on the
        # memory region, zero on the context)
        self._bias: list[torch.Tensor | None] = [None] * n_layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        """Write T new context keys (B, Hkv, T, D) at their positions (B, T); return the visible span."""
        T = k.shape[2]
        if self.length + T > self.max_seq:
            raise ValueError(f"context of {self.length + T} tokens exceeds the cache of {self.max_seq}")
        a = self.memory_slots + self.length
        self.k[layer][:, :, a : a + T] = k
        self.v[layer][:, :, a : a + T] = v
        self.pos[layer][:, :, a : a + T] = pos[:, None, :]
        end = a + T
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end], self.pos[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def key_bias(self, layer: int, end: int) -> torch.Tensor | None:
        """(Hkv, end) biases, in the cache's dtype, added to the first `end` key slots' logits; None: none."""
        bias = self._bias[layer]
        return None if bias is None else bias[:, :end]

    def set_memory(
        self,
        layer: int,
        k: torch.Tensor,
        v: torch.Tensor,
        pos: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> None:
        """Replace layer's memory region with roped keys, values (B, Hkv, M, D) at positions (B, Hkv, M);
        bias (Hkv,): added to these keys' attention logits (None: nothing added)."""
        M = k.shape[2]
        if self.memory_slots < M:
            raise ValueError(f"{M} memory tokens exceed the {self.memory_slots} memory slots")
        self.k[layer][:, :, :M] = k
        self.v[layer][:, :, :M] = v
        self.pos[layer][:, :, :M] = pos
        self.pos[layer][:, :, M : self.memory_slots] = EMPTY
        if bias is None:
            self._bias[layer] = None
            return
        row = torch.zeros(bias.shape[0], self.pos[layer].shape[-1], dtype=k.dtype, device=k.device)
        row[:, :M] = bias.to(row.device, k.dtype)[:, None]  # in the cache's dtype: no cast per step
        self._bias[layer] = row
