"""How attention reads attached memories: a temperature and a scale on the memory keys' share.

Memory keys were written by the model reading each reference alone; read beside the context, an
untrained model gives them a share of attention it never learned to calibrate. Adaptive Parallel Encoding
(APE, Yang et al. 2025, arXiv 2502.05431) fixes the same mismatch for contexts encoded in parallel with two
numbers: a temperature T on their attention logits (T < 1 sharpens them) and a scale S on their share
(a log S added to their logits). `MemoryReader` holds one (T, log S) per layer and KV head, so the same
object serves the hand-tuned uniform setting and a per-layer one learned by self-distillation.

The reader changes only what memories contribute: with no memory attached (RAG, none) attention is the
model's own, and the base reader (T = 1, S = 1) is exactly no reader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemoryReader:
    """temperature, log_scale: (n_layer, Hkv) float32. A memory key k of layer l, head h is attended as
    k / temperature[l, h] with log_scale[l, h] added to its logit (before the softmax over memory and
    context keys together)."""

    name: str
    temperature: torch.Tensor
    log_scale: torch.Tensor

    def __post_init__(self) -> None:
        if self.temperature.shape != self.log_scale.shape or self.temperature.dim() != 2:
            raise ValueError(
                f"a reader's temperature {tuple(self.temperature.shape)} and log-scale "
                f"{tuple(self.log_scale.shape)} must both be (layers, kv heads)"
            )
        if not bool((self.temperature > 0).all()) or not bool(torch.isfinite(self.log_scale).all()):
            raise ValueError("a reader's temperatures must be positive and its log-scales finite")

    @classmethod
    def uniform(
        cls, name: str, n_layer: int, n_kv_head: int, temperature: float, scale: float
    ) -> MemoryReader:
        """The same (T, S) in every layer and head (APE's setting); (1, 1) reads as the model does."""
        if scale <= 0:
            raise ValueError(f"a reader's scale must be positive, not {scale}")
        shape = (n_layer, n_kv_head)
        return cls(name, torch.full(shape, float(temperature)), torch.full(shape, math.log(scale)))

    def key_factor(self, layer: int) -> torch.Tensor:
        """(Hkv, 1, 1): what the layer's roped memory keys are multiplied by (1 / T)."""
        return (1.0 / self.temperature[layer])[:, None, None]

    def bias(self, layer: int) -> torch.Tensor | None:
        """(Hkv,) log S added to the layer's memory logits; None where it is zero (no float mask needed)."""
        row = self.log_scale[layer]
        return None if not bool(row.any()) else row
