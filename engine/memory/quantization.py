"""Group-wise symmetric quantization of memory keys and values along the head dimension.

Each group of `group` values shares one fp16 scale (its absolute maximum over the largest code, rounded
up), so an outlier only costs precision inside its own group and no value is clipped. int4 codes are
packed two to a byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FLOAT_BITS = {32: torch.float32, 16: torch.float16}
INT_BITS = (8, 4)


@dataclass
class QTensor:
    """A quantized tensor: codes (int8, packed uint8 or float) and, for integer codes, fp16 scales."""

    codes: torch.Tensor
    scales: torch.Tensor | None
    bits: int
    group: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = self.codes.numel() * self.codes.element_size()
        return n + (0 if self.scales is None else self.scales.numel() * self.scales.element_size())

    def to(self, device: torch.device | str) -> QTensor:
        scales = None if self.scales is None else self.scales.to(device)
        return QTensor(self.codes.to(device), scales, self.bits, self.group, self.shape)


def quantize(x: torch.Tensor, bits: int, group: int = 32) -> QTensor:
    shape = tuple(x.shape)
    if bits in FLOAT_BITS:
        return QTensor(x.to(FLOAT_BITS[bits]).contiguous(), None, bits, group, shape)
    if bits not in INT_BITS:
        raise ValueError(f"bits must be one of 32, 16, 8 or 4, not {bits}")
    D = shape[-1]
    if D % group:
        raise ValueError(f"the last dimension {D} is not a multiple of the group size {group}")
    qmax = 2 ** (bits - 1) - 1
    g = x.float().reshape(*shape[:-1], D // group, group)
    exact = g.abs().amax(-1, keepdim=True) / qmax
    scale = exact.to(torch.float16)
    short = scale.float() < exact  # round the scale up, so that no code is ever clipped
    scale = torch.where(short, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale).float()
    codes = torch.clamp(torch.round(g / safe), -qmax, qmax).to(torch.int8).reshape(shape)
    if bits == 4:
        nib = (codes + 8).to(torch.uint8).reshape(*shape[:-1], D // 2, 2)
        codes = nib[..., 0] | (nib[..., 1] << 4)
    return QTensor(codes.contiguous(), scale.squeeze(-1).contiguous(), bits, group, shape)


def dequantize(q: QTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if q.scales is None:
        return q.codes.to(dtype)
    codes = q.codes
    if q.bits == 4:
        low = (codes & 0x0F).to(torch.int8) - 8
        high = (codes >> 4).to(torch.int8) - 8
        codes = torch.stack([low, high], dim=-1).reshape(q.shape)
    D = q.shape[-1]
    g = codes.float().reshape(*q.shape[:-1], D // q.group, q.group) * q.scales.float().unsqueeze(-1)
    return g.reshape(q.shape).to(dtype)
