"""Weight-only int8 or int4 copies of the linears, for decode steps on the CPU.

A decode step multiplies one row (a few, when verifying drafted tokens) by every weight matrix: it is
bound by the bytes of weights read, not by arithmetic. bf16 weights cost 540 MB per token for the default
model; an int8 copy with one scale per output row halves that (`_weight_int8pack_mm`), an int4 copy with
a scale and zero point per 32 inputs (`_weight_int4pack_mm_for_cpu`, 5 bits a weight) takes it to 62 MB,
read about a third faster per byte on this CPU. For many rows (prefill, memory writing) these kernels are
compute-bound and several times slower than a bf16 matmul, so those keep the bf16 weights: `Linear` picks
per call. A CPU without bf16 arithmetic (no AVX512-BF16 or AMX: most laptops) has torch emulate a bf16
matmul; there many rows are multiplied in float32, the weights upcast per call (`NATIVE_BF16`).
The copies are lossy against the GGUF's own blocks (mostly 5-bit here); their cost is measured by
`m3 bench qa` (README, "Speed").

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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DECODE_ROWS = 8  # calls with at most this many rows use the decode copies (measured crossover on AVX2)
INT4_GROUP = 32  # weights per int4 scale and zero point (along the input dimension)
INT4_TILE = 16  # the int4 kernel's rows come in tiles of this many: copies are padded to it
INT8_BLOCK = 16  # the int8 kernel reads inputs 16 at a time: other widths crash it (measured: 40, 72)
INT4_TILES = 4  # `_convert_weight_to_int4pack_for_cpu`'s inner K tiles (an argument its CPU path ignores)
INT4_CHUNK = 16384  # rows quantized at a time (float32 copies of 40 MB, not 670 MB); the packing
# interleaves rows in blocks of up to 64 (by CPU: weight_cache keys entries by it), pieces are multiples
DECODE_BITS = {"int4": 4, "int8": 8, "bf16": 0}  # [engine] decode_weights -> the layers' copies (0: none)
INT4_GRIDS = (11, 12, 13, 14, 15, 16)  # steps a group's range may span, tried for the layers' int4 copies
RESCORE_Z = 8.0  # shortlist margin in standard deviations of the int4 logit error (largest seen: 4.3)
RESCORE_MAX = 4096  # more candidates than this: the full bf16 head is cheaper than reading their rows


def _native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles). Without it torch emulates
    bf16 matmuls: a 600-token prefill of the default model took 4.6 s against 2.0 s with its linears'
    weights upcast to float32 per call (Xeon with AVX512 but no AVX512-BF16; README, "Speed")."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, x86 only
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


NATIVE_BF16 = _native_bf16()


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


def quantize_int4(
    w: torch.Tensor, grids: Sequence[float] = (15,)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per INT4_GROUP inputs, for `int4_matmul`: w (N, K) in bf16 or fp16 ->
    (packed (P, K/2) uint8, scales_zeros (K/INT4_GROUP, P, 2) in w's dtype, error (N,) float32), where
    P = packed_rows(N) (whole kernel tiles; the extra rows are zero) and error[n] is the
    root mean square of row n's rounding error w[n] - dequantized[n] (scales and zeros rounded as the
    kernel reads them). Each group is rounded to grids spanning its range in each of `grids` steps, the
    scale and zero point refitted to each by least squares, and the grid with the least squared error
    kept (llama.cpp's `make_qkx2_quants` idea; INT4_GRIDS: 40 % less KL divergence from the bf16 model
    than min-max rounding on our decode prompts, and a GGUF's own 4-bit grid found again where its
    levels span 11 steps or more). Raises ValueError unless K is a multiple of INT4_GROUP."""
    N, K = w.shape
    if K % INT4_GROUP:
        raise ValueError(f"int4 needs inputs in groups of {INT4_GROUP}; this weight has {K}")
    w = F.pad(w, (0, 0, 0, packed_rows(N) - N))
    parts = [_int4_rows(w[i : i + INT4_CHUNK], grids) for i in range(0, len(w), INT4_CHUNK)]  # bounded
    packed, scales_zeros, error = zip(*parts, strict=True)
    return torch.cat(packed), torch.cat(scales_zeros, 1), torch.cat(error)[:N]


def _int4_rows(w: torch.Tensor, grids: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    N, K = w.shape
    x = w.float().view(N, K // INT4_GROUP, INT4_GROUP)
    low = x.amin(-1, keepdim=True)
    span = (x.amax(-1, keepdim=True) - low).clamp(min=torch.finfo(torch.float32).tiny)
    u = (x - low) / span  # in [0, 1]: the sums below cannot overflow, whatever the weights' magnitude
    best = None
    for steps in grids:
        q = (u * steps).round().clamp(0, 15)
        # least squares a * q + b ~ u over the group
        n, sq, su, squ = INT4_GROUP, q.sum(-1, keepdim=True), u.sum(-1, keepdim=True), (q * u).sum(-1, True)
        det = n * (q * q).sum(-1, keepdim=True) - sq * sq
        a = torch.where(det > 0, (n * squ - sq * su) / det.clamp(min=1e-30), 0.0)  # flat: scale 0
        b = (su - a * sq) / n
        a, b = a * span, b * span + low  # back to the weights' scale
        scale, zero = a.to(w.dtype), (b + 8 * a).to(w.dtype)  # the kernel computes (q - 8) * s + z
        s, z = scale.float(), zero.float()
        q = ((x - z) / torch.where(s == 0, 1.0, s) + 8).round().clamp(0, 15)  # the grid as rounded
        err = ((x - ((q - 8) * s + z)) / span).square().sum(-1, keepdim=True)  # in units of the range
        if best is None:
            best = [err, q, scale, zero]
        else:
            better = err < best[0]
            best = [torch.where(better, *pair) for pair in zip((err, q, scale, zero), best, strict=True)]
    err, q, scale, zero = best
    error = ((err.double() * span.double().square()).sum(dim=(1, 2)) / K).sqrt().float()
    packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).view(N, K), INT4_TILES)
    scales_zeros = torch.cat([scale, zero], -1).transpose(0, 1).contiguous()  # (K/G, N, 2)
    return packed, scales_zeros, error


