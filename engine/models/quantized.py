"""Weight-only int8 copies of the linears, for decode steps on the CPU.

A decode step multiplies one row (a few, when verifying drafted tokens) by every weight matrix: it is
bound by the bytes of weights read, not by arithmetic. bf16 weights cost 540 MB per token for the default
model; an int8 copy with one scale per output row halves that, and PyTorch's `_weight_int8pack_mm` reads
it at the memory's speed. For many rows (prefill, memory writing) the same kernel is compute-bound and
several times slower than a bf16 matmul, so those keep the bf16 weights: `Linear` picks per call.

int8 is lossy against the GGUF's own blocks (per-row scales instead of per-32 ones); its cost is measured
by `m3 bench qa` (README, "Speed").

The output head (262,144 x 640 for the default model: 170M of its 270M parameters) is read once per
decode step; its int8 copy alone was 40% of a step. It gets an int4 copy instead (`_weight_int4pack_mm`,
half the bytes) that only *shortlists*: the tokens whose int4 logit is within RESCORE_Z standard
deviations of int4 rounding error of the best are rescored in float32 from the bf16 table (a few dozen
of 262,144), the rest keep their int4 values. Greedy decoding picks the best token of the float32
product with the bf16 table, except with the probability of an 8-sigma rounding error (`head_logits`).
(The bf16 head itself rounds its logits to bf16, 0.125 apart near 20, so at a near-tie it may pick the
other token.) Sampling sees int4 values outside the shortlist.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

DECODE_ROWS = 8  # calls with at most this many rows use the decode copies (measured crossover on AVX2)
INT4_GROUP = 32  # weights per int4 scale and zero point (along the input dimension)
INT4_TILES = 4  # `_convert_weight_to_int4pack_for_cpu`'s inner K tiles (an argument its CPU path ignores)
INT4_CHUNK = 16384  # rows quantized at a time (float32 copies of 40 MB, not 670 MB); the packing
# interleaves rows in blocks of up to 64 (by CPU: weight_cache keys entries by it), pieces are multiples
RESCORE_Z = 8.0  # shortlist margin in standard deviations of the int4 logit error (largest seen: 4.3)
RESCORE_MAX = 4096  # more candidates than this: the full bf16 head is cheaper than reading their rows


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


def quantize_int4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per INT4_GROUP inputs, for `int4_matmul`: w (N, K) in bf16 or fp16 ->
    (packed (P, K/2) uint8, scales_zeros (K/INT4_GROUP, P, 2) in w's dtype, error (N,) float32), where
    P is N rounded up to a multiple of 16 (the kernel's tile; the extra rows are zero) and error[n] is the
    root mean square of row n's rounding error w[n] - dequantized[n] (scales and zeros rounded as the
    kernel reads them). Raises ValueError unless K is a multiple of INT4_GROUP."""
    N, K = w.shape
    if K % INT4_GROUP:
        raise ValueError(f"int4 needs inputs in groups of {INT4_GROUP}; this weight has {K}")
    w = F.pad(w, (0, 0, 0, -N % 16))
    parts = [_int4_rows(w[i : i + INT4_CHUNK]) for i in range(0, len(w), INT4_CHUNK)]  # bounded copies
    packed, scales_zeros, error = zip(*parts, strict=True)
    return torch.cat(packed), torch.cat(scales_zeros, 1), torch.cat(error)[:N]


def _int4_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    N, K = w.shape
    w32 = w.float().view(N, K // INT4_GROUP, INT4_GROUP)
    low, high = w32.amin(-1, keepdim=True), w32.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = ((w32 - low) / scale).round().clamp(0, 15)
    scale, zero = scale.to(w.dtype), (low + 8 * scale).to(w.dtype)  # the kernel computes (q - 8) * s + z
    error = (w32 - ((q - 8) * scale.float() + zero.float())).square().mean(dim=(1, 2)).sqrt()
    packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).view(N, K), INT4_TILES)
    scales_zeros = torch.cat([scale, zero], -1).transpose(0, 1).contiguous()  # (K/G, N, 2)
    return packed, scales_zeros, error


def int4_matmul(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ dequantized(packed, scales_zeros).T -> (..., P) in x's dtype (scales_zeros's), P the
    packed rows (`quantize_int4`)."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch._weight_int4pack_mm_for_cpu(rows, packed, INT4_GROUP, scales_zeros)
    return y.view(*x.shape[:-1], packed.shape[0])


def head_logits(
    h: torch.Tensor,
    table: torch.Tensor,
    packed: torch.Tensor,
    scales_zeros: torch.Tensor,
    error: torch.Tensor,
    rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (R, N) float32 of a few hidden states h (R, K) against the head `table` (N, K), through its
    int4 copy (`quantize_int4`), with every token that may be a row's best rescored in float32.

    The int4 logit a[j] differs from h . table[j] by h . d[j], d[j] the row's rounding error: a sum of K
    small terms, with standard deviation |h|_2 error[j] if d[j]'s entries are independent of h (plus the
    kernel's bf16 rounding of a[j], at most 2^-8 max|a|, one bound for all). Tokens within RESCORE_Z of
    those deviations of a row's best lower bound are rescored (their rows read by `rows` if given, else
    indexed from `table`); with more than RESCORE_MAX of them the whole bf16 table is used and the
    tokens its bf16 rounding cannot tell from its best are rescored. A statistical bound, not a worst
    case: the error is independent of h only within each group of INT4_GROUP weights, and a hidden
    state whose energy sits in the groups where a row's error is largest could exceed it; the rigorous
    bound (G max_g |h_g|^2) shortlisted 45,000 tokens at the median, and exact per-group variances (an
    (N, K/G) table) cost 2-7 ms per step.
    Measured on 200 decode steps of varied prompts (52M token logits): the largest error was 4.3
    deviations."""
    approx = int4_matmul(h, packed, scales_zeros)[:, : table.shape[0]].float()
    hf = h.float()
    margin = error * (RESCORE_Z * hf.norm(dim=-1, keepdim=True))
    rounding = 2**-8 * approx.abs().amax(-1, keepdim=True)  # bf16 output: at most half a step, doubled
    lo = (approx - margin).amax(-1, keepdim=True) - rounding
    candidates = ((approx + margin) >= lo - rounding).any(0).nonzero().squeeze(1)
    if candidates.numel() > RESCORE_MAX:  # the whole table in bf16, then its near-best rows in float32
        approx = F.linear(h, table).float()
        near = approx >= approx.amax(-1, keepdim=True) - 2**-7 * approx.abs().amax(-1, keepdim=True)
        candidates = near.any(0).nonzero().squeeze(1)
    exact = rows(candidates) if rows is not None else table[candidates]
    approx[:, candidates] = hf @ exact.float().T
    return approx


def decode_copy(name: str) -> bool:
    """Whether a state name is one of a model's decode copies rather than one of its parameters."""
    return name.endswith((".int8", ".int8_scale")) or name.startswith("head_int4")


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
