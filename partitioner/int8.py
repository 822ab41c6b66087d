"""The int8 device front: the device half statically quantized with ONNX Runtime's tools.

The float front is exported with one more output, the extractor's features, and quantized in
QDQ form: per-channel int8 weights, uint8 activations, ranges calibrated (min-max) on training
images. The nearest-centroid tail stays in float on the dequantized features, so the indices a
device sends are those of its int8 features, and it costs a handful of scalar ops per value.
The extra `features` output lets evaluation measure importance on what the int8 front computes;
a device asks only for the first two.

Export keeps the int8 front unless its mixed or local-only accuracy on the test split is lower than
the float front's by more than `int8_max_accuracy_drop` with confidence `int8_confidence`
(`Int8VerificationError`). The two fronts see the same samples, so the test is on the paired
difference: only the samples one front gets right and the other wrong count, and a test split of a few
hundred samples, where one sample is 0.3 points, is not refused for the noise of two.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from agilenn.bundle import mix_logits
from agilenn.datasets import Split
from agilenn.onnx_sessions import create_session
from agilenn.predict import run_batched
from partitioner.bundle_writer import export_onnx

log = logging.getLogger(__name__)

FEATURES_OUTPUT = "features"
CALIBRATION_BATCH = 100


class Int8VerificationError(RuntimeError):
    """The int8 front loses more accuracy than allowed; no bundle was written."""


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over a fixed set of images."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._batches = iter([{input_name: images[s:s + CALIBRATION_BATCH]}
                              for s in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # the min-max calibrator reads once
        pass


def _nearest_centroid_tail(model) -> list[str]:
    """Names of the nodes from the remote channel slice to the indices: they stay float."""
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tail, stack = [], [n for n in model.graph.node if n.op_type == "ArgMin"]
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        tail.append(node.name)
        stack.extend(producers[name] for name in node.input
                     if name in producers and producers[name].op_type not in ("Slice", "Split", "Gather"))
        stack.extend(n for out in node.output for n in consumers.get(out, []) if n.op_type == "Cast")
    return tail


def quantize_device_front(front: torch.nn.Module, input_shape: tuple[int, int, int], calibration: np.ndarray,
                          out: Path) -> None:
    """Write the int8 version of `front` (a DeviceModule with_features) to `out`, calibrated on
    `calibration` (raw training images)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        float_path, prepared = Path(scratch) / "front.onnx", Path(scratch) / "front.pre.onnx"
        export_onnx(front, torch.zeros(2, *input_shape), float_path, "image",
                    ["local_logits", "remote_indices", FEATURES_OUTPUT])
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        tail = _nearest_centroid_tail(onnx.load(str(prepared)))
        quantize_static(str(prepared), str(out), _Calibration("image", calibration.astype(np.float32)),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, nodes_to_exclude=tail)


@dataclass(frozen=True)
class PairedDrop:
    """How much accuracy one front loses against another on the same samples."""
    samples: int
    only_float_right: int
    only_int8_right: int
    drop: float  # float accuracy - int8 accuracy
    lower_bound: float  # one-sided lower confidence bound of the drop

    def worse_than(self, max_drop: float) -> bool:
        """The drop exceeds `max_drop` with the bound's confidence."""
        return self.lower_bound > max_drop


def paired_drop(float_right: np.ndarray, int8_right: np.ndarray, confidence: float) -> PairedDrop:
    """The accuracy drop from `float_right` to `int8_right` (per-sample correctness on the same samples)
    and its one-sided lower bound at `confidence`, from the normal approximation of the paired
    difference (each sample contributes +1, 0 or -1). With no discordant sample the bound is the drop."""
    n = len(float_right)
    b = int(np.sum(float_right & ~int8_right))
    c = int(np.sum(~float_right & int8_right))
    drop = (b - c) / n
    variance = max((b + c) / n - drop * drop, 0.0) / n
    z = NormalDist().inv_cdf(confidence)
    return PairedDrop(n, b, c, drop, drop - z * math.sqrt(variance))


def verify_int8(folder: Path, float_name: str, int8_name: str, remote_name: str, alpha: float, test: Split,
                max_drop: float, confidence: float = 0.95) -> dict[str, float]:
    """Accuracy of the int8 front against the float one on `test`; raises Int8VerificationError when
    mixed or local-only accuracy is lower by more than `max_drop` with `confidence` (see the module)."""
    images = test.images.astype(np.float32)
    labels = test.labels
    float_local, float_indices = run_batched(create_session(folder / float_name), images)
    int8_local, int8_indices, _ = run_batched(create_session(folder / int8_name), images)
    remote = create_session(folder / remote_name)
    (float_remote,) = run_batched(remote, float_indices)
    (int8_remote,) = run_batched(remote, int8_indices)

    def right(logits: np.ndarray) -> np.ndarray:
        return logits.argmax(1) == labels

    pairs = {"accuracy": (right(mix_logits(float_local, float_remote, alpha)),
                          right(mix_logits(int8_local, int8_remote, alpha))),
             "accuracy_local_only": (right(float_local), right(int8_local))}
    report: dict[str, float] = {"samples": len(labels)}
    drops = {}
    for key, (float_right, int8_right) in pairs.items():
        report[f"{key}_float"], report[f"{key}_int8"] = float(float_right.mean()), float(int8_right.mean())
        drops[key] = paired_drop(float_right, int8_right, confidence)
        report[f"{key}_drop_lower_bound"] = drops[key].lower_bound
    report.update(remote_indices_equal_share=float((float_indices == int8_indices).mean()),
                  max_accuracy_drop=max_drop, confidence=confidence)
    problems = [f"{what} accuracy {report[f'{key}_int8']:.4f} against {report[f'{key}_float']:.4f} in float "
                f"(drop {drops[key].drop:.4f}, at least {drops[key].lower_bound:.4f}: {drops[key].only_float_right} "
                f"samples right only in float, {drops[key].only_int8_right} only in int8)"
                for what, key in (("mixed", "accuracy"), ("local-only", "accuracy_local_only"))
                if drops[key].worse_than(max_drop)]
    if problems:
        raise Int8VerificationError(
            f"the int8 device front loses more than {max_drop:.3f} with {confidence:.0%} confidence on the "
            f"{len(labels)} test samples both fronts ran: " + "; ".join(problems)
            + " (more calibration samples, or export.int8: false to ship float only)")
    return report
