"""Arrays in and out of `agilenn.v1.Tensor` messages (bytes + shape + codec id).

Needs numpy and the generated messages only, so both the device and the cloud import it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from google.protobuf.unknown_fields import UnknownFieldSet

from agilenn.v1 import inference_pb2

# Metadata key of an InferStream call naming the bundle once for the whole stream, so that its
# requests may leave bundle_hash empty (~71 bytes less per request; 2 ms per inference at 270 kbps).
BUNDLE_HASH_METADATA = "agilenn-bundle-hash"

# Metadata key of an InferStream call asking for its answers' logits in one of ServiceInfo.logits_codecs.
LOGITS_CODEC_METADATA = "agilenn-logits-codec"

RAW_U8 = "raw-u8"
RAW_F32LE = "raw-f32le"
Q8 = "q8-v1"  # a float32 scale, then int8 values: the compact answer (14 bytes for 10 logits instead of 40)
_RAW_DTYPES: dict[str, np.dtype[Any]] = {RAW_U8: np.dtype("u1"), RAW_F32LE: np.dtype("<f4")}
LOGITS_CODECS = (RAW_F32LE, Q8)


class TensorError(ValueError):
    """A Tensor message whose bytes do not match its shape or codec."""


def raw_tensor(array: np.ndarray, codec: str = RAW_F32LE) -> inference_pb2.Tensor:
    """A raw tensor: C-order values in the dtype the codec names."""
    dtype = _RAW_DTYPES[codec]
    values = np.ascontiguousarray(array, dtype=dtype)
    return inference_pb2.Tensor(data=values.tobytes(), shape=values.shape, codec=codec)


def quantize_q8(array: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """The q8-v1 scheme: scale = max|value| / 127 (1 for all zeros), values round(value / scale) as int8."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
    return scale, np.clip(np.rint(values / scale), -127, 127).astype(np.int8)


def q8_tensor(array: np.ndarray) -> inference_pb2.Tensor:
    """float32 values as a q8-v1 tensor: the float32 scale, then the int8 values."""
    scale, quantized = quantize_q8(array)
    return inference_pb2.Tensor(data=scale.astype("<f4").tobytes() + quantized.tobytes(), shape=quantized.shape,
                                codec=Q8)


def logits_tensor(array: np.ndarray, codec: str = RAW_F32LE) -> inference_pb2.Tensor:
    """Logits in one of LOGITS_CODECS."""
    return q8_tensor(array) if codec == Q8 else raw_tensor(array, RAW_F32LE)


def from_raw_tensor(tensor: inference_pb2.Tensor) -> np.ndarray:
    """The array a raw or q8-v1 tensor holds (q8-v1 as float32); raises TensorError naming what does not fit."""
    if tensor.codec == Q8:
        return _from_q8(tensor)
    dtype = _RAW_DTYPES.get(tensor.codec)
    if dtype is None:
        raise TensorError(f"tensor codec {tensor.codec!r} is not raw; raw codecs: {', '.join(_RAW_DTYPES)}, or {Q8}")
    shape = tuple(tensor.shape)
    expected = math.prod(int(d) for d in shape) * dtype.itemsize  # Python ints: a huge shape cannot wrap to 0
    if len(tensor.data) != expected:
        raise TensorError(f"{tensor.codec} tensor shaped {shape} needs {expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def _from_q8(tensor: inference_pb2.Tensor) -> np.ndarray:
    shape = tuple(tensor.shape)
    count = math.prod(int(d) for d in shape)
    if len(tensor.data) != 4 + count:
        raise TensorError(f"{Q8} tensor shaped {shape} needs {4 + count} bytes, got {len(tensor.data)}")
    scale = np.frombuffer(tensor.data[:4], "<f4")[0]
    if not np.isfinite(scale):
        raise TensorError(f"{Q8} tensor has a scale of {scale}")
    return (np.frombuffer(tensor.data, np.int8, offset=4).astype(np.float32) * scale).reshape(shape)


def unknown_field_numbers(message) -> list[int]:
    """Field numbers a message (or its Tensor parts) carries that this version does not know."""
    numbers = [field.field_number for field in UnknownFieldSet(message)]
    for name in ("features", "logits"):
        if name in message.DESCRIPTOR.fields_by_name and message.HasField(name):
            numbers += [field.field_number for field in UnknownFieldSet(getattr(message, name))]
    return numbers
