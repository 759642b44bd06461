"""A memory as bytes and back, without pickle: a fixed header, a JSON description, then raw tensor bytes.

Layout (little-endian): `MEMC` magic, u16 format version, u32 length of the JSON description; the JSON
(profile, reference length, memory layers; for k and v: bits, group, logical shape, and [dtype, shape] of
codes and scales; [dtype, shape] of the token index); then the raw bytes of k codes, k scales, v codes,
v scales and the index, in that order, unpadded. Decoding trusts nothing: every size, dtype and shape is
checked and anything inconsistent raises BankCorruptError. A flipped bit inside tensor bytes still
decodes: catching that is the job of the bank's per-record CRC.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import torch

from engine.errors import BankCorruptError
from engine.memory.profiles import Memory, MemoryProfile
from engine.memory.quantization import FLOAT_BITS, QTensor

MAGIC = b"MEMC"
VERSION = 1
_HEAD = struct.Struct("<4sHI")
DTYPES = {
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "float16": torch.float16,
    "float32": torch.float32,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def encode(memory: Memory) -> bytes:
    tensors = _tensors(memory)
    p = memory.profile
    meta = {
        "profile": {
            "name": p.name,
            "layers": p.layers if isinstance(p.layers, str) else list(p.layers),
            "tokens": p.tokens,
            "bits": p.bits,
            "positions": p.positions,
            "group": p.group,
        },
        "length": memory.length,
        "layers": list(memory.layers),
        "k": _describe(memory.k),
        "v": _describe(memory.v),
        "index": _spec(memory.index),
    }
    text = json.dumps(meta, separators=(",", ":")).encode()
    parts = [_HEAD.pack(MAGIC, VERSION, len(text)), text]
    parts += [t.detach().cpu().contiguous().numpy().tobytes() for t in tensors]
    return b"".join(parts)


def decode(buf: bytes | memoryview) -> Memory:
    """The memory in `buf`; its tensors own their bytes, so `buf` may be released right after."""
    try:
        return _decode(memoryview(buf))
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
        raise BankCorruptError(f"a memory record is unreadable: {e}") from e


def _decode(view: memoryview) -> Memory:
    if len(view) < _HEAD.size:
        raise BankCorruptError(f"a memory record of {len(view)} bytes is shorter than its header")
    magic, version, meta_len = _HEAD.unpack_from(view)
    if magic != MAGIC or version != VERSION:
        raise BankCorruptError(
            f"not a memory record of format {VERSION} (magic {magic!r}, version {version})"
        )
    end = _HEAD.size + meta_len
    meta = json.loads(bytes(view[_HEAD.size : end]))
    specs = [*_specs(meta["k"]), *_specs(meta["v"]), _dtype_shape(meta["index"])]
    tensors: list[torch.Tensor | None] = []
    for dtype, shape in specs:
        if dtype is None:
            tensors.append(None)
            continue
        n = math.prod(shape) * dtype.itemsize
        if end + n > len(view):
            raise BankCorruptError("a memory record ends before its tensors do")
        tensors.append(_tensor(view[end : end + n], dtype, shape))
        end += n
    if end != len(view):
        raise BankCorruptError(f"a memory record has {len(view) - end} bytes after its tensors")
    k_codes, k_scales, v_codes, v_scales, index = tensors
    k = _qtensor(meta["k"], k_codes, k_scales)
    v = _qtensor(meta["v"], v_codes, v_scales)
    layers = tuple(_int(i) for i in meta["layers"])
    if index.dtype != torch.int16 or tuple(index.shape) != k.shape[:-1] or k.shape[:-1] != v.shape[:-1]:
        raise BankCorruptError("a memory record's keys, values and token index do not fit together")
    if len(layers) != k.shape[0]:
        raise BankCorruptError("a memory record names a different number of layers than it holds")
    return Memory(_profile(meta["profile"]), _int(meta["length"]), layers, k, v, index)


def _tensors(memory: Memory) -> list[torch.Tensor]:
    return [t for q in (memory.k, memory.v) for t in (q.codes, q.scales) if t is not None] + [memory.index]


def _spec(t: torch.Tensor | None) -> list[Any] | None:
    if t is None:
        return None
    if t.dtype not in _NAMES:
        raise ValueError(f"a memory tensor of dtype {t.dtype} cannot be stored")
    return [_NAMES[t.dtype], list(t.shape)]


def _describe(q: QTensor) -> dict[str, Any]:
    return {
        "bits": q.bits,
        "group": q.group,
        "shape": list(q.shape),
        "codes": _spec(q.codes),
        "scales": _spec(q.scales),
    }


def _int(x: Any) -> int:
    if type(x) is not int or x < 0:
        raise ValueError(f"expected a count, not {x!r}")
    return x


def _dtype_shape(spec: Any) -> tuple[torch.dtype, tuple[int, ...]]:
    name, shape = spec
    return DTYPES[name], tuple(_int(n) for n in shape)


def _specs(q: dict[str, Any]) -> list[tuple[torch.dtype | None, tuple[int, ...]]]:
    scales = (None, ()) if q["scales"] is None else _dtype_shape(q["scales"])
    return [_dtype_shape(q["codes"]), scales]


def _profile(p: dict[str, Any]) -> MemoryProfile:
    layers = p["layers"] if isinstance(p["layers"], str) else tuple(_int(i) for i in p["layers"])
    tokens = _int(p["tokens"]) if type(p["tokens"]) is int else p["tokens"]
    if not (tokens is None or type(tokens) is int or type(tokens) is float):
        raise ValueError(f"tokens must be a count or a fraction, not {tokens!r}")
    if not (isinstance(p["name"], str) and isinstance(p["positions"], str)):
        raise ValueError("a profile's name and positions must be strings")
    return MemoryProfile(
        name=p["name"],
        layers=layers,
        tokens=tokens,
        bits=_int(p["bits"]),
        positions=p["positions"],
        group=_int(p["group"]),
    )


def _tensor(view: memoryview, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not view.nbytes:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(view), dtype=dtype).reshape(shape)


def _qtensor(q: dict[str, Any], codes: torch.Tensor, scales: torch.Tensor | None) -> QTensor:
    """Check that codes and scales are what quantize() makes for these bits, group and shape."""
    bits, group, shape = _int(q["bits"]), _int(q["group"]), tuple(_int(n) for n in q["shape"])
    if bits in FLOAT_BITS:
        ok = scales is None and codes.dtype == FLOAT_BITS[bits] and tuple(codes.shape) == shape
    else:
        D = shape[-1] if shape else 0
        packed = shape[:-1] + (D // 2,) if bits == 4 else shape
        ok = (
            bits in (4, 8)
            and group > 0
            and (bits == 8 or D % 2 == 0)
            and D % group == 0
            and codes.dtype == (torch.uint8 if bits == 4 else torch.int8)
            and tuple(codes.shape) == packed
            and scales is not None
            and scales.dtype == torch.float16
            and tuple(scales.shape) == shape[:-1] + (D // group,)
        )
    if not ok:
        raise BankCorruptError(f"a memory record's {bits}-bit codes or scales do not match shape {shape}")
    return QTensor(codes, scales, bits, group, shape)
