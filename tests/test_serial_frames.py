"""Frames on a byte stream: round trips, and a receiver that resynchronises on noise."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agilenn.serial_frames import (
    SYNC,
    FrameDecoder,
    FrameError,
    FrameType,
    LogitsEncoding,
    Result,
    bundle_digest,
    encode_frame,
    pack_logits,
    pack_logits_error,
    pack_payload,
    unpack_logits,
    unpack_payload,
)

HASH = "sha256:" + "ab" * 32


def test_frames_round_trip_whatever_the_read_sizes():
    frames = [(FrameType.INPUT, bytes(range(200))), (FrameType.PAYLOAD, b""), (FrameType.LOGITS, b"\xa5\x5a" * 9)]
    stream = b"".join(encode_frame(kind, body) for kind, body in frames)
    for step in (1, 2, 7, len(stream)):
        decoder = FrameDecoder()
        got = [frame for i in range(0, len(stream), step) for frame in decoder.feed(stream[i:i + step])]
        assert got == frames
        assert decoder.stats.frames == 3 and decoder.stats.bad_crc == 0


@settings(max_examples=150, deadline=None)
@given(noise=st.binary(max_size=300), body=st.binary(max_size=100))
def test_a_good_frame_after_random_noise_is_served(noise, body):
    decoder = FrameDecoder(max_body_bytes=200)
    got = decoder.feed(noise + encode_frame(FrameType.PAYLOAD, body))
    decoder.expire()
    got += decoder.feed(encode_frame(FrameType.PAYLOAD, body))  # noise may hold an unfinished "frame"
    assert (FrameType.PAYLOAD, body) in got


def test_bad_crc_oversize_and_truncated_frames_are_dropped_and_counted():
    good = encode_frame(FrameType.LOGITS, b"answer")
    bad_crc = bytearray(encode_frame(FrameType.LOGITS, b"corrupt"))
    bad_crc[7] ^= 0xFF
    oversize = SYNC + struct.pack("<BH", FrameType.INPUT, 60000) + b"x" * 10
    truncated = encode_frame(FrameType.INPUT, b"y" * 50)[:20]
    decoder = FrameDecoder(max_body_bytes=1000)
    assert decoder.feed(bytes(bad_crc) + oversize + good) == [(FrameType.LOGITS, b"answer")]
    assert decoder.stats.bad_crc == 1 and decoder.stats.oversize == 1
    assert decoder.feed(truncated) == []
    assert decoder.pending
    decoder.expire()  # the line went quiet: the unfinished frame goes
    assert decoder.feed(good) == [(FrameType.LOGITS, b"answer")]
    assert decoder.stats.truncated == 1


def test_bodies_pack_and_unpack():
    digest = bundle_digest(HASH)
    assert unpack_payload(pack_payload(7, digest, b"\x01\x02")) == (7, HASH, b"\x01\x02")
    logits = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    request, status, values, message = unpack_logits(pack_logits(9, logits))
    assert (request, status, message) == (9, 0, "") and np.array_equal(values, logits)
    _, _, coarse, _ = unpack_logits(pack_logits(9, logits, LogitsEncoding.Q8))
    assert np.abs(coarse - logits).max() <= 3.0 / 127 / 2 + 1e-6
    assert unpack_logits(pack_logits_error(3, 14, "unavailable: no worker")) == (3, 14, None, "unavailable: no worker")
    with pytest.raises(FrameError, match="PAYLOAD body holds at least"):
        unpack_payload(b"\x00" * 10)
    with pytest.raises(FrameError, match="is not sha256"):
        bundle_digest("md5:00")
    with pytest.raises(FrameError, match="RESULT body holds at least"):
        Result.unpack(b"\x00" * 5)
