"""`agilenn bench device`: time per sample of each device front of a bundle (float32, int8), in one run.

The fronts run one sample at a time on one thread, as a device runs them, on the same inputs, in
alternating blocks so that both see the same machine state; the report gives each front's p50 and
p90 and the int8 front's p50 over float32's. This CPU is not the microcontroller: the ratio says
what quantization does to ONNX Runtime here, the simulation models the device.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agilenn.bundle import Bundle
from agilenn.datasets import sample_images

OUTPUTS = ["local_logits", "remote_indices"]  # what the device agent asks for
BLOCK = 100


def bench_device(bundle_dir: str, samples: int = 2000, warmup: int = 200) -> dict[str, Any]:
    bundle = Bundle(bundle_dir)
    images = bundle.prepare(sample_images(bundle.manifest.config.get("dataset"), bundle.manifest.input.shape,
                                          max(samples, warmup)))
    sessions = {p: bundle.session(bundle.device_role(p), threads=1) for p in bundle.precisions}
    times: dict[str, list[float]] = {p: [] for p in sessions}
    for session in sessions.values():
        for i in range(warmup):
            session.run(OUTPUTS, {"image": images[i % len(images)][None]})
    for start in range(0, samples, BLOCK):
        for precision, session in sessions.items():
            for i in range(start, min(start + BLOCK, samples)):
                x = images[i % len(images)][None]
                began = time.perf_counter()
                session.run(OUTPUTS, {"image": x})
                times[precision].append((time.perf_counter() - began) * 1000.0)
    report: dict[str, Any] = {"bundle": bundle_dir, "bundle_hash": bundle.bundle_hash, "samples": samples}
    for precision, measured in times.items():
        front = bundle.manifest.device_fronts.get(precision)
        report[f"{precision}_p50_ms"] = float(np.percentile(measured, 50))
        report[f"{precision}_p90_ms"] = float(np.percentile(measured, 90))
        if front is not None:
            report[f"{precision}_file_bytes"] = front.size_bytes
            report[f"{precision}_weight_bytes"] = front.weight_bytes
    if "int8" in times:
        report["int8_vs_float32_p50"] = report["int8_p50_ms"] / report["float32_p50_ms"]
    return report
