"""Offline predictions of a bundle: the device model, the real codec and the remote model, without a
network. Export verifies and measures what it writes with these, and `agilenn evaluate` reports them.

Figures that need torch (skewness) are added by the caller: this module needs numpy and ONNX Runtime.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from agilenn.bundle import Bundle, BundleError
from agilenn.bundle_metrics import BundleMetrics
from agilenn.codec import BitPackCodec, ZlibCodec
from agilenn.datasets import Split, load_dataset


def run_batched(session, inputs: np.ndarray, batch_size: int = 500) -> list[np.ndarray]:
    """Run an ONNX Runtime session over `inputs` in batches; returns each output concatenated."""
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: inputs[s:s + batch_size]}) for s in range(0, len(inputs), batch_size)]
    return [np.concatenate(p) for p in zip(*parts)]


@dataclass(frozen=True)
class Predictions:
    """A bundle's outputs for a batch of inputs, computed offline with the real codec."""

    local_logits: np.ndarray
    remote_logits: np.ndarray
    mixed_logits: np.ndarray
    indices: np.ndarray
    payloads: list[bytes]


def predict(bundle: Bundle, images: np.ndarray, batch_size: int = 500, precision: str = "float32") -> Predictions:
    """Device model (the front of `precision`), codec round trip, remote model and mixing, in batches,
    without a network."""
    local_logits, indices, *_ = run_batched(bundle.session(bundle.device_role(precision)), bundle.prepare(images),
                                            batch_size)
    payloads = [bundle.codec.encode(sample) for sample in indices]
    decoded = np.stack([bundle.codec.decode(p) for p in payloads])
    if not np.array_equal(decoded, indices):
        raise AssertionError("codec round trip changed the indices")  # a bug, never a data problem
    (remote_logits,) = run_batched(bundle.session("remote"), decoded, batch_size)
    return Predictions(local_logits, remote_logits, bundle.mix(local_logits, remote_logits), indices, payloads)


GATE_THRESHOLDS = np.round(np.arange(0, 101) / 100, 2)


def confidence_gate_curve(local_logits: np.ndarray, mixed_logits: np.ndarray, labels: np.ndarray,
                          thresholds: np.ndarray = GATE_THRESHOLDS) -> list[dict[str, float]]:
    """Per threshold T: the share of inputs whose local top probability reaches T (answered on the device,
    with the local prediction) and the accuracy when the others are mixed."""
    shifted = np.exp(local_logits - local_logits.max(1, keepdims=True))
    confidence = (shifted / shifted.sum(1, keepdims=True)).max(1)
    local_right = local_logits.argmax(1) == labels
    mixed_right = mixed_logits.argmax(1) == labels
    curve = []
    for threshold in thresholds:
        local = confidence >= threshold
        curve.append({"threshold": float(threshold), "local_share": float(local.mean()),
                      "accuracy": float(np.where(local, local_right, mixed_right).mean())})
    return curve


LEVEL_USE_MIN_SHARE = 0.01  # a level that carries less than this share of the sent symbols is not in use


def level_shares(indices: np.ndarray, levels: int) -> np.ndarray:
    """The share of all symbols in `indices` that each of the quantizer's `levels` levels takes."""
    counts = np.bincount(np.asarray(indices, dtype=np.int64).ravel(), minlength=levels)[:levels]
    return counts / max(int(counts.sum()), 1)


def levels_used(indices: np.ndarray, levels: int, min_share: float = LEVEL_USE_MIN_SHARE) -> int:
    """How many levels carry at least `min_share` of the symbols: a quantizer whose centroids merged
    or sit where no feature falls declares more levels than it uses."""
    return int((level_shares(indices, levels) >= min_share).sum())


def symbol_entropy_bits(indices: np.ndarray, levels: int) -> float:
    """Empirical entropy of the symbols, bits per symbol (one distribution over all channels and places)."""
    shares = level_shares(indices, levels)
    shares = shares[shares > 0]
    return float(-(shares * np.log2(shares)).sum())


