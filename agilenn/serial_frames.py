"""Frames on a byte stream (a microcontroller's UART): what the firmware, its gateway and its feeder speak.

A frame is ``A5 5A | type (1) | body length (2, LE) | body | CRC-16 (2, LE)``; the CRC (CCITT-FALSE,
`binascii.crc_hqx` from 0xFFFF) covers type, length and body. A receiver resynchronises on noise: a bad
CRC, a length over its limit, or a frame left unfinished longer than its gap timeout is dropped and
counted, and the search for the next sync starts one byte after the dropped frame's. docs/serial.md
describes the frame types and their bodies.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field
from enum import IntEnum

SYNC = b"\xa5\x5a"
HEADER = struct.Struct("<2sBH")  # sync, type, body length
CRC_BYTES = 2
MAX_BODY_BYTES = 16384  # the largest body a receiver takes by default (a cluttered payload is at most 7,404 B)


class FrameType(IntEnum):
    INPUT = 1  # host feeder -> MCU: u32 index, raw image
    PAYLOAD = 2  # MCU -> gateway: u32 request id, 32-byte bundle digest, the payload in the bundle's codec
    LOGITS = 3  # gateway -> MCU: u32 request id, u8 status, then logits (status 0) or a message
    RESULT = 4  # MCU -> host: the answer (see `Result`)


class LogitsEncoding(IntEnum):
    F32 = 0  # float32 little-endian, one per class
    Q8 = 1  # float32 scale, then int8 per class: logit = q * scale (the wire's q8-v1 scheme)


def crc16(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(kind: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"a frame body holds at most 65535 bytes, got {len(body)}")
    head = HEADER.pack(SYNC, int(kind), len(body))
    return head + body + struct.pack("<H", crc16(head[2:] + body))


@dataclass
class FrameStats:
    frames: int = 0
    bad_crc: int = 0
    oversize: int = 0
    truncated: int = 0
    noise_bytes: int = 0  # bytes skipped while looking for a sync


@dataclass
class FrameDecoder:
    """Feed it bytes as they come; it returns the complete, checked frames as (type, body)."""

    max_body_bytes: int = MAX_BODY_BYTES
    stats: FrameStats = field(default_factory=FrameStats)
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def expire(self) -> None:
        """The stream went quiet with a frame unfinished: drop it (truncated) and rescan what follows its sync."""
        start = self._buffer.find(SYNC)
        if start >= 0 and len(self._buffer) - start > 0:
            self.stats.truncated += 1
            self.stats.noise_bytes += start
            del self._buffer[:start + 1]

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished frame are waiting."""
        return self._buffer.find(SYNC) >= 0

    def _next(self) -> tuple[int, bytes] | None:
        while True:
            start = self._buffer.find(SYNC)
            if start < 0:
                keep = 1 if self._buffer[-1:] == SYNC[:1] else 0  # a sync may straddle two reads
                self.stats.noise_bytes += len(self._buffer) - keep
                del self._buffer[:len(self._buffer) - keep]
                return None
            if start:
                self.stats.noise_bytes += start
                del self._buffer[:start]
            if len(self._buffer) < HEADER.size:
                return None
            _, kind, length = HEADER.unpack_from(self._buffer)
            if length > self.max_body_bytes:
                self.stats.oversize += 1
                del self._buffer[:1]
                continue
            end = HEADER.size + length + CRC_BYTES
            if len(self._buffer) < end:
                return None
            body = bytes(self._buffer[HEADER.size:HEADER.size + length])
            (crc,) = struct.unpack_from("<H", self._buffer, HEADER.size + length)
            if crc != crc16(bytes(self._buffer[2:HEADER.size]) + body):
                self.stats.bad_crc += 1
                del self._buffer[:1]
                continue
            del self._buffer[:end]
            self.stats.frames += 1
            return kind, body


# -- bodies --------------------------------------------------------------------------------------------

DIGEST_BYTES = 32  # the bundle hash's SHA-256 digest
MESSAGE_MAX_BYTES = 160  # an error message in a LOGITS or RESULT frame is cut to this many bytes


class FrameError(ValueError):
    """A frame body that does not hold what its type says."""


class Source(IntEnum):
    MIXED = 0
    LOCAL_FALLBACK = 1


class Reason(IntEnum):
    NONE = 0
    DEADLINE = 1  # no answer before the MCU's own deadline
    CLOUD = 2  # the gateway answered with an error; the message says which
    BAD_ANSWER = 3  # an answer the MCU could not use (wrong class count, unknown encoding)


