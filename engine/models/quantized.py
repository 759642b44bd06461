"""Weight-only int8 copies of the linears, for decode steps on the CPU.

A decode step multiplies one row (a few, when verifying drafted tokens) by every weight matrix: it is
bound by the bytes of weights read, not by arithmetic. bf16 weights cost 540 MB per token for the default
model; an int8 copy with one scale per output row halves that, and PyTorch's `_weight_int8pack_mm` reads
it at the memory's speed. For many rows (prefill, memory writing) the same kernel is compute-bound and
several times slower than a bf16 matmul, so those keep the bf16 weights: `Linear` picks per call.

int8 is lossy against the GGUF's own blocks (per-row scales instead of per-32 ones); its cost is measured
by `m3 bench qa` (README, "Speed").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DECODE_ROWS = 8  # calls with at most this many rows use the int8 copy (measured crossover on AVX2)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: w (N, K) -> (q (N, K) int8, scale (N,) in w's dtype)."""
    w32 = w.float()
    scale = (w32.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = (w32 / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.to(w.dtype)


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ dequantized(q, scale).T -> (..., N), in x's dtype (which must be scale's)."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    return torch._weight_int8pack_mm(rows, q, scale).view(*x.shape[:-1], q.shape[0])


def int8_supported(dtype: torch.dtype, device: torch.device) -> bool:
    """The int8 kernel is used on the CPU with half-precision weights; float32 runs (the exactness tests)
    and CUDA (where bf16 decode is far from the bottleneck) keep their weights as they are."""
    return device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)


class Linear(nn.Linear):
    """nn.Linear that may also hold an int8 copy of its weight (buffers `int8`, `int8_scale`, absent until
    `quantize()`), used for calls of at most DECODE_ROWS rows."""

    int8: torch.Tensor | None
    int8_scale: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("int8", None)
        self.register_buffer("int8_scale", None)

    def quantize(self) -> None:
        self.int8, self.int8_scale = quantize_rows(self.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8 is not None and x.numel() <= DECODE_ROWS * x.shape[-1]:
            y = int8_matmul(x, self.int8, self.int8_scale)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight, self.bias)