def evaluate_bundle(bundle: Bundle, split: Split, batch_size: int = 500) -> BundleMetrics:
    """Accuracy (mixed, local-only, remote-only, reference) and payload figures on `split`.

    The skewness figures are None: they need torch (`partitioner.analysis`)."""
    labels = split.labels
    out = predict(bundle, split.images, batch_size)
    local_logits, remote_logits, mixed, indices, payloads = (
        out.local_logits, out.remote_logits, out.mixed_logits, out.indices, out.payloads)

    sizes = np.array([len(p) for p in payloads])
    shape, levels = bundle.codec.shape, bundle.codec.levels
    bitpack = BitPackCodec(shape, levels).payload_bytes
    zlib_sizes = np.array([len(ZlibCodec(shape, levels).encode(sample)) for sample in indices])
    raw_bytes = int(np.prod(split.images.shape[1:]))  # uint8 sensor values
    raw_zlib = np.array([len(zlib.compress(image.tobytes(), 9)) for image in split.images])

    report: dict[str, Any] = {
        "bundle_hash": bundle.bundle_hash,
        "samples": len(labels),
        "accuracy": float((mixed.argmax(1) == labels).mean()),
        "accuracy_local_only": float((local_logits.argmax(1) == labels).mean()),
        "accuracy_remote_only": float((remote_logits.argmax(1) == labels).mean()),
        "accuracy_reference": None,
        "skewness_trapezoid": None,
        "skewness_ig32": None,
        "payload_bytes_median": float(np.median(sizes)),
        "payload_bytes_mean": float(sizes.mean()),
        "payload_bytes_p99": float(np.percentile(sizes, 99)),
        "payload_bytes_bitpack": int(bitpack),
        "payload_bytes_zlib_median": float(np.median(zlib_sizes)),
        "codec": bundle.codec.codec_id,
        "quantizer_levels": bundle.manifest.quantizer.levels,
        "quantizer_levels_used": levels_used(indices, bundle.manifest.quantizer.levels),
        "quantizer_centroids": list(bundle.manifest.quantizer.centroids),
        "entropy_bits_per_symbol": symbol_entropy_bits(indices, bundle.manifest.quantizer.levels),
        "raw_input_bytes": raw_bytes,
        "raw_input_zlib_bytes_median": float(np.median(raw_zlib)),
        "compression_rate": float(raw_bytes / np.median(sizes)),
        "device_macs": bundle.manifest.device_macs,
        "alpha_local": bundle.manifest.mixing.alpha_local,
        # the remote logits returned compactly (q8-v1: int8 with a scale), mixed as the device mixes them
        "accuracy_logits_q8": float((bundle.mix(local_logits, q8_round_trip(remote_logits)).argmax(1) == labels).mean()),
    }
    if bundle.has("reference"):
        (reference_logits,) = run_batched(bundle.session("reference"), bundle.prepare(split.images), batch_size)
        report["accuracy_reference"] = float((reference_logits.argmax(1) == labels).mean())
    if "int8" in bundle.precisions:
        int8 = predict(bundle, split.images, batch_size, precision="int8")
        report.update({
            "accuracy_int8": float((int8.mixed_logits.argmax(1) == labels).mean()),
            "accuracy_local_only_int8": float((int8.local_logits.argmax(1) == labels).mean()),
            "int8_remote_indices_equal_share": float((int8.indices == indices).mean()),
            "payload_bytes_median_int8": float(np.median([len(p) for p in int8.payloads])),
        })
    return BundleMetrics.model_validate(report)


def q8_round_trip(logits: np.ndarray) -> np.ndarray:
    """Logits (N, classes) as a device receives them in q8-v1: each row at max|row| / 127 steps."""
    from agilenn.v1.tensors import quantize_q8

    rows = [quantize_q8(row) for row in logits]  # the arithmetic of q8-v1, without building messages
    return np.stack([quantized.astype(np.float32) * scale for scale, quantized in rows])


def int8_features(bundle: Bundle, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The extractor features the int8 front computes (its third output), for importance analysis."""
    *_, features = run_batched(bundle.session(bundle.device_role("int8")), bundle.prepare(images), batch_size)
    return features


def evaluation_split(bundle: Bundle, dataset: str | None = None, limit: int | None = None) -> tuple[str, Split]:
    """The test split a bundle is measured on: `dataset`, or the one its config names."""
    name = dataset or bundle.manifest.config.get("dataset")
    if not name:
        raise BundleError(f"{bundle.folder} names no dataset; pass --dataset")
    return name, load_dataset(name).test.head(limit)
