"""Synthetic memories for the bank tests (random tensors, no model, so a child process starts fast), and
that child: `python tests/bank_synthetic.py FOLDER START` puts memories in a loop, dropping and compacting
now and then, until it is killed.

The child prints `put I` once a put returned, `drop I J ...` before a drop and `dropped` after it, so the
parent knows what must have survived a kill and what must not have."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.memory.bank import MemoryBank
from engine.memory.profiles import PROFILES, Memory
from engine.memory.quantization import QTensor

SEGMENT_BYTES = 600_000  # a few records per segment, so rolling and multi-segment compaction happen


def key(i: int) -> str:
    return hashlib.sha256(f"chunk {i}".encode()).hexdigest()


def synthetic(i: int, heads: int = 2, dim: int = 128) -> Memory:
    """A dense int8 memory of random codes and scales, the same for the same `i` (50 to 100 KB)."""
    g = torch.Generator().manual_seed(i)
    profile = PROFILES["dense"]
    layers = tuple(range(6))
    kept = 16 + i % 32
    shape = (len(layers), heads, kept, dim)

    def q() -> QTensor:
        codes = torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)
        scales = torch.rand(shape[:-1] + (dim // profile.group,), generator=g).half()
        return QTensor(codes, scales, profile.bits, profile.group, shape)

    index = torch.randint(0, kept, shape[:-1], generator=g, dtype=torch.int16)
    return Memory(profile=profile, length=kept, layers=layers, k=q(), v=q(), index=index)


def same_q(a: QTensor, b: QTensor) -> bool:
    scales = (
        a.scales is None
        and b.scales is None
        or (a.scales is not None and b.scales is not None and _identical(a.scales, b.scales))
    )
    return (
        (a.bits, a.group, a.shape) == (b.bits, b.group, b.shape) and _identical(a.codes, b.codes) and scales
    )


def same(a: Memory, b: Memory) -> bool:
    """Exactly equal: profile, sizes, and every stored byte."""
    return (
        (a.profile, a.length, a.layers) == (b.profile, b.length, b.layers)
        and same_q(a.k, b.k)
        and same_q(a.v, b.v)
        and _identical(a.index, b.index)
    )


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


def say(*words: object) -> None:
    """One line in one write(2) call: a kill can cut it only before or after, never inside."""
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def append_forever(bank: MemoryBank, start: int) -> None:
    for i in range(start, sys.maxsize):
        if i % 9 == 8:
            victims = [j for j in range(max(0, i - 20), i) if j % 4 == 1]
            say("drop", *victims)
            bank.drop([key(j) for j in victims])
            say("dropped")
        if i % 25 == 24:
            bank.compact()
        bank.put(key(i), synthetic(i))
        say("put", i)


if __name__ == "__main__":
    bank = MemoryBank(Path(sys.argv[1]), segment_bytes=SEGMENT_BYTES)
    say("ready")
    append_forever(bank, int(sys.argv[2]))
