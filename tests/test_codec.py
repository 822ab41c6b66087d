import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agilenn.codec import BitPackCodec, PayloadError, RangeCodec, ZlibCodec, codec_from_manifest

SHAPE = (3, 2, 4)
TABLES = np.array([[0.7, 0.2, 0.05, 0.05], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7]])
SAMPLE = np.arange(24, dtype=np.uint8).reshape(SHAPE) % 4
# range-v2: each channel's table, sharpened towards the sample's own symbol at every second position
POSITION_TABLES = np.broadcast_to(TABLES[:, None, None, :], (*SHAPE, 4)).copy()
POSITION_TABLES[:, :, ::2] = 0.01
np.put_along_axis(POSITION_TABLES[:, :, ::2], SAMPLE[:, :, ::2, None].astype(np.int64), 0.97, axis=-1)

# Wire-format pins: a change in the coder, its tables or the byte order breaks these on purpose.
GOLDEN = {
    "range-v1": "2b42749fc73c90a9",
    "range-v2": "a40fabde",
    "bitpack-v1": "1b1b1b1b1b1b",
}


def codecs():
    return [RangeCodec(SHAPE, TABLES), RangeCodec(SHAPE, POSITION_TABLES), BitPackCodec(SHAPE, 4), ZlibCodec(SHAPE, 4)]


@pytest.mark.parametrize("codec", codecs(), ids=lambda c: c.codec_id)
@settings(max_examples=50, deadline=None)
@given(indices=arrays(np.uint8, SHAPE, elements=st.integers(0, 3)))
def test_round_trip(codec, indices):
    assert np.array_equal(codec.decode(codec.encode(indices)), indices)


@pytest.mark.parametrize("codec_id", sorted(GOLDEN))
def test_golden_bytes(codec_id):
    codec = {c.codec_id: c for c in codecs()}[codec_id]
    assert codec.encode(SAMPLE).hex() == GOLDEN[codec_id]


@pytest.mark.parametrize("codec", codecs(), ids=lambda c: c.codec_id)
def test_manifest_round_trip(codec):
    again = codec_from_manifest(codec.to_manifest())
    assert again.encode(SAMPLE) == codec.encode(SAMPLE)


def test_fitted_tables_make_skewed_indices_cheaper_than_bit_packing():
    rng = np.random.default_rng(0)
    indices = rng.choice(4, size=(500, *SHAPE), p=[0.85, 0.1, 0.04, 0.01]).astype(np.uint8)
    codec = RangeCodec.fit(indices, levels=4)
    sizes = [len(codec.encode(i)) for i in indices[:100]]
    assert np.median(sizes) < BitPackCodec(SHAPE, 4).payload_bytes
    assert np.all(codec.tables > 0)  # a symbol never seen still encodes


def test_tables_per_position_make_position_dependent_indices_cheaper():
    # a centred object: the border is nearly always level 0, the middle seldom
    rng = np.random.default_rng(0)
    border = np.ones((6, 6), dtype=bool)
    border[1:-1, 1:-1] = False
    p = np.where(border[..., None], [0.97, 0.02, 0.01], [0.2, 0.4, 0.4])
    indices = (rng.random((600, 2, 6, 6, 1)) > p.cumsum(-1)[..., :-1]).sum(-1).astype(np.uint8)
    per_channel = RangeCodec.fit(indices[:500], levels=3)
    per_position = RangeCodec.fit(indices[:500], levels=3, per_position=True)
    assert (per_channel.codec_id, per_position.codec_id) == ("range-v1", "range-v2")
    assert per_position.tables.shape == (2, 6, 6, 3)
    bits = [sum(codec.expected_bits(i) for i in indices[500:]) for codec in (per_channel, per_position)]
    assert bits[1] < 0.85 * bits[0]
    for sample in indices[500:520]:
        assert np.array_equal(per_position.decode(per_position.encode(sample)), sample)


def test_a_manifest_whose_tables_do_not_match_its_codec_is_refused():
    entry = RangeCodec(SHAPE, TABLES).to_manifest()
    with pytest.raises(PayloadError, match="'range-v2' with tables shaped \\(3, 4\\)"):
        codec_from_manifest({**entry, "id": "range-v2"})
    with pytest.raises(ValueError, match=r"expected \(3, levels\) for range-v1 or \(3, 2, 4, levels\)"):
        RangeCodec(SHAPE, np.full((2, 4), 0.25))


def test_range_codec_encodes_a_symbol_it_never_saw_while_fitting():
    codec = RangeCodec.fit(np.zeros((10, *SHAPE), dtype=np.uint8), levels=4)
    unseen = np.full(SHAPE, 3, dtype=np.uint8)
    assert np.array_equal(codec.decode(codec.encode(unseen)), unseen)


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"),
    (b"\x00\x01\x02", "32-bit words"),
])
def test_range_codec_names_bad_payloads(payload, message):
    with pytest.raises(PayloadError, match=message):
        RangeCodec(SHAPE, TABLES).decode(payload)


def test_bitpack_names_a_payload_of_the_wrong_length():
    with pytest.raises(PayloadError, match="5 bytes, expected 6"):
        BitPackCodec(SHAPE, 4).decode(b"\x00" * 5)


def test_zlib_names_a_payload_that_does_not_inflate():
    with pytest.raises(PayloadError, match="does not inflate"):
        ZlibCodec(SHAPE, 4).decode(b"not zlib")


def test_encode_rejects_wrong_shapes_and_levels():
    codec = RangeCodec(SHAPE, TABLES)
    with pytest.raises(PayloadError, match=r"shaped \(3, 2, 3\)"):
        codec.encode(np.zeros((3, 2, 3), dtype=np.uint8))
    with pytest.raises(PayloadError, match=r"\[0, 4\)"):
        codec.encode(np.full(SHAPE, 7, dtype=np.uint8))


def test_unknown_codec_lists_the_known_ones():
    with pytest.raises(PayloadError, match="unknown codec 'lzw'.*range-v1"):
        codec_from_manifest({"id": "lzw", "shape": [1, 1, 1]})


def test_range_tables_are_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        RangeCodec(SHAPE, np.full((3, 4), 0.3))
