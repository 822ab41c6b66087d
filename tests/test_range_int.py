"""The integer range coder (what the firmware runs) writes the very bytes of the range-v1 and range-v2 codecs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agilenn import range_int
from agilenn.bundle import Bundle
from agilenn.codec import RangeCodec


def _codec_and_tables(seed: int, channels: int, levels: int, side: int, per_position: bool
                      ) -> tuple[RangeCodec, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.dirichlet(np.full(levels, 0.3), size=(channels, side, side) if per_position else channels)
    fitted = np.maximum(raw, 1e-4)
    fitted /= fitted.sum(axis=-1, keepdims=True)
    codec = RangeCodec((channels, side, side), fitted)
    return codec, range_int.quantize_tables(codec.flat_tables)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 6), levels=st.integers(2, 16),
       side=st.integers(1, 9), mode=st.sampled_from(["table", "uniform", "rarest", "zeros"]),
       per_position=st.booleans())
def test_integer_encoder_equals_the_range_codecs(seed, channels, levels, side, mode, per_position):
    codec, quantized = _codec_and_tables(seed, channels, levels, side, per_position)
    assert codec.codec_id == ("range-v2" if per_position else "range-v1")
    rng = np.random.default_rng(seed + 1)
    shape = (channels, side, side)
    per_symbol = np.repeat(codec.flat_tables, codec.symbols_per_table, axis=0)
    if mode == "table":
        indices = codec.draw(rng, 1)[0]
    elif mode == "uniform":
        indices = rng.integers(0, levels, size=shape)
    elif mode == "rarest":
        indices = per_symbol.argmin(axis=1).reshape(shape)
    else:
        indices = np.zeros(shape, dtype=np.int64)
    expected = codec.encode(indices)
    assert range_int.encode(indices.reshape(-1), quantized, codec.symbols_per_table) == expected
    decoded = range_int.decode(expected, quantized, codec.symbols_per_table)
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
    codec = bundle.codec
    quantized = range_int.quantize_tables(codec.flat_tables)
    for indices in codec.draw(np.random.default_rng(1), 50):
        assert range_int.encode(indices.reshape(-1), quantized, codec.symbols_per_table) == codec.encode(indices)
