"""Arrays in and out of `agilenn.v1.Tensor` messages (bytes + shape + codec id).

Needs numpy and the generated messages only, so both the device and the cloud import it.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.unknown_fields import UnknownFieldSet

from agilenn.v1 import inference_pb2

# Metadata key of an InferStream call naming the bundle once for the whole stream, so that its
# requests may leave bundle_hash empty (~71 bytes less per request; 2 ms per inference at 270 kbps).
BUNDLE_HASH_METADATA = "agilenn-bundle-hash"

RAW_U8 = "raw-u8"
RAW_F32LE = "raw-f32le"
_RAW_DTYPES = {RAW_U8: np.dtype("u1"), RAW_F32LE: np.dtype("<f4")}


class TensorError(ValueError):
    """A Tensor message whose bytes do not match its shape or codec."""


def raw_tensor(array: np.ndarray, codec: str = RAW_F32LE) -> inference_pb2.Tensor:
    """A raw tensor: C-order values in the dtype the codec names."""
    dtype = _RAW_DTYPES[codec]
    values = np.ascontiguousarray(array, dtype=dtype)
    return inference_pb2.Tensor(data=values.tobytes(), shape=values.shape, codec=codec)


def from_raw_tensor(tensor: inference_pb2.Tensor) -> np.ndarray:
    """The array a raw tensor holds; raises TensorError naming what does not fit."""
    dtype = _RAW_DTYPES.get(tensor.codec)
    if dtype is None:
        raise TensorError(f"tensor codec {tensor.codec!r} is not raw; raw codecs: {', '.join(_RAW_DTYPES)}")
    shape = tuple(tensor.shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != expected:
        raise TensorError(f"{tensor.codec} tensor shaped {shape} needs {expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def unknown_field_numbers(message) -> list[int]:
    """Field numbers a message (or its Tensor parts) carries that this version does not know."""
    numbers = [field.field_number for field in UnknownFieldSet(message)]
    for name in ("features", "logits"):
        if name in message.DESCRIPTOR.fields_by_name and message.HasField(name):
            numbers += [field.field_number for field in UnknownFieldSet(getattr(message, name))]
    return numbers
