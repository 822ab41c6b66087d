"""The integer front measured against the float front: accuracy, local-only accuracy, index agreement, bytes.

`agilenn evaluate --precision integer` reports these keys; the remote model runs on the integer front's
indices, and the mixing uses the bundle's alpha on the dequantized uint8 logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agilenn.bundle import Bundle
from agilenn.datasets import Split
from agilenn.predict import predict, run_batched
from firmware.integer_front import IntegerFront, lower_front
from firmware.reference import IntegerOutputs, run_reference


def integer_predictions(bundle: Bundle, front: IntegerFront, outputs: IntegerOutputs,
                        batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(local logits, mixed logits) in float for the integer front's outputs."""
    local = front.dequantize_logits(outputs.local_logits)
    (remote,) = run_batched(bundle.session("remote"), outputs.indices, batch_size)
    return local, bundle.mix(local, remote)


def evaluate_integer(bundle: Bundle, split: Split, batch_size: int = 500) -> dict[str, Any]:
    """Figures of the integer front on `split` beside the float front's."""
    front = lower_front(bundle)
    outputs = run_reference(front, bundle, split.images, batch_size)
    local, mixed = integer_predictions(bundle, front, outputs, batch_size)
    reference = predict(bundle, split.images, batch_size)
    labels = split.labels

    def accuracy(logits: np.ndarray) -> float:
        return float((logits.argmax(1) == labels).mean())

    equal = outputs.indices == reference.indices
    report = {
        "samples": len(labels),
        "accuracy_float": accuracy(reference.mixed_logits),
        "accuracy_integer": accuracy(mixed),
        "accuracy_local_only_float": accuracy(reference.local_logits),
        "accuracy_local_only_integer": accuracy(local),
        "integer_remote_indices_equal_share": float(equal.mean()),
        "integer_inputs_with_all_indices_equal_share": float(equal.reshape(len(labels), -1).all(axis=1).mean()),
        "payload_bytes_median_integer": float(np.median([len(p) for p in outputs.payloads])),
        "integer_macs": front.macs,
    }
    report["integer_accuracy_drop"] = report["accuracy_float"] - report["accuracy_integer"]
    report["integer_local_only_accuracy_drop"] = report["accuracy_local_only_float"] - report["accuracy_local_only_integer"]
    return report
