"""The integer range coder (what the firmware runs) writes the very bytes of the range-v1 codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agilenn import range_int
from agilenn.bundle import Bundle
from agilenn.codec import RangeCodec


def _codec_and_tables(seed: int, channels: int, levels: int, side: int) -> tuple[RangeCodec, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.dirichlet(np.full(levels, 0.3), size=channels)
    fitted = np.maximum(raw, 1e-4)
    fitted /= fitted.sum(axis=1, keepdims=True)
    codec = RangeCodec((channels, side, side), fitted)
    return codec, range_int.quantize_tables(codec.tables)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 6), levels=st.integers(2, 16),
       side=st.integers(1, 9), mode=st.sampled_from(["table", "uniform", "rarest", "zeros"]))
def test_integer_encoder_equals_range_v1(seed, channels, levels, side, mode):
    codec, quantized = _codec_and_tables(seed, channels, levels, side)
    rng = np.random.default_rng(seed + 1)
    shape = (channels, side, side)
    if mode == "table":
        indices = np.stack([rng.choice(levels, size=(side, side), p=codec.tables[c]) for c in range(channels)])
    elif mode == "uniform":
        indices = rng.integers(0, levels, size=shape)
    elif mode == "rarest":
        indices = np.broadcast_to(codec.tables.argmin(axis=1)[:, None, None], shape).copy()
    else:
        indices = np.zeros(shape, dtype=np.int64)
    expected = codec.encode(indices)
    assert range_int.encode(indices.reshape(-1), quantized, side * side) == expected
    decoded = range_int.decode(expected, quantized, side * side)
    assert np.array_equal(decoded.reshape(shape), indices)


def test_quantized_tables_keep_every_symbol_and_sum_to_the_precision():
    rng = np.random.default_rng(0)
    for levels in (2, 3, 4, 16):
        table = np.maximum(rng.dirichlet(np.full(levels, 0.1)), 1e-4)
        table /= table.sum()
        quantized = range_int.quantize_table(table)
        assert quantized.sum() == range_int.TOTAL
        assert quantized.min() >= 1


@pytest.mark.parametrize("name", ["fashion-mnist", "cluttered-fashion-mnist"])
def test_committed_bundles_tables_encode_identically(name):
    bundle = Bundle(f"bundles/{name}", verify=False)
    quantized = range_int.quantize_tables(bundle.codec.tables)
    channels, height, width = bundle.codec.shape
    rng = np.random.default_rng(1)
    for _ in range(50):
        indices = np.stack([rng.choice(bundle.codec.levels, size=(height, width), p=bundle.codec.tables[c])
                            for c in range(channels)])
        assert range_int.encode(indices.reshape(-1), quantized, height * width) == bundle.codec.encode(indices)
