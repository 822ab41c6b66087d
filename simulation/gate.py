"""The confidence gate in the simulation: which share of inputs the device answers alone at a
threshold, what that does to accuracy and latency, and the threshold a latency budget allows.

Measured per input (`agilenn.predict.confidence_gate_curve`, stored in the AgileNN scheme of a
measured-schemes file); `python -m simulation.gate FILE...` adds the curve to files measured before it
existed, from the bundle each names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agilenn.measured import GatePoint, Scheme


def gate_point(scheme: Scheme, threshold: float | None) -> GatePoint:
    """The measured point at `threshold` (rounded to the curve's 0.01 grid); None: no gate, all offloaded."""
    if threshold is None:
        return GatePoint(threshold=float("inf"), local_share=0.0, accuracy=scheme.accuracy)
    if not scheme.confidence_gate:
        raise ValueError(f"{scheme.name}: the measured file holds no confidence-gate curve; add it with "
                         "`python -m simulation.gate FILE`")
    return min(scheme.confidence_gate, key=lambda point: abs(point.threshold - threshold))


def expected(scheme: Scheme, result: dict[str, Any], threshold: float | None,
             deadline_ms: float | None) -> dict[str, Any]:
    """Per scheme: the share answered on the device, the expected accuracy and latency with the gate at
    `threshold` and the device waiting at most `deadline_ms` for an answer. The model's latencies are
    fixed, so an offloaded input either always meets the deadline or never does (then it is answered
    locally once the deadline has passed: local accuracy)."""
    lat = result["latency_ms"]
    if scheme.kind == "local-only":
        return {"locally_answered_share": 1.0, "expected_accuracy": scheme.accuracy,
                "expected_latency_ms": lat["total_ms"], "answers_in_time": True}
    if scheme.kind != "agilenn":
        # no local predictor: nothing to gate, and nothing to answer with when the deadline passes
        return {"locally_answered_share": 0.0, "expected_accuracy": scheme.accuracy,
                "expected_latency_ms": lat["total_ms"], "answers_in_time": None}
    point = gate_point(scheme, threshold)
    round_trip = lat["total_ms"] - lat["device_ms"] - lat["encode_ms"]
    in_time = deadline_ms is None or round_trip <= deadline_ms
    offloaded_ms = lat["total_ms"] if in_time else lat["device_ms"] + lat["encode_ms"] + deadline_ms
    share = point.local_share
    accuracy = point.accuracy if in_time else scheme.accuracy_local_only
    return {"locally_answered_share": share, "expected_accuracy": accuracy,
            "expected_latency_ms": share * lat["device_ms"] + (1 - share) * offloaded_ms,
            "answers_in_time": in_time, "confidence_threshold": threshold}


def recommend_threshold(scheme: Scheme, result: dict[str, Any], max_latency_ms: float,
                        deadline_ms: float | None) -> dict[str, Any]:
    """The threshold with the best expected accuracy whose expected latency is within `max_latency_ms`
    (no gate is a candidate too); the fastest of equals."""
    candidates = [expected(scheme, result, None, deadline_ms)] + [
        expected(scheme, result, point.threshold, deadline_ms) for point in scheme.confidence_gate]
    within = [c for c in candidates if c["expected_latency_ms"] <= max_latency_ms]
    best = max(within, key=lambda c: (c["expected_accuracy"], -c["expected_latency_ms"])) if within else None
    fastest = min(candidates, key=lambda c: c["expected_latency_ms"])
    return {"max_latency_ms": max_latency_ms, "deadline_ms": deadline_ms, "recommended": best,
            "reason": (f"confidence threshold {best['confidence_threshold']}: {best['locally_answered_share']:.1%} "
                       f"answered on the device, expected accuracy {best['expected_accuracy']:.4f}, expected "
                       f"latency {best['expected_latency_ms']:.2f} ms" if best and best["confidence_threshold"]
                       is not None else
                       f"no gate (offload every input): expected accuracy {best['expected_accuracy']:.4f}, "
                       f"{best['expected_latency_ms']:.2f} ms" if best else
                       f"no threshold meets {max_latency_ms:g} ms: the fastest, answering every input on the "
                       f"device, takes {fastest['expected_latency_ms']:.2f} ms")}


def add_curve(path: Path) -> Path:
    """Measure the confidence-gate curve of the AgileNN scheme of the measured file at `path`, in place."""
    from agilenn.bundle import Bundle
    from agilenn.predict import confidence_gate_curve, evaluation_split, predict

    data = json.loads(path.read_text())
    scheme = next(s for s in data["schemes"] if s["kind"] == "agilenn")
    bundle = Bundle(scheme["bundle"])
    if bundle.bundle_hash != scheme.get("bundle_hash"):
        raise ValueError(f"{path}: {scheme['bundle']} is not the bundle this file measured; measure the file again")
    _, split = evaluation_split(bundle, data["dataset"], data["samples"])
    outputs = predict(bundle, split.images)
    scheme["confidence_gate"] = confidence_gate_curve(outputs.local_logits, outputs.mixed_logits, split.labels)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="add the confidence-gate curve to measured-schemes files")
    parser.add_argument("files", nargs="+", type=Path)
    for path in parser.parse_args(argv).files:
        print(add_curve(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
