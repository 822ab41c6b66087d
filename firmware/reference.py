"""The golden model: the integer front's exact arithmetic in numpy, batched.

The generated C must give the same uint8 local logits, the same indices and the same payload bytes
for every input. Everything here is integer: uint8 activations, int64 accumulators (which never leave
the int32 range: the lowering checks the worst case), the fixed-point requantization of
`Requantization.apply`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agilenn.bundle import Bundle
from firmware.integer_front import ChannelSlice, Conv, Dense, InputMap, IntegerFront, Quantize


def _conv(op: Conv, x: np.ndarray) -> np.ndarray:
    """x: uint8 (N, C, H, W) -> uint8 (N, C_out, H_out, W_out); padding holds the input's zero point."""
    top, left, bottom, right = op.pads
    centred = x.astype(np.int64) - op.input_zero_point
    centred = np.pad(centred, ((0, 0), (0, 0), (top, bottom), (left, right)))  # zero = the zero point
    _c_out, _c_per_group, kh, kw = op.weights.shape
    sh, sw = op.stride
    _n, _channels, height, width = centred.shape
    h_out, w_out = (height - kh) // sh + 1, (width - kw) // sw + 1
    # Patches (N, C, kh, kw, H_out, W_out) by strided slicing; cheap for the small kernels of a front.
    patches = np.stack([np.stack([centred[:, :, i:i + sh * h_out:sh, j:j + sw * w_out:sw] for j in range(kw)], 2)
                        for i in range(kh)], 2)
    weights = op.weights.astype(np.int64)
    if op.depthwise:
        acc = np.einsum("nckjhw,ckj->nchw", patches, weights[:, 0])
    else:
        acc = np.einsum("nckjhw,ockj->nohw", patches, weights)
    acc += op.bias.astype(np.int64)[None, :, None, None]
    return op.requant.apply(acc, channel_axis=1)


def _dense(op: Dense, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.int64) - op.input_zero_point
    acc = flat @ op.weights.astype(np.int64).T + op.bias.astype(np.int64)
    return op.requant.apply(acc, channel_axis=1).reshape(len(x), -1, 1, 1)


def _quantize(op: Quantize, x: np.ndarray) -> np.ndarray:
    part = x[:, op.start:op.stop].astype(np.int64)
    return (part[..., None] >= op.thresholds.reshape(1, 1, 1, 1, -1)).sum(axis=-1).astype(np.uint8)


def run_integer_front(front: IntegerFront, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the front for raw uint8 images shaped (N, C, H, W)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != front.input_shape:
        raise ValueError(f"the integer front takes uint8 images shaped (N, {', '.join(map(str, front.input_shape))}), "
                         f"got {images.dtype} {images.shape}")
    values: dict[str, np.ndarray] = {"input": images}
    for op in front.ops:
        source = values[op.source]
        if isinstance(op, InputMap):
            values[op.target] = op.table[source]
        elif isinstance(op, Conv):
            values[op.target] = _conv(op, source)
        elif isinstance(op, Dense):
            values[op.target] = _dense(op, source)
        elif isinstance(op, ChannelSlice):
            values[op.target] = source[:, op.start:op.stop]
        elif isinstance(op, Quantize):
            values[op.target] = _quantize(op, source)
        else:  # pragma: no cover - the lowering makes no other op
            raise TypeError(f"unknown op {op!r}")
    return values


@dataclass(frozen=True)
class IntegerOutputs:
    """What the firmware computes for a batch: uint8 local logits, indices, payload bytes."""

    local_logits: np.ndarray  # uint8 (N, classes)
    indices: np.ndarray  # uint8 (N, C_remote, H, W)
    payloads: list[bytes]
    features: np.ndarray  # uint8 (N, C, H, W)


def run_reference(front: IntegerFront, bundle: Bundle, images: np.ndarray, batch_size: int = 500) -> IntegerOutputs:
    """The golden outputs of `front` for `images`, payloads coded by the bundle's own codec."""
    logits, indices, features = [], [], []
    for start in range(0, len(images), batch_size):
        values = run_integer_front(front, images[start:start + batch_size])
        logits.append(values[front.local_logits].reshape(-1, front.tensors[front.local_logits].shape[0]))
        indices.append(values[front.indices])
        features.append(values[front.features])
    all_indices = np.concatenate(indices)
    payloads = [bundle.codec.encode(sample) for sample in all_indices]
    return IntegerOutputs(np.concatenate(logits), all_indices, payloads, np.concatenate(features))
