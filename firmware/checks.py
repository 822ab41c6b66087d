"""`agilenn firmware check`: the C front against the numpy integer reference, with its sizes and costs.

Counts of identical payloads and local logits, accuracies of the C front's outputs (mixed with the
remote model, and local only) beside the float front's, and on the Cortex-M7: flash and SRAM from the
ELF and a painted stack, instructions per inference and per layer, MACs per instruction, and the
milliseconds those instructions take over a stated range of cycles per instruction.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from agilenn.bundle import Bundle
from agilenn.predict import evaluation_split, predict
from firmware.budgets import CLOCK_HZ, CPI_RANGE, CPI_SOURCE, elf_budget
from firmware.build import build
from firmware.codegen import generate
from firmware.evaluation import integer_predictions
from firmware.integer_front import lower_front
from firmware.reference import IntegerOutputs, run_reference
from firmware.run import run_build
from firmware.targets import target_named


def check(bundle: Bundle, target: str, limit: int | None = None, dataset: str | None = None) -> dict[str, Any]:
    dataset_name, split = evaluation_split(bundle, dataset, limit)
    front = lower_front(bundle)
    reference = run_reference(front, bundle, split.images)
    with tempfile.TemporaryDirectory(prefix="agilenn-firmware-") as scratch:
        record = generate(bundle, Path(scratch) / "src", target_named(target))
        built = build(target, Path(scratch) / "src", Path(scratch))
        result = run_build(built, split.images, record["classes"], len(record["layers"]))
        budget = elf_budget(built.binary, result.stack_peak_bytes) if target == "cortex-m7" else None
    records = result.records
    c_outputs = IntegerOutputs(np.stack([r.local_logits for r in records]), reference.indices,
                               [r.payload for r in records], reference.features)
    local, mixed = integer_predictions(bundle, front, c_outputs)
    floating = predict(bundle, split.images)
    labels = split.labels

    def accuracy(logits: np.ndarray) -> float:
        return float((logits.argmax(1) == labels).mean())

    report: dict[str, Any] = {
        "bundle": str(bundle.folder),
        "bundle_hash": bundle.bundle_hash,
        "dataset": dataset_name,
        "target": target,
        "samples": len(labels),
        "payloads_identical": sum(r.payload == p for r, p in zip(records, reference.payloads)),
        "local_logits_identical": int(sum(np.array_equal(r.local_logits, l)
                                          for r, l in zip(records, reference.local_logits))),
        "accuracy_c": accuracy(mixed),
        "accuracy_local_only_c": accuracy(local),
        "accuracy_float": accuracy(floating.mixed_logits),
        "accuracy_local_only_float": accuracy(floating.local_logits),
        "payload_bytes_median": float(np.median([len(r.payload) for r in records])),
        "macs": record["macs"],
        "constant_bytes": record["constant_bytes"],
        "arena_bytes": record["arena_bytes"],
        "payload_capacity_bytes": record["payload_capacity_bytes"],
    }
    if budget is not None:
        report.update(budget)
        report.update(_instructions(record, records))
    return report


def _instructions(record: dict[str, Any], records) -> dict[str, Any]:
    per_input = np.array([r.instructions for r in records], dtype=np.int64)
    per_layer = np.array([r.layer_instructions for r in records], dtype=np.int64).mean(axis=0)
    mean = float(per_input.mean())
    low_cpi, high_cpi = CPI_RANGE
    return {
        "instructions_per_inference_mean": mean,
        "instructions_per_inference_min": int(per_input.min()),
        "instructions_per_inference_max": int(per_input.max()),
        "macs_per_instruction": record["macs"] / mean,
        "layers": [{**layer, "instructions_mean": float(count),
                    "macs_per_instruction": layer["macs"] / float(count) if layer["macs"] else None}
                   for layer, count in zip(record["layers"], per_layer)],
        "clock_hz": CLOCK_HZ,
        "cycles_per_instruction_range": list(CPI_RANGE),
        "cycles_per_instruction_source": CPI_SOURCE,
        "device_ms_range": [mean * low_cpi / CLOCK_HZ * 1e3, mean * high_cpi / CLOCK_HZ * 1e3],
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['bundle']} on {report['target']}, {report['samples']} inputs of {report['dataset']}",
             (f"  identical to the integer reference: payloads {report['payloads_identical']}/{report['samples']}, "
              f"local logits {report['local_logits_identical']}/{report['samples']}"),
             (f"  accuracy: mixed {report['accuracy_c']:.4f} (float front {report['accuracy_float']:.4f}), "
              f"local only {report['accuracy_local_only_c']:.4f} (float {report['accuracy_local_only_float']:.4f})"),
             f"  payload median {report['payload_bytes_median']:.0f} B, {report['macs']} MACs"]
    if "flash_bytes" in report:
        lines += [
            (f"  flash {report['flash_bytes']} B of {report['flash_budget_bytes']}, SRAM {report['sram_bytes']} B "
             f"(static {report['sram_static_bytes']} + stack peak {report['stack_peak_bytes']}) of "
             f"{report['sram_budget_bytes']}"),
            (f"  instructions per inference {report['instructions_per_inference_mean']:.0f} "
             f"({report['macs_per_instruction']:.3f} MACs per instruction); at {report['clock_hz'] / 1e6:.0f} MHz and "
             f"{report['cycles_per_instruction_range'][0]}-{report['cycles_per_instruction_range'][1]} cycles per "
             f"instruction: {report['device_ms_range'][0]:.2f}-{report['device_ms_range'][1]:.2f} ms"),
        ]
        for layer in report["layers"]:
            ratio = f", {layer['macs_per_instruction']:.3f} MACs/instr" if layer["macs_per_instruction"] else ""
            lines.append(f"    {layer['name']:<24} {layer['kind']:<16} {layer['instructions_mean']:>10.0f} instr{ratio}")
    return "\n".join(lines)