def packed_rows(n: int) -> int:
    """Rows of the int4 copy of a weight with `n` rows (rounded up to whole INT4_TILEs)."""
    return n + -n % INT4_TILE


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
    deviations.
    The shortlist reads the vocabulary's logits three times (max, min, a comparison): a row's best lower
    bound is at least its top int4 logit's own lower bound, so only the rows within the largest margin of
    that can be candidates, and the exact bound and shortlist are computed among those few."""
    approx = int4_matmul(h, packed, scales_zeros)[:, : table.shape[0]].float()
    hf = h.float()
    spread = RESCORE_Z * hf.norm(dim=-1, keepdim=True)  # (R, 1): margin[j] = error[j] * spread
    top, best = approx.max(-1, keepdim=True)
    rounding = 2**-8 * torch.maximum(top, -approx.amin(-1, keepdim=True))  # bf16 output: half a step, doubled
    floor = top - error[best] * spread  # no higher than the best lower bound of all rows
    near = (approx >= floor - 2 * rounding - error.max() * spread).any(0).nonzero().squeeze(1)
    candidates = near  # none when the logits are not finite (a diverged model): the whole table decides
    if near.numel():
        sub, margin = approx[:, near], error[near] * spread
        lo = (sub - margin).amax(-1, keepdim=True) - rounding
        candidates = near[((sub + margin) >= lo - rounding).any(0)]
    if not candidates.numel() or candidates.numel() > RESCORE_MAX:
        # the whole table in bf16, then its near-best rows in float32
        approx = F.linear(h, table).float()
        near = approx >= approx.amax(-1, keepdim=True) - 2**-7 * approx.abs().amax(-1, keepdim=True)
        candidates = near.any(0).nonzero().squeeze(1)
    exact = rows(candidates) if rows is not None else table[candidates]
    approx[:, candidates] = hf @ exact.float().T
    return approx


def decode_copy(name: str) -> bool:
    """Whether a state name is one of a model's decode copies rather than one of its parameters."""
    return name.endswith((".int8", ".int8_scale", ".int4", ".int4_scales")) or name.startswith("head_int4")


def copies_supported(dtype: torch.dtype, device: torch.device) -> bool:
    """Decode copies are made on the CPU for half-precision weights; float32 runs (the exactness tests)
    and CUDA (where bf16 decode is far from the bottleneck) keep their weights as they are."""
    return device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)


def copy_kind(in_features: int, bits: int) -> str | None:
    """The decode copy a linear with this many inputs gets when `bits` are asked for: "int4" where the
    inputs come in whole INT4_GROUPs, else "int8" where they come in whole INT8_BLOCKs, else none."""
    if bits == 4 and in_features % INT4_GROUP == 0:
        return "int4"
    return "int8" if bits and in_features % INT8_BLOCK == 0 else None


class Linear(nn.Linear):
    """nn.Linear that may also hold a decode copy of its weight, used for calls of at most DECODE_ROWS
    rows: int8 (buffers `int8`, `int8_scale`) or int4 (`int4`, `int4_scales`), absent until `quantize`."""

    int8: torch.Tensor | None
    int8_scale: torch.Tensor | None
    int4: torch.Tensor | None
    int4_scales: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        for name in ("int8", "int8_scale", "int4", "int4_scales"):
            self.register_buffer(name, None)

    def quantize(self, bits: int) -> None:
        """Add the decode copy `copy_kind` names for `bits` (4 or 8), if any."""
        kind, weight = copy_kind(self.in_features, bits), self.weight.detach()
        if kind == "int4":
            self.int4, self.int4_scales, _ = quantize_int4(weight, INT4_GRIDS)
        elif kind == "int8":
            self.int8, self.int8_scale = quantize_rows(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() > DECODE_ROWS * x.shape[-1]:
            if x.dtype == torch.bfloat16 and x.device.type == "cpu" and not NATIVE_BF16:
                bias = None if self.bias is None else self.bias.float()
                return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)  # bf16 emulated
            return F.linear(x, self.weight, self.bias)
        if self.int4 is not None:
            y = int4_matmul(x, self.int4, self.int4_scales)[..., : self.out_features]
        elif self.int8 is not None:
            y = int8_matmul(x, self.int8, self.int8_scale)
        else:
            return F.linear(x, self.weight, self.bias)
        return y if self.bias is None else y + self.bias