def bundle_digest(bundle_hash: str) -> bytes:
    """'sha256:<64 hex>' -> the 32 raw bytes a PAYLOAD frame carries."""
    prefix, _, hexdigest = bundle_hash.partition(":")
    try:
        digest = bytes.fromhex(hexdigest)
    except ValueError:
        digest = b""
    if prefix != "sha256" or len(digest) != DIGEST_BYTES:
        raise FrameError(f"bundle hash {bundle_hash!r} is not sha256:<64 hex digits>")
    return digest


def pack_payload(request_id: int, digest: bytes, payload: bytes) -> bytes:
    return struct.pack("<I", request_id) + digest + payload


def unpack_payload(body: bytes) -> tuple[int, str, bytes]:
    """(request id, bundle hash, payload) of a PAYLOAD body."""
    if len(body) < 4 + DIGEST_BYTES + 1:
        raise FrameError(f"a PAYLOAD body holds at least {4 + DIGEST_BYTES + 1} bytes, got {len(body)}")
    (request_id,) = struct.unpack_from("<I", body)
    return request_id, "sha256:" + body[4:4 + DIGEST_BYTES].hex(), body[4 + DIGEST_BYTES:]


def pack_logits(request_id: int, logits, encoding: LogitsEncoding = LogitsEncoding.F32) -> bytes:
    import numpy as np

    values = np.asarray(logits, dtype=np.float32).reshape(-1)
    head = struct.pack("<IBB", request_id, 0, int(encoding))
    if encoding == LogitsEncoding.F32:
        return head + values.astype("<f4").tobytes()
    from agilenn.v1.tensors import quantize_q8  # the wire's q8-v1 scheme, on the UART too

    scale, quantized = quantize_q8(values)
    return head + scale.astype("<f4").tobytes() + quantized.tobytes()


def pack_logits_error(request_id: int, code: int, message: str) -> bytes:
    text = message.encode("utf-8", "replace")[:MESSAGE_MAX_BYTES]
    return struct.pack("<IB", request_id, code) + text


def unpack_logits(body: bytes):
    """(request id, status, logits float32 array or None, message) of a LOGITS body."""
    import numpy as np

    if len(body) < 5:
        raise FrameError(f"a LOGITS body holds at least 5 bytes, got {len(body)}")
    request_id, status = struct.unpack_from("<IB", body)
    if status:
        return request_id, status, None, body[5:].decode("utf-8", "replace")
    if len(body) < 6:
        raise FrameError("a LOGITS body with status 0 names its encoding")
    encoding, data = body[5], body[6:]
    if encoding == LogitsEncoding.F32 and len(data) % 4 == 0:
        return request_id, 0, np.frombuffer(data, "<f4").astype(np.float32), ""
    if encoding == LogitsEncoding.Q8 and len(data) >= 4:
        (scale,) = struct.unpack_from("<f", data)
        return request_id, 0, np.frombuffer(data[4:], np.int8).astype(np.float32) * np.float32(scale), ""
    raise FrameError(f"LOGITS encoding {encoding} with {len(data)} bytes of data is not known")


# index, label, local label, source, reason, instructions, waited us, dropped frames (bad CRC, oversize,
# truncated on the feeder line, then on the radio line), the cloud's status code, a spare byte, payload bytes
RESULT_HEAD = struct.Struct("<IBBBBII6BBxI")


@dataclass(frozen=True)
class Result:
    """What the MCU answered for one input (a RESULT frame)."""

    index: int
    label: int
    local_label: int
    source: Source
    reason: Reason
    instructions: int  # of the front, on the board's instruction clock
    waited_us: int  # from sending the payload to the answer or the deadline, board time
    dropped: tuple[int, ...]  # frames dropped so far, modulo 256: feeder bad CRC/oversize/truncated, radio the same
    status: int  # the cloud's status code, for Reason.CLOUD
    payload_bytes: int
    message: str  # the gateway's error text, for Reason.CLOUD

    @classmethod
    def unpack(cls, body: bytes) -> Result:
        if len(body) < RESULT_HEAD.size:
            raise FrameError(f"a RESULT body holds at least {RESULT_HEAD.size} bytes, got {len(body)}")
        fields = RESULT_HEAD.unpack_from(body)
        index, label, local, source, reason, instructions, waited = fields[:7]
        dropped, status, payload_bytes = fields[7:13], fields[13], fields[14]
        try:
            return cls(index, label, local, Source(source), Reason(reason), instructions, waited, tuple(dropped),
                       status, payload_bytes, body[RESULT_HEAD.size:].decode("utf-8", "replace"))
        except ValueError as exc:
            raise FrameError(f"a RESULT body with an unknown code: {exc}") from None
