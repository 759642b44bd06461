"""Explicit memories: the profile that shapes them, the stored (quantized) form and the attachable form."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.errors import UnknownProfileError
from engine.memory.quantization import QTensor, dequantize

MAX_REFERENCE_TOKENS = 128  # Memory³: a reference is at most 128 tokens, encoded alone


@dataclass(frozen=True)
class MemoryProfile:
    """Which layers hold memory, which tokens each head keeps, how many bits, where memories sit.

    layers: "all", "first_half" or explicit layer indices. tokens: None keeps all; an int keeps the
    top-k per head; a float in (0, 1] keeps that fraction. positions: "sequential" packs memories one
    after another; "parallel" gives every memory the same positions (the paper's layout).
    """

    name: str
    layers: str | tuple[int, ...] = "all"
    tokens: int | float | None = None
    bits: int = 8
    positions: str = "sequential"
    group: int = 32

    def __post_init__(self) -> None:
        if self.positions not in ("sequential", "parallel"):
            raise ValueError(f"positions must be sequential or parallel, not {self.positions!r}")
        if isinstance(self.layers, str) and self.layers not in ("all", "first_half"):
            raise ValueError(f"layers must be 'all', 'first_half' or a tuple of indices, not {self.layers!r}")
        if isinstance(self.tokens, float) and not 0 < self.tokens <= 1:
            raise ValueError(f"a token fraction must lie in (0, 1], not {self.tokens}")
        if self.bits not in (4, 8, 16, 32):
            raise ValueError(f"bits must be 4, 8, 16 or 32, not {self.bits}")

    def layer_ids(self, n_layer: int) -> tuple[int, ...]:
        if self.layers == "all":
            return tuple(range(n_layer))
        if self.layers == "first_half":
            return tuple(range(n_layer // 2))
        bad = [i for i in self.layers if not 0 <= i < n_layer]
        if bad:
            raise ValueError(f"memory layers {bad} do not exist in a {n_layer}-layer model")
        return tuple(sorted(set(self.layers)))

    def kept(self, length: int) -> int:
        """Tokens kept per head for a reference of `length` tokens."""
        if self.tokens is None:
            return length
        if isinstance(self.tokens, float):
            return max(1, math.ceil(self.tokens * length))
        return min(length, self.tokens)

    @property
    def keeps_all(self) -> bool:
        return self.tokens is None or self.tokens == 1.0


PROFILES: dict[str, MemoryProfile] = {
    p.name: p
    for p in (
        MemoryProfile("dense"),  # all layers, all tokens, int8, sequential: reads well untrained
        MemoryProfile("dense-int4", bits=4),
        MemoryProfile("dense-fp16", bits=16),
        MemoryProfile("dense-parallel", positions="parallel"),  # the default: README "Evaluation"
        MemoryProfile("dense-int4-parallel", bits=4, positions="parallel"),
        # the 1/8 of dense fp16 (a 128-token memory: 56 tokens a head at 4 bits, 292,320 bytes)
        MemoryProfile("top43-int4-parallel", tokens=0.43, bits=4, positions="parallel"),
        MemoryProfile("top75", tokens=0.75),
        MemoryProfile("top50", tokens=0.5),
        MemoryProfile("first-half", layers="first_half"),
        MemoryProfile("paper", layers="first_half", tokens=8, positions="parallel"),
    )
}


def named(name: str) -> MemoryProfile:
    """The profile called `name`; UnknownProfileError (one sentence naming the choices) otherwise."""
    if name not in PROFILES:
        raise UnknownProfileError(
            f"There is no memory profile {name!r}; choose one of {', '.join(PROFILES)}."
        )
    return PROFILES[name]


@dataclass
class Memory:
    """One reference's stored memory. k, v: (n_mem_layers, Hkv, kept, D); index: token offsets kept."""

    profile: MemoryProfile
    length: int
    layers: tuple[int, ...]
    k: QTensor
    v: QTensor
    index: torch.Tensor  # (n_mem_layers, Hkv, kept) int16

    @property
    def nbytes(self) -> int:
        index_bytes = 0 if self.profile.keeps_all else self.index.numel() * self.index.element_size()
        return self.k.nbytes + self.v.nbytes + index_bytes

    def unpack(self, dtype: torch.dtype, device: torch.device) -> MemoryKV:
        return MemoryKV(
            positions=self.profile.positions,
            length=self.length,
            layers=self.layers,
            k=dequantize(self.k.to(device), dtype),
            v=dequantize(self.v.to(device), dtype),
            index=self.index.to(device=device, dtype=torch.int64),
        )


@dataclass
class MemoryKV:
    """A memory ready for attention: dequantized on the run device, keys still before RoPE."""

    positions: str
    length: int
    layers: tuple[int, ...]
    k: torch.Tensor  # (n_mem_layers, Hkv, kept, D)
    v: torch.Tensor
    index: torch.Tensor  # (n_mem_layers, Hkv, kept) int64
    key: str = ""  # what the memory is of (a chunk hash): how citations name it

    @property
    def kept(self) -> int:
        return self.k.shape[2]
