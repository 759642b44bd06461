"""Round trips of group-wise quantization with error bounds (property tests)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.memory.quantization import dequantize, quantize

GROUP = 32


def _tensors(max_groups: int = 4):
    shape = st.tuples(
        st.integers(1, 3), st.integers(1, 5), st.integers(1, max_groups).map(lambda g: g * GROUP)
    )
    values = st.floats(-1e3, 1e3, allow_nan=False, width=32)
    return shape.flatmap(lambda s: arrays(np.float32, s, elements=values)).map(torch.from_numpy)


@settings(max_examples=200, deadline=None)
@given(_tensors(), st.sampled_from([8, 4]))
def test_integer_round_trip_error_is_within_half_a_step(x, bits):
    q = quantize(x, bits, GROUP)
    y = dequantize(q)
    assert y.shape == x.shape
    qmax = 2 ** (bits - 1) - 1
    groups = x.reshape(*x.shape[:-1], -1, GROUP)
    exact = groups.abs().amax(-1, keepdim=True) / qmax
    stored = q.scales.float().unsqueeze(-1)
    # the stored step is the exact one rounded up to fp16 (relative 2^-10, or one subnormal spacing)
    assert (stored >= exact).all()
    assert (stored <= exact * (1 + 2**-10) + 2**-24).all()
    err = (y - x).reshape(groups.shape).abs()
    # at most half a step: nothing clipped (plus float32's smallest normal, for steps that underflow)
    assert (err <= stored * 0.5 * (1 + 1e-6) + torch.finfo(torch.float32).tiny).all()


@settings(max_examples=100, deadline=None)
@given(_tensors(), st.sampled_from([8, 4]))
def test_integer_codes_are_compact(x, bits):
    q = quantize(x, bits, GROUP)
    per_value = 1 if bits == 8 else 0.5
    assert q.codes.numel() * q.codes.element_size() == int(x.numel() * per_value)
    assert q.scales.dtype == torch.float16 and q.scales.numel() == x.numel() // GROUP


@settings(max_examples=100, deadline=None)
@given(_tensors())
def test_float_bits(x):
    assert torch.equal(dequantize(quantize(x, 32)), x)
    half = dequantize(quantize(x, 16))
    assert torch.allclose(half, x, rtol=2**-10, atol=1e-4)


def test_zero_groups_stay_zero():
    x = torch.zeros(2, 64)
    x[1, 40] = 3.0
    for bits in (8, 4):
        y = dequantize(quantize(x, bits, GROUP))
        assert torch.equal(y[0], x[0]) and abs(float(y[1, 40]) - 3.0) < 3e-3 and y[1, :32].abs().sum() == 0
