"""Payload codecs for the remote quantizer indices, shared by the device and the cloud.

A payload is the encoding of one sample's indices, shaped (C, H, W) with values below
`levels`. Three codecs exist so that the evaluation can compare them:

- ``range-v1``: constriction's range coder with one categorical table per channel, fitted
  on the training set and stored in the bundle manifest (the default);
- ``range-v2``: the same coder with one table per channel and position, for features whose
  statistics depend on where they lie (the border of a centred object is nearly always at the
  lowest level, its middle seldom);
- ``bitpack-v1``: fixed-width bit-packing, the floor a coder must beat;
- ``zlib-v1``: bit-packing followed by zlib, the generic lossless baseline.

Every decoder checks what it is given and raises `PayloadError` naming the problem, so a
service can answer INVALID_ARGUMENT with that text.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Protocol

import numpy as np

# Smallest probability a symbol gets in a fitted table, so that a symbol never seen while
# fitting still encodes (at a cost of about log2(1/floor) bits).
PROBABILITY_FLOOR = 1e-4


class PayloadError(ValueError):
    """A payload that cannot be decoded into indices of the expected shape."""


class Codec(Protocol):
    codec_id: str
    shape: tuple[int, ...]  # (C, H, W) of the indices
    levels: int

    def encode(self, indices: np.ndarray) -> bytes: ...

    def decode(self, payload: bytes) -> np.ndarray: ...

    def to_manifest(self) -> dict[str, Any]: ...


def _check_indices(indices: np.ndarray, shape: tuple[int, ...], levels: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.shape != tuple(shape):
        raise PayloadError(f"indices shaped {indices.shape}, expected {tuple(shape)}")
    if indices.size and (indices.min() < 0 or indices.max() >= levels):
        raise PayloadError(f"indices must lie in [0, {levels}), got range [{indices.min()}, {indices.max()}]")
    return indices


def _bits_for(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels)))


class BitPackCodec:
    """Each index in ceil(log2(levels)) bits, most significant bit first."""

    codec_id = "bitpack-v1"

    def __init__(self, shape: tuple[int, ...], levels: int) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.levels = int(levels)
        self.bits = _bits_for(self.levels)
        self.count = int(np.prod(self.shape))
        self._shifts = np.arange(self.bits - 1, -1, -1, dtype=np.uint8)

    @property
    def payload_bytes(self) -> int:
        return (self.count * self.bits + 7) // 8

    def encode(self, indices: np.ndarray) -> bytes:
        flat = _check_indices(indices, self.shape, self.levels).astype(np.uint8).reshape(-1)
        bits = (flat[:, None] >> self._shifts) & 1
        return np.packbits(bits.reshape(-1)).tobytes()

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) != self.payload_bytes:
            raise PayloadError(
                f"{self.codec_id} payload is {len(payload)} bytes, expected {self.payload_bytes} "
                f"for {self.count} indices of {self.bits} bits"
            )
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))[: self.count * self.bits]
        values = bits.reshape(self.count, self.bits) @ (1 << self._shifts.astype(np.int64))
        return _check_indices(values.astype(np.uint8).reshape(self.shape), self.shape, self.levels)

    def to_manifest(self) -> dict[str, Any]:
        return {"id": self.codec_id, "shape": list(self.shape), "levels": self.levels}


class ZlibCodec(BitPackCodec):
    """Bit-packing then zlib at its best level: what a generic lossless stage achieves."""

    codec_id = "zlib-v1"

    def encode(self, indices: np.ndarray) -> bytes:
        return zlib.compress(super().encode(indices), 9)

    def decode(self, payload: bytes) -> np.ndarray:
        # Inflate at most one byte more than a payload holds: a small bomb cannot cost more than that.
        inflater = zlib.decompressobj()
        try:
            packed = inflater.decompress(payload, self.payload_bytes + 1)
        except zlib.error as exc:
            raise PayloadError(f"{self.codec_id} payload does not inflate: {exc}") from None
        if len(packed) > self.payload_bytes or inflater.unconsumed_tail:
            raise PayloadError(f"{self.codec_id} payload inflates beyond the {self.payload_bytes} bytes of "
                               f"{self.count} indices")
        if not inflater.eof:
            raise PayloadError(f"{self.codec_id} payload does not inflate: incomplete or truncated stream")
        return super().decode(packed)


class RangeCodec:
    """constriction's range coder with fitted categorical tables: one per channel (``range-v1``,
    tables shaped (C, levels)) or one per channel and position (``range-v2``, (C, H, W, levels)).

    The tables are float64 and travel in the manifest exactly (JSON keeps float64), because
    encoder and decoder must quantize the very same numbers to agree on every bit.
    """

    PER_CHANNEL = "range-v1"
    PER_POSITION = "range-v2"

    def __init__(self, shape: tuple[int, ...], tables: np.ndarray) -> None:
        import constriction  # imported here so that a bit-packing user needs no coder

        self._constriction = constriction
        self.shape = tuple(int(d) for d in shape)
        self.tables = np.asarray(tables, dtype=np.float64)
        channels, height, width = self.shape
        if self.tables.ndim == 2 and self.tables.shape[0] == channels:
            self.codec_id, self.symbols_per_table = self.PER_CHANNEL, height * width
        elif self.tables.ndim == 4 and self.tables.shape[:3] == self.shape:
            self.codec_id, self.symbols_per_table = self.PER_POSITION, 1
        else:
            raise ValueError(f"tables shaped {self.tables.shape}, expected ({channels}, levels) for "
                             f"{self.PER_CHANNEL} or ({channels}, {height}, {width}, levels) for {self.PER_POSITION}")
        self.levels = int(self.tables.shape[-1])
        # One row per table, in the coding order (channel-major, then row, then column)
        self.flat_tables = self.tables.reshape(-1, self.levels)
        if np.any(self.flat_tables <= 0) or not np.allclose(self.flat_tables.sum(axis=1), 1.0):
            raise ValueError("every table must be strictly positive and sum to 1")
        # One row per symbol, so encode and decode are single vectorised calls.
        self._per_symbol = np.ascontiguousarray(np.repeat(self.flat_tables, self.symbols_per_table, axis=0))
        self._family = constriction.stream.model.Categorical(perfect=False)

    @classmethod
    def fit(cls, indices: np.ndarray, levels: int, floor: float = PROBABILITY_FLOOR,
            per_position: bool = False) -> RangeCodec:
        """Fit tables on indices shaped (N, C, H, W): per channel, or per channel and position."""
        indices = np.asarray(indices)
        if indices.ndim != 4:
            raise ValueError(f"fit needs indices shaped (N, C, H, W), got {indices.shape}")
        counts = np.stack([(indices == level).sum(axis=0) for level in range(levels)], axis=-1)  # (C, H, W, L)
        if not per_position:
            counts = counts.sum(axis=(1, 2))
        tables = counts.astype(np.float64) / np.maximum(counts.sum(axis=-1, keepdims=True), 1.0)
        tables = np.maximum(tables, floor)
        tables /= tables.sum(axis=-1, keepdims=True)
        return cls(tuple(indices.shape[1:]), tables)

    def encode(self, indices: np.ndarray) -> bytes:
        symbols = _check_indices(indices, self.shape, self.levels).astype(np.int32).reshape(-1)
        encoder = self._constriction.stream.queue.RangeEncoder()
        encoder.encode(symbols, self._family, self._per_symbol)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) % 4:
            raise PayloadError(f"{self.codec_id} payload is {len(payload)} bytes, not a whole number of 32-bit words")
        if not payload:
            raise PayloadError(f"{self.codec_id} payload is empty")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        try:
            decoder = self._constriction.stream.queue.RangeDecoder(words)
            symbols = decoder.decode(self._family, self._per_symbol)
        except Exception as exc:  # noqa: BLE001 - constriction raises plain errors on corrupt streams
            raise PayloadError(f"{self.codec_id} payload does not decode: {exc}") from None
        return _check_indices(symbols.astype(np.uint8).reshape(self.shape), self.shape, self.levels)

    def draw(self, rng: np.random.Generator, samples: int) -> np.ndarray:
        """Indices shaped (samples, C, H, W), each symbol drawn from its own table: payloads like real ones."""
        cumulative = self._per_symbol.cumsum(axis=1)[:, :-1]
        flat = (rng.random((samples, len(cumulative), 1)) > cumulative).sum(axis=-1)
        return flat.reshape(samples, *self.shape).astype(np.uint8)

    def expected_bits(self, indices: np.ndarray) -> float:
        """Information content of one sample under the tables (the coder's target size)."""
        flat = np.asarray(indices).reshape(-1).astype(np.int64)
        return float(-np.log2(self._per_symbol[np.arange(flat.size), flat]).sum())

    def to_manifest(self) -> dict[str, Any]:
        return {"id": self.codec_id, "shape": list(self.shape), "levels": self.levels,
                "tables": self.tables.tolist()}


CODEC_IDS = (RangeCodec.PER_CHANNEL, RangeCodec.PER_POSITION, BitPackCodec.codec_id, ZlibCodec.codec_id)


def codec_from_manifest(entry: dict[str, Any]) -> Codec:
    """Build the codec a manifest's `codec` entry describes."""
    codec_id = entry.get("id")
    shape = tuple(entry["shape"])
    if codec_id in (RangeCodec.PER_CHANNEL, RangeCodec.PER_POSITION):
        codec = RangeCodec(shape, np.asarray(entry["tables"], dtype=np.float64))
        if codec.codec_id != codec_id:
            raise PayloadError(f"codec {codec_id!r} with tables shaped {codec.tables.shape}, which are "
                               f"{codec.codec_id}'s")
        return codec
    if codec_id == BitPackCodec.codec_id:
        return BitPackCodec(shape, entry["levels"])
    if codec_id == ZlibCodec.codec_id:
        return ZlibCodec(shape, entry["levels"])
    raise PayloadError(f"unknown codec {codec_id!r}; known codecs: {', '.join(CODEC_IDS)}")
